"""The load test behind ``nmt-serve-bench``: real ``nmt-serve`` processes, light HTTP clients,
the offline ceiling they are measured against, and the table.

1. **The ceiling** (:func:`offline`). All the sentences translated offline at once in this
   process by :meth:`Translator.translate`, as ``nmt-translate`` does (length-sorted batches
   within ``batch_sentences`` and, on the CPU, ``search.batch_tokens``: the limits the server's
   batcher cuts its chunks by). Its texts are the reference for the server's answers. Then the
   first ``SINGLE`` sentences decoded one at a time: the ceiling over that rate bounds what
   batching can gain (``x off``).
2. **The servers** (:func:`compare_batching`), real ``python -m nmt.serve`` processes on
   127.0.0.1 (:class:`ServerProcess`, a free port each), one with
   ``serve.max_batch_sentences=batch_sentences`` (batching on) and one with ``=1`` (off). For
   each client count C, C clients (:class:`RawConnection` each, or one shared
   ``httpx.AsyncClient`` with ``client=httpx``) each send one sentence per request, the next as
   soon as the last is answered, until ``requests`` are answered or ``max_seconds`` have passed
   (:func:`drive`). Throughput is answered sentences over the time from the first request to the
   last answer; latency is per request, as the client sees it; the mean batch size (sentences
   per decoder call) and the server's CPU seconds come from its ``/v1/stats`` before and after
   the run, the clients' from this process (:func:`run_clients`).
3. The servers get SIGTERM and must exit 0.

Traffic goes to 127.0.0.1 only, and every run is bounded by ``requests`` and ``max_seconds``.
The servers are started as processes (``python -m nmt.serve``), never imported from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nmt.core.errors import NMTError
from nmt.core.paths import REPO_ROOT


class ServerProcess:
    """``python -m nmt.serve host=127.0.0.1 port=0 ARGS…``; its output read by a thread, ``url``
    once it listens. ``stop()`` sends SIGTERM and returns the exit status."""

    def __init__(self, *args: str):
        env = dict(os.environ)
        if REPO_ROOT is not None:  # a checkout: the server runs this code, installed or not
            paths = (str(REPO_ROOT), env.get("PYTHONPATH"))
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env.pop("HYDRA_FULL_ERROR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nmt.serve", "host=127.0.0.1", "port=0", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.listening = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "nmt-serve: listening on " in line:
                self.url = line.split("listening on ", 1)[1].split()[0]
                self.listening.set()

    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float) -> None:
        """Until ``/ready`` answers 200; NMTError with the server's output if it exits or
        ``timeout`` seconds pass first."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.listening.is_set():
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                        return
            time.sleep(0.1)
        self.kill()
        raise NMTError(f"the server did not become ready in {timeout:g} s:\n{self.output()}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM; the exit status once it has drained (killed after ``timeout`` seconds)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One client count against one server."""

    clients: int
    batching: str  # "on" | "off"
    answered: int
    errors: int
    seconds: float
    sentences_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    busy: float  # the share of the run the server's decoding thread was decoding
    server_cpu: float  # the server process's CPU seconds per second of the run (cores used)
    decode_cpu: float  # of which its decoding thread's
    client_cpu: float  # the clients' (this process's) CPU seconds per second of the run
    mismatches: int  # answers whose text differs from the offline translation
    first_error: str | None  # the first failed request's status and body, or exception


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``p``% of them at or below."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: the benchmark's light client.

    The clients share the machine's cores with the server they measure, so their own cost
    counts: 64 concurrent clients posting to a FastAPI app with this schema and no model took
    0.2 ms of CPU a request with this, 3.5 ms with one ``httpx.AsyncClient`` per client and
    6.4 ms with one shared ``httpx.AsyncClient`` pool of 64 connections (2 shared cores), which
    at 80 requests/s is a quarter of a core taken from the server. ``client=httpx`` uses the
    latter, as the benchmark first did.
    """

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON ``body``; the status and the response body. Raises OSError or EOFError
        on a broken connection (the next post opens a new one), ValueError on a bad answer."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            writer.write(head.encode("ascii") + body)
            status_line, *lines = (
                (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            )
            headers = dict(
                (k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines if h)
            )
            if "content-length" not in headers:
                raise ValueError(f"an answer without Content-Length: {status_line}")
            data = await reader.readexactly(int(headers["content-length"]))
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split()[1]), data

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def drive(
    url: str, sentences: Sequence[str], clients: int, max_seconds: float, client: str = "raw"
) -> tuple[list[float], list[str | None], float, list[str]]:
    """``clients`` concurrent clients send ``sentences`` one per request, in order, until all
    are answered or ``max_seconds`` pass; each client is one keep-alive connection
    (:class:`RawConnection`, or ``client="httpx"``: one shared ``httpx.AsyncClient``). Returns
    each answered request's latency (s), each sentence's answer text (None if unanswered), the
    seconds from the first request to the last answer, and what each failed request got."""
    import httpx

    latencies: list[float] = []
    texts: list[str | None] = [None] * len(sentences)
    errors: list[str] = []
    next_index = 0
    start = time.perf_counter()
    deadline = start + max_seconds
    last = start

    async def client_loop(post: Callable[[bytes], Awaitable[tuple[int, bytes]]]) -> None:
        nonlocal next_index, last
        while next_index < len(sentences) and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            sent = time.perf_counter()
            try:
                request = post(json.dumps({"text": sentences[i]}).encode())
                status, body = await asyncio.wait_for(request, max_seconds + 120)
            except (OSError, EOFError, ValueError, httpx.HTTPError) as err:
                errors.append(f"{type(err).__name__}: {err}")
                continue
            if status != 200:
                errors.append(f"{status} {body[:300].decode(errors='replace')}")
                continue
            last = time.perf_counter()
            latencies.append(last - sent)
            texts[i] = json.loads(body)["translations"][0]["text"]

    if client == "raw":
        connections = [RawConnection(url) for _ in range(clients)]
        try:
            await asyncio.gather(
                *(client_loop(functools.partial(c.post, "/v1/translate")) for c in connections)
            )
        finally:
            for c in connections:
                c.close()
        return latencies, texts, last - start, errors

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(max_seconds + 120)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as pool:

        async def post(body: bytes) -> tuple[int, bytes]:
            headers = {"Content-Type": "application/json"}
            response = await pool.post("/v1/translate", content=body, headers=headers)
            return response.status_code, response.content

        await asyncio.gather(*(client_loop(post) for _ in range(clients)))
    return latencies, texts, last - start, errors


def server_stats(url: str) -> dict:
    import httpx

    return httpx.get(url + "/v1/stats", timeout=30).json()


def run_clients(
    server: ServerProcess,
    batching: str,
    clients: int,
    sentences: Sequence[str],
    reference: Sequence[str],
    max_seconds: float,
    client: str = "raw",
) -> RunResult:
    before = server_stats(server.url)
    client_start = time.process_time()
    latencies, texts, seconds, errors = asyncio.run(
        drive(server.url, sentences, clients, max_seconds, client)
    )
    client_s = time.process_time() - client_start
    after = server_stats(server.url)

    def per_second(key: str) -> float:
        return (after[key] - before[key]) / seconds if seconds > 0 else 0.0

    batches = after["batches"] - before["batches"]
    batch_sentences = after["batch_sentences"] - before["batch_sentences"]
    answered = len(latencies)
    mismatches = sum(t is not None and t != r for t, r in zip(texts, reference, strict=True))
    return RunResult(
        clients=clients,
        batching=batching,
        answered=answered,
        errors=len(errors),
        seconds=seconds,
        sentences_per_s=answered / seconds if seconds > 0 else 0.0,
        p50_ms=1000 * percentile(latencies, 50),
        p95_ms=1000 * percentile(latencies, 95),
        p99_ms=1000 * percentile(latencies, 99),
        mean_batch=batch_sentences / batches if batches else 0.0,
        busy=per_second("decode_seconds"),
        server_cpu=per_second("process_cpu_seconds"),
        decode_cpu=per_second("decode_cpu_seconds"),
        client_cpu=client_s / seconds if seconds > 0 else 0.0,
        mismatches=mismatches,
        first_error=errors[0] if errors else None,
    )


# --------------------------------------------------------------------------------------------
# Inputs and the ceiling
# --------------------------------------------------------------------------------------------


def read_sentences(path: Path, count: int, seed: int) -> list[str]:
    """``count`` non-empty English sentences drawn (without replacement while they last) from a
    ``.en`` file (one per line) or a TSV file (the first column), with a fixed seed."""
    from nmt.data.corpus import read_text_lines

    lines = read_text_lines(path, "input")
    if path.suffix == ".tsv" or path.name.endswith(".tsv.gz"):
        lines = [line.split("\t", 1)[0] for line in lines]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise NMTError(f"{path}: no sentences to send")
    rng = random.Random(seed)
    picked: list[str] = []
    while len(picked) < count:
        picked += rng.sample(lines, min(len(lines), count - len(picked)))
    return picked


def default_input(ckpt: str) -> Path:
    """The checkpoint's prepared test split, ``{data.out_dir}/test.en``."""
    from nmt.models.checkpoint import load_checkpoint

    data = load_checkpoint(ckpt, map_location="cpu")["config"].get("data") or {}
    path = Path(data.get("out_dir", "data/enko")) / "test.en"
    # out_dir is relative to where training ran: here, or the checkout
    if not path.is_absolute() and not path.is_file() and REPO_ROOT is not None:
        path = REPO_ROOT / path
    if not path.is_file():
        raise NMTError(
            f"input: the checkpoint's test split {path} is not there; give input=FILE "
            "(a .en file or a .tsv whose first column is English)"
        )
    return path


@dataclass
class Offline:
    """Offline translation of the same sentences in this process: the ceiling, and the bound
    that decoding one sentence at a time puts on batching off."""

    ceiling: float  # Translator.translate (nmt-translate) of all the sentences: sentences/s
    per_cpu_s: float  # the same per CPU second of this process
    single_per_s: float  # the first SINGLE sentences, each decoded alone
    single_per_cpu_s: float  # the same per CPU second
    texts: list[str]
    settings: dict
    retime: Callable[[], float] = field(repr=False)  # the ceiling timed again: sentences/s now


SINGLE = 64  # sentences decoded one at a time offline (the batching-off bound)


def _timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """``run()``, its wall seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def offline(
    ckpt: str,
    device: str,
    search: dict,
    batch_sentences: int,
    sentences: Sequence[str],
    markup: bool = False,
) -> Offline:
    """The ceiling, and the first ``SINGLE`` decoded one by one (see :class:`Offline`), with
    inline markup protected when ``markup`` (as the servers are told)."""
    from nmt.inference.translator import Translator

    # batch_sentences is the offline batch size, over a search group's own (search=greedy)
    settings = {**search, "batch_size": batch_sentences}
    translator = Translator.from_checkpoint(ckpt, device, **settings).with_markup(markup)
    translator.translate(sentences[:8])  # warm-up, as the server does
    texts, seconds, cpu = _timed(lambda: translator.translate_text(sentences))
    single = sentences[:SINGLE]
    alone, single_s, single_cpu = _timed(
        lambda: [translator.translate_text([s])[0] for s in single]
    )
    if alone != texts[: len(single)]:
        raise NMTError("offline: sentences decoded alone gave other texts than in batches")
    n = len(sentences)

    def retime() -> float:
        """All the sentences translated again (their texts checked again): sentences/s."""
        again, seconds, _ = _timed(lambda: translator.translate_text(sentences))
        if again != texts:
            raise NMTError("offline: translating again gave other texts")
        return n / seconds

    return Offline(
        ceiling=n / seconds,
        per_cpu_s=n / cpu,
        single_per_s=len(single) / single_s,
        single_per_cpu_s=len(single) / single_cpu,
        texts=texts,
        settings=asdict(translator.settings),
        retime=retime,
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def format_table(runs: Sequence[RunResult], ceilings: dict[int, float]) -> str:
    """One row per run; ``% ceil`` against the ceiling measured around that client count's
    runs (``ceilings[clients]``)."""
    off = {r.clients: r.sentences_per_s for r in runs if r.batching == "off"}
    header = (
        f"{'clients':>7} {'batching':>8} {'sent/s':>8} {'x off':>6} {'% ceil':>7} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'busy':>5} "
        f"{'srv cpu':>7} {'dec cpu':>7} {'cli cpu':>7} {'sent/cpu':>8} {'answered':>8} "
        f"{'errors':>6} {'differ':>6}"
    )
    rows = [header]
    for r in runs:
        speedup = r.sentences_per_s / off[r.clients] if off.get(r.clients) else math.nan
        per_cpu = r.sentences_per_s / r.server_cpu if r.server_cpu > 0 else math.nan
        rows.append(
            f"{r.clients:>7} {r.batching:>8} {r.sentences_per_s:>8.2f} {speedup:>6.2f} "
            f"{100 * r.sentences_per_s / ceilings[r.clients]:>6.1f}% {r.p50_ms:>8.0f} "
            f"{r.p95_ms:>8.0f} {r.p99_ms:>8.0f} {r.mean_batch:>6.1f} {100 * r.busy:>4.0f}% "
            f"{r.server_cpu:>7.2f} {r.decode_cpu:>7.2f} {r.client_cpu:>7.2f} {per_cpu:>8.1f} "
            f"{r.answered:>8} {r.errors:>6} {r.mismatches:>6}"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# The servers under load, batching on and off
# --------------------------------------------------------------------------------------------


def server_args(
    ckpt: str,
    device: str,
    max_wait_ms: float,
    search: dict[str, Any],
    threads: int | None,
    extra: Sequence[str],
) -> list[str]:
    """The ``nmt-serve`` overrides both servers share: the checkpoint, device and search the
    offline run used, limits no load run reaches, then ``extra`` (``server_args=[…]``)."""
    return [
        f"ckpt={ckpt}",
        f"device={device}",
        f"serve.max_wait_ms={max_wait_ms}",
        "serve.timeout_s=3600",
        "serve.max_queue_sentences=1000000",
        "serve.max_sentence_tokens=100000",  # the offline run translates every sentence too
        *(f"search.{k}={v}" for k, v in search.items()),
        *([f"serve.threads={threads}"] if threads else []),
        *extra,
    ]


@dataclass
class LoadResults:
    """What :func:`compare_batching` measured."""

    runs: list[RunResult]  # in the order they ran: per client count, batching on then off
    timings: list[float]  # the ceiling (sentences/s) before each client count and after the last
    exits: dict[str, int]  # each server's exit status after SIGTERM ("on", "off")


def compare_batching(
    common: Sequence[str],
    batch_sentences: int,
    clients: Sequence[int],
    sentences: Sequence[str],
    base: Offline,
    max_seconds: float,
    client: str,
    startup_timeout_s: float,
    say: Callable[[str], None],
) -> LoadResults:
    """Start a server with batching on (``serve.max_batch_sentences=batch_sentences``) and one
    with it off (``=1``), both with ``common``; run each client count against one right after
    the other; stop both. ``say`` gets the progress lines (the server's address, each run).
    NMTError with its output when a server does not get ready or does not exit 0.

    Both servers run side by side (an idle one costs no CPU), and each client count is run
    against one right after the other, so that a change in the machine's load between runs
    (other jobs on shared cores) skews the on/off comparison as little as possible.

    The ceiling is timed again before each client count and after the last (the servers idle
    meanwhile): on shared or virtual cores the machine's speed drifts by tens of percent within
    minutes (the ceiling ranged 89-122 sentences/s in four runs of this benchmark on an
    otherwise idle 2-core VM), so each count's '% ceil' is against the mean of the two timings
    around its runs, not one taken minutes before."""
    servers = {
        "on": ServerProcess(*common, f"serve.max_batch_sentences={batch_sentences}"),
        "off": ServerProcess(*common, "serve.max_batch_sentences=1"),
    }
    runs: list[RunResult] = []
    exits: dict[str, int] = {}
    timings: list[float] = []
    try:
        for server in servers.values():
            server.wait_ready(startup_timeout_s)
        listening = [line for line in servers["on"].lines if "listening on" in line]
        say(f"server: {listening[0].strip() if listening else '?'}")
        for c in clients:
            timings.append(base.retime())
            for batching, server in servers.items():
                run = run_clients(server, batching, c, sentences, base.texts, max_seconds, client)
                runs.append(run)
                say(
                    f"  batching {batching}, {c} clients: {run.sentences_per_s:.2f} sent/s, "
                    f"p50 {run.p50_ms:.0f} ms, mean batch {run.mean_batch:.1f}, "
                    f"decoding {100 * run.busy:.0f}% of the time, load average "
                    f"{os.getloadavg()[0]:.2f}"
                )
                if run.first_error:
                    say(f"    {run.errors} failed; the first: {run.first_error}")
        timings.append(base.retime())
    finally:
        for batching, server in servers.items():
            exits[batching] = server.stop()
    for batching, server in servers.items():
        if exits[batching] != 0:
            raise NMTError(f"the server exited with status {exits[batching]}:\n{server.output()}")
    return LoadResults(runs, timings, exits)
