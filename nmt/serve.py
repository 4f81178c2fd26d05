"""``python -m nmt.serve ckpt=… [host=127.0.0.1] [port=8000] [serve.key=value …]``: an HTTP API.

FastAPI on uvicorn, on top of :class:`~nmt.inference.translator.Translator` (the one decoding path)::

    POST /v1/translate  {"text": "…" | ["…", …], "beam_size"?, "n_best"?, "return_attention"?,
                         "return_tokens"?}
                        → {"translations": [{"text", "score", "confidence", "tokens"?,
                           "source_tokens"?, "attention"?, "nbest"?}, …], "model", "timing_ms"}
    GET  /health        the process is alive (no API key needed)
    GET  /ready         the model is loaded and warmed (503 until then, and while draining)
    GET  /v1/model      architecture, vocabularies, checkpoint (step, scores, training precision),
                        decoding precision and CPU
    GET  /v1/stats      requests, batches, sentences decoded so far (mean batch size)
    GET  /docs          OpenAPI docs

**Dynamic batching.** Each request becomes a *job* in a queue. One batcher task groups the
oldest job with every later job of the same search settings, oldest first, up to
``serve.max_batch_sentences`` sentences or ``serve.max_batch_tokens`` source subwords, sorts
their undecoded sentences longest first, cuts them into chunks within the search's batch limits
(``search.batch_size``, and on the CPU ``search.batch_tokens`` over the hypotheses:
:func:`nmt.inference.search.search_batches`, the one batching rule, shared with ``nmt-translate``), and
gives the one decoding thread the chunk that holds the oldest job's first sentence: one
:meth:`Translator.translate` call. It goes at once when the group is full or the chunk cannot
grow, else ``serve.max_wait_ms`` after the oldest job arrived or, if later, after the decoding
thread became free. A job is answered as soon as its last sentence is decoded; the sentences not
taken stay queued and are grouped again, with the jobs that arrived meanwhile, for the next
call. While the thread decodes, the event loop keeps answering (``/health`` during a long batch)
and new jobs queue up. Jobs with other settings (``beam_size``, ``n_best``) wait for a group of
their own. Because the searches are batch independent (a sentence's hypotheses do not depend on
its batch mates, :mod:`nmt.inference.search`), a request's answer is the one it gets decoded alone, and
the one ``nmt-translate`` prints for the same text and settings.

**Limits** (``serve.*``, see ``configs/serve.yaml``): a body over ``max_request_bytes`` or more
than ``max_sentences_per_request`` sentences or a sentence over ``max_sentence_tokens`` subwords
→ 413; malformed JSON, a wrong type, an unknown field, ``beam_size`` over ``max_beam_size`` or
``n_best`` over ``beam_size`` → 422 naming the field; more than ``max_queue_sentences`` waiting
→ 503 with ``Retry-After``; a request not answered within ``timeout_s`` → 504; an exception
while decoding → 500 for that batch's requests, and the next batch runs as usual. With an API key
(``serve.api_key`` or ``$NMT_SERVE_API_KEY``) ``/v1/*`` needs ``Authorization: Bearer KEY`` or
``X-API-Key: KEY`` (else 401). CORS headers only for ``serve.cors_origins``.

SIGTERM (or Ctrl-C): stop accepting connections, answer every request already received, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any

import hydra
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.core.errors import NMTError, exit_on_user_error
from nmt.core.paths import CONFIG_DIR, VERSION
from nmt.data.corpus import normalize
from nmt.inference.search import SearchSettings, explicit_settings, search_batches
from nmt.inference.translator import Translation, Translator
from nmt.serving.settings import ServeSettings

log = logging.getLogger("nmt.serve")

WARMUP_TEXT = ["Where is the station?", "Open the file and read the first line."]


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Errors a request can get
# --------------------------------------------------------------------------------------------


class HTTPProblem(Exception):
    """An answer other than 200: ``status``, a one-line ``detail`` naming the field or the limit,
    the ``field`` it is about (when one is), and extra headers (``Retry-After``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        field_name: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field_name, headers

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# What each request field expects, for the 422 messages.
EXPECTED = {
    "text": "a string or a list of strings",
    "beam_size": "an integer >= 1",
    "n_best": "an integer >= 1",
    "return_attention": "true or false",
    "return_tokens": "true or false",
}


def validation_problem(err: RequestValidationError) -> HTTPProblem:
    """FastAPI's validation errors as one 422 line naming the first bad field (for a list, the
    first bad element, rather than the union's "not a string")."""
    errors = err.errors()
    first = next((e for e in errors if any(isinstance(p, int) for p in e["loc"][2:])), errors[0])
    kind, loc = first.get("type", ""), [p for p in first.get("loc", ()) if p != "body"]
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        reason = str(ctx.get("error", "invalid JSON")).removesuffix(" at").removesuffix(" starting")
        reason = reason[:1].lower() + reason[1:]  # "unterminated string", "expecting value"
        where = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
        return HTTPProblem(422, f"body: malformed JSON{where} ({reason})", "body")
    if not loc:
        got = type(first.get("input")).__name__
        return HTTPProblem(
            422, f"body: expected a JSON object with a 'text' field; got {got}", "body"
        )
    name = str(loc[0])
    if kind == "missing":
        return HTTPProblem(422, f"{name}: required field missing ({EXPECTED[name]})", name)
    if kind == "extra_forbidden":
        return HTTPProblem(
            422, f"{name}: unknown field; expected one of {', '.join(EXPECTED)}", name
        )
    index = next((p for p in loc[1:] if isinstance(p, int)), None)
    where = f"{name}[{index}]" if index is not None else name
    expected = "a string" if index is not None else EXPECTED.get(name, first.get("msg", ""))
    return HTTPProblem(422, f"{where}: expected {expected}; got {first.get('input')!r}", name)


# --------------------------------------------------------------------------------------------
# The request and response schema
# --------------------------------------------------------------------------------------------


class TranslateRequest(BaseModel):
    """``text``: one English sentence or a list of them (each translated on its own)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | list[str] = Field(examples=["Where is the station?"])
    beam_size: Annotated[int, Field(ge=1)] | None = Field(
        None, description="1: greedy; default: the checkpoint's (or the server's search.*)"
    )
    n_best: Annotated[int, Field(ge=1)] | None = Field(
        None, description="hypotheses per sentence, 1 <= n_best <= beam_size"
    )
    return_attention: bool = Field(
        False, description="attention weights (target + </s>) × (source + </s>), and the tokens"
    )
    return_tokens: bool = Field(False, description="the target and source subwords")


class Hypothesis(BaseModel):
    text: str
    score: float = Field(description="log-probability of the subwords and </s>")
    confidence: float = Field(description="score / predicted tokens (≤ 0)")
    tokens: list[str] | None = None


class TranslationOut(Hypothesis):
    source_tokens: list[str] | None = None
    attention: list[list[float]] | None = None
    nbest: list[Hypothesis] | None = None


class TranslateResponse(BaseModel):
    translations: list[TranslationOut]
    model: str
    timing_ms: dict[str, float] = Field(
        description="queue: waited for its batch; decode: the batch's decoding; total"
    )


def translation_json(t: Translation, n_best: int, tokens: bool, attention: bool) -> dict:
    """One :class:`Translation` as the response's JSON object (optional keys only when asked)."""

    def hypothesis(h: Translation) -> dict[str, Any]:
        out: dict[str, Any] = {"text": h.text, "score": h.score, "confidence": h.confidence}
        if tokens or attention:
            out["tokens"] = h.tokens
        return out

    out = hypothesis(t)
    if tokens or attention:
        out["source_tokens"] = t.source_tokens
    if attention:
        out["attention"] = t.attention.tolist()
    if n_best > 1:
        out["nbest"] = [hypothesis(h) for h in t.nbest]
    return out


# --------------------------------------------------------------------------------------------
# Dynamic batching
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)  # a job is itself (identity), in the queue and as a dict key
class Job:
    """One request's sentences, waiting for (or in) the decoder calls that translate them."""

    sentences: list[str]
    lengths: list[int]  # source subwords of each sentence, </s> included
    settings: SearchSettings
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)
    started: float | None = None  # its first sentences began decoding
    decode_s: float = 0.0  # the decoder calls that held its sentences
    todo: list[int] = field(init=False)  # its sentences no decoder call has taken yet
    results: list[Translation | None] = field(init=False)

    def __post_init__(self) -> None:
        self.todo = list(range(len(self.sentences)))
        self.results = [None] * len(self.sentences)

    @property
    def answered(self) -> bool:
        return all(r is not None for r in self.results)


@dataclass
class Stats:
    """Counters since start (``/v1/stats``)."""

    requests: int = 0
    sentences: int = 0
    batches: int = 0
    batch_sentences: int = 0
    rejected_queue_full: int = 0
    timeouts: int = 0
    decode_errors: int = 0
    max_batch_sentences_seen: int = 0
    decode_seconds: float = 0.0  # the decoding thread's busy time
    decode_cpu_seconds: float = 0.0  # the CPU time it used meanwhile (time.thread_time)
    decode_threads: int = 0  # torch's intra-op threads in the decoding thread (serve.threads)

    def as_dict(self) -> dict[str, Any]:
        """The counters, the mean batch, and the process's CPU seconds so far (all threads:
        decoding, and the event loop's HTTP, JSON and batching work)."""
        mean = self.batch_sentences / self.batches if self.batches else 0.0
        return {
            **asdict(self),
            "mean_batch_sentences": mean,
            "process_cpu_seconds": time.process_time(),
        }


def decoding_thread(threads: int | None) -> ThreadPoolExecutor:
    """The one thread that runs torch (and onnxruntime) while serving, with ``threads``
    intra-op threads (None: torch's default). ``nmt-serve`` loads the model in it too, so that
    no other thread enters a parallel region: libgomp gives each thread that does its own team
    of workers, and with two teams (one from loading the model in the main thread) it counts
    more threads than cores, stops spinning between regions, and each of a beam step's small
    ops sleeps and wakes its workers. One sentence at a time, a decoding thread ran at 10.0–12.8
    sentences/s on one core's worth of CPU that way, 17.1–18.4 on two (2-core EPYC)."""
    return ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix="nmt-decode",
        initializer=torch.set_num_threads if threads else None,
        initargs=(threads,),
    )


class TranslationService:
    """A loaded :class:`Translator`, the job queue, the batcher task and the one decoding thread.

    ``decode(settings, sentences)`` runs in that thread; it is ``translator.translate`` under the
    settings' translator (the model shared, one per settings seen).
    """

    def __init__(
        self,
        translator: Translator,
        limits: ServeSettings,
        executor: ThreadPoolExecutor | None = None,
    ):
        self.limits = limits
        self.base = translator.with_settings(batch_size=limits.max_batch_sentences)
        self.translators: dict[SearchSettings, Translator] = {self.base.settings: self.base}
        self.device_type = torch.device(translator.device).type  # cpu: batch_tokens applies
        self.executor = executor or decoding_thread(limits.threads)
        self.pending: deque[Job] = deque()
        self.pending_sentences = 0
        self.stats = Stats()
        self.ready = False
        self.draining = False
        self.busy = False
        self.free_since = time.perf_counter()  # when the decoding thread last became free
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batcher; warm the model up in the decoding thread, then report ready."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._batch_loop(), name="nmt-batcher")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.base.translate, WARMUP_TEXT)
        self.stats.decode_threads = await loop.run_in_executor(self.executor, torch.get_num_threads)
        self.ready = True
        log.info("model warmed up: ready")

    async def stop(self) -> None:
        """Drain: answer what is queued and in flight, then stop the batcher and the thread."""
        self.draining = True
        while self.pending or self.busy:
            self._wake()
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    # -- requests ----------------------------------------------------------------------------

    def settings_for(self, beam_size: int | None, n_best: int | None) -> SearchSettings:
        """The server's search settings with a request's overrides; 422 naming a bad one."""
        if beam_size is not None and beam_size > self.limits.max_beam_size:
            raise HTTPProblem(
                422,
                f"beam_size: expected an integer in 1..{self.limits.max_beam_size} "
                f"(serve.max_beam_size); got {beam_size}",
                "beam_size",
            )
        pairs = (("beam_size", beam_size), ("n_best", n_best))
        overrides = {key: value for key, value in pairs if value is not None}
        if not overrides:
            return self.base.settings
        try:
            return self.base.settings.replace(**overrides)
        except NMTError as err:
            message = str(err).removeprefix("search.")
            raise HTTPProblem(422, message, message.split(":", 1)[0]) from None

    def count_tokens(self, sentences: Sequence[str]) -> list[int]:
        """Source subwords of each sentence, ``</s>`` included, as the decoder sees them."""
        return [
            len(ids) + 1 for ids in self.base.src_vocab.encode([normalize(s) for s in sentences])
        ]

    async def translate(
        self, sentences: list[str], lengths: list[int], settings: SearchSettings
    ) -> tuple[list[Translation], Job]:
        """Queue the sentences and wait for their batch; 503 when the queue is full, 504 past
        ``timeout_s``, 500 when decoding raised."""
        if not self.ready or self.draining:
            state = "shutting down" if self.draining else "warming up"
            raise HTTPProblem(
                503,
                f"not ready: the server is {state}",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            )
        if self.pending_sentences + len(sentences) > self.limits.max_queue_sentences:
            self.stats.rejected_queue_full += 1
            raise HTTPProblem(
                503,
                f"queue full: {self.pending_sentences} sentences waiting, the limit is "
                f"serve.max_queue_sentences={self.limits.max_queue_sentences}; retry after "
                f"{self.limits.retry_after_s} s",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            )
        job = Job(sentences, lengths, settings, asyncio.get_running_loop().create_future())
        self.pending.append(job)
        self.pending_sentences += len(sentences)
        self.stats.requests += 1
        self.stats.sentences += len(sentences)
        self._wake()
        try:
            results = await asyncio.wait_for(asyncio.shield(job.future), self.limits.timeout_s)
        except asyncio.TimeoutError:
            job.future.cancel()  # the batcher skips it if it has not started yet
            self.stats.timeouts += 1
            raise HTTPProblem(
                504,
                f"timed out: no answer within serve.timeout_s={self.limits.timeout_s:g} s "
                f"({len(self.pending)} requests queued)",
            ) from None
        return results, job

    # -- the batcher -------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _batch_loop(self) -> None:
        while True:
            chunk = await self._next_chunk()
            self.busy = True
            try:
                await self._decode(chunk)
            finally:
                self.busy = False
                self.free_since = time.perf_counter()

    def _group(self) -> tuple[list[Job], bool]:
        """The oldest job and the later ones with its settings whose undecoded sentences fit
        the budget, and whether the group is full (a job is left out, or a limit is reached)."""
        first = self.pending[0]
        group, sentences, tokens = [], 0, 0
        for job in self.pending:
            if job.settings != first.settings:
                continue
            job_tokens = sum(job.lengths[i] for i in job.todo)
            fits = (
                sentences + len(job.todo) <= self.limits.max_batch_sentences
                and tokens + job_tokens <= self.limits.max_batch_tokens
            )
            if group and not fits:
                return group, True
            group.append(job)
            sentences, tokens = sentences + len(job.todo), tokens + job_tokens
        full = (
            sentences >= self.limits.max_batch_sentences or tokens >= self.limits.max_batch_tokens
        )
        return group, full

    async def _next_chunk(self) -> list[tuple[Job, int]]:
        """Wait for jobs; return the next decoder call's sentences as (job, index) pairs.

        The group (:meth:`_group`: the oldest job and the later ones with its settings, up to
        ``max_batch_sentences`` sentences or ``max_batch_tokens`` subwords) is sorted longest
        first and cut into chunks as ``nmt-translate`` cuts its batches
        (:func:`~nmt.inference.search.search_batches`: the settings' batch limits); the call
        takes the chunk that holds the oldest job's first undecoded sentence, so every sentence
        is taken in bounded time. It goes at once when the group is full or that chunk is
        closed (a later, shorter chunk exists: no newcomer can make it fuller), else once
        ``max_wait_ms`` have passed since the oldest job arrived or, if later, since the
        decoding thread became free.

        The second clock matters under load: while a chunk decodes, the clients it answers
        cannot send; waiting ``max_wait_ms`` after it lets their next requests join the group.
        The sentences not taken stay queued and are grouped again with the jobs that arrive
        meanwhile, so the pool the chunks are cut from stays as large as the clients keep it.
        Jobs whose request gave up (504) are dropped."""
        assert self._wakeup is not None
        while True:
            for job in [j for j in self.pending if j.future.done()]:
                self._remove(job)
            if not self.pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group, full = self._group()
            items = [(job, i) for job in group for i in job.todo]
            chunks = search_batches(
                [job.lengths[i] for job, i in items], group[0].settings, self.device_type
            )
            chunk = next(c for c in chunks if 0 in c)  # item 0: the oldest job's first
            since = max(group[0].arrived, self.free_since)
            wait = since + self.limits.max_wait_ms / 1000 - time.perf_counter()
            if full or chunk is not chunks[-1] or wait <= 0 or self.draining:
                return self._take([items[k] for k in chunk])
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    def _take(self, chunk: list[tuple[Job, int]]) -> list[tuple[Job, int]]:
        """Take the chunk's sentences off the queue (a job leaves it once all are taken)."""
        for job, i in chunk:
            job.todo.remove(i)
            self.pending_sentences -= 1
        for job in dict.fromkeys(job for job, _ in chunk):
            if not job.todo:
                self.pending.remove(job)
        return chunk

    def _remove(self, job: Job) -> None:
        self.pending.remove(job)
        self.pending_sentences -= len(job.todo)
        job.todo = []

    def _translator(self, settings: SearchSettings) -> Translator:
        if settings not in self.translators:
            self.translators[settings] = self.base.with_settings(**asdict(settings))
        return self.translators[settings]

    def decode(self, settings: SearchSettings, sentences: list[str]) -> list[Translation]:
        """Runs in the decoding thread: :meth:`Translator.translate` under ``settings`` (a
        chunk the batcher took is within its batch limits: one decoder call)."""
        return self._translator(settings).translate(sentences)

    def _timed_decode(
        self, settings: SearchSettings, sentences: list[str]
    ) -> tuple[list[Translation], float]:
        """:meth:`decode`, and the CPU seconds the decoding thread spent on it."""
        start = time.thread_time()
        results = self.decode(settings, sentences)
        return results, time.thread_time() - start

    async def _decode(self, chunk: list[tuple[Job, int]]) -> None:
        """Decode one chunk; answer each job whose last sentences it held."""
        jobs = list(dict.fromkeys(job for job, _ in chunk))
        start = time.perf_counter()
        for job in jobs:
            job.started = start if job.started is None else job.started
        loop = asyncio.get_running_loop()
        try:
            results, cpu_s = await loop.run_in_executor(
                self.executor,
                self._timed_decode,
                jobs[0].settings,
                [job.sentences[i] for job, i in chunk],
            )
        except Exception as err:  # the requests get 500; the server goes on
            self.stats.decode_errors += 1
            log.exception("decoding a batch of %d sentences failed", len(chunk))
            problem = HTTPProblem(500, f"decoding failed: {type(err).__name__}: {err}")
            for job in jobs:
                if job in self.pending:
                    self._remove(job)
                if not job.future.done():
                    job.future.set_exception(problem)
            return
        elapsed = time.perf_counter() - start
        self.stats.batches += 1
        self.stats.batch_sentences += len(chunk)
        self.stats.decode_seconds += elapsed
        self.stats.decode_cpu_seconds += cpu_s
        self.stats.max_batch_sentences_seen = max(self.stats.max_batch_sentences_seen, len(chunk))
        for (job, i), t in zip(chunk, results, strict=True):
            job.results[i] = t
        for job in jobs:
            job.decode_s += elapsed
            if job.answered and not job.future.done():
                job.future.set_result(job.results)


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


def model_summary(translator: Translator, model_name: str, limits: ServeSettings) -> dict:
    """What ``/v1/model`` answers: the architecture, vocabularies, checkpoint and settings."""
    info, cfg = translator.info, translator.info.config
    trainer = cfg.get("trainer") or {}
    return {
        "model": model_name,
        "source": info.source,
        "architecture": {
            **(cfg.get("model") or {}),
            "parameters": sum(p.numel() for p in translator.model.parameters()),
        },
        "vocabulary": {
            "source_size": len(translator.src_vocab),
            "target_size": len(translator.tgt_vocab),
            "joint": bool(((cfg.get("data") or {}).get("vocab") or {}).get("joint", False)),
        },
        "checkpoint": {
            "step": info.step,
            "minutes": info.minutes,
            "best_score": info.best_score,
            "early_stopping_metric": trainer.get("early_stopping_metric"),
            "validation": info.validation,
            "training": info.training,  # its training precision, device and CPU
        },
        "search": asdict(translator.settings),
        "decoding": translator.decoding_summary(),  # the search's precision and why
        "device": str(translator.device),
        "limits": limits.public(),
        "version": VERSION,
    }


class BodyLimit:
    """413 for a request whose ``Content-Length`` is over ``serve.max_request_bytes``, before
    its body is read. A plain ASGI middleware: starlette's ``@app.middleware("http")`` wraps
    every request in a task group and memory streams, event-loop work that holds the GIL the
    decoding thread waits for: with this instead, 64 clients got 70.5 sentences/s against
    62.5 (means of six alternating runs, more in each pair; base8.pt, beam 5, 2-core EPYC)."""

    def __init__(self, app: Callable, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                problem = HTTPProblem(
                    413,
                    f"body: {int(length)} bytes, over the limit serve.max_request_bytes="
                    f"{self.max_bytes}",
                    "body",
                )
                await problem.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    translator: Translator,
    limits: ServeSettings,
    model_name: str | None = None,
    executor: ThreadPoolExecutor | None = None,
) -> FastAPI:
    """The FastAPI app around ``translator``; ``app.state.service`` is its
    :class:`TranslationService`, decoding in ``executor`` (default: a new
    :func:`decoding_thread`). The lifespan starts the batcher and warms the model up."""
    service = TranslationService(translator, limits, executor)
    name = model_name or limits.model_name or _default_name(translator)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm = asyncio.create_task(service.start())
        try:
            yield
        finally:
            await warm
            await service.stop()

    app = FastAPI(
        title="nmt",
        version=VERSION,
        description="English→Korean translation with dynamic batching",
        lifespan=lifespan,
    )
    app.state.service = service
    if limits.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(limits.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )

    @app.exception_handler(HTTPProblem)
    async def problem_handler(request: Request, err: HTTPProblem) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_handler(request: Request, err: RequestValidationError) -> JSONResponse:
        return validation_problem(err).response()

    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)

    check_key = _api_key_check(limits.api_key)

    @app.get("/health", tags=["status"])
    async def health() -> dict[str, str]:
        """The process is alive (answers during a long batch, and before the model is warm)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["status"])
    async def ready() -> JSONResponse:
        """200 once the model is loaded and warmed up; 503 before, and while shutting down."""
        if service.ready and not service.draining:
            return JSONResponse({"status": "ready", "model": name})
        state = "shutting down" if service.draining else "warming up"
        return JSONResponse(
            {"status": state}, status_code=503, headers={"Retry-After": str(limits.retry_after_s)}
        )

    @app.get("/v1/model", tags=["model"], dependencies=[Depends(check_key)])
    async def model_info() -> dict[str, Any]:
        """Architecture, vocabulary sizes, checkpoint step and validation scores, settings."""
        return model_summary(service.base, name, limits)

    @app.get("/v1/stats", tags=["status"], dependencies=[Depends(check_key)])
    async def stats() -> dict[str, Any]:
        """Requests, sentences and batches so far; queue length."""
        return {
            **service.stats.as_dict(),
            "queued_requests": len(service.pending),
            "queued_sentences": service.pending_sentences,
        }

    @app.post(
        "/v1/translate",
        tags=["translate"],
        response_model=TranslateResponse,
        response_model_exclude_none=True,
        dependencies=[Depends(check_key)],
    )
    async def translate(body: TranslateRequest) -> JSONResponse:
        """Translate one sentence or a list; each is decoded in a batch with other requests'.

        The answer is built as JSON directly (``response_model`` documents it): FastAPI's
        validation of the returned dict against the model cost about 0.2 ms of the 0.7 ms of
        server CPU a request (no model, 64 clients, 2 shared cores)."""
        received = time.perf_counter()
        sentences = [body.text] if isinstance(body.text, str) else body.text
        _check_sentences(sentences, limits)
        settings = service.settings_for(body.beam_size, body.n_best)
        counts = service.count_tokens(sentences)
        for i, count in enumerate(counts):
            if count - 1 > limits.max_sentence_tokens:
                where = "text" if isinstance(body.text, str) else f"text[{i}]"
                raise HTTPProblem(
                    413,
                    f"{where}: {count - 1} subwords, over the limit serve.max_sentence_tokens="
                    f"{limits.max_sentence_tokens}",
                    "text",
                )
        results, job = await service.translate(sentences, counts, settings)
        done = time.perf_counter()
        start = job.started if job.started is not None else done
        return JSONResponse(
            {
                "translations": [
                    translation_json(t, settings.n_best, body.return_tokens, body.return_attention)
                    for t in results
                ],
                "model": name,
                "timing_ms": {
                    "queue": round(1000 * (start - received), 3),
                    "decode": round(1000 * job.decode_s, 3),
                    "total": round(1000 * (done - received), 3),
                },
            }
        )

    return app


def _check_sentences(sentences: list[str], limits: ServeSettings) -> None:
    if not sentences:
        raise HTTPProblem(422, "text: expected at least one sentence; got []", "text")
    if len(sentences) > limits.max_sentences_per_request:
        raise HTTPProblem(
            413,
            f"text: {len(sentences)} sentences, over the limit serve.max_sentences_per_request="
            f"{limits.max_sentences_per_request}",
            "text",
        )


def _api_key_check(api_key: str | None) -> Callable:
    """A FastAPI dependency: 401 unless the request carries ``api_key`` (no check without one)."""

    async def check(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            what = "missing" if given is None else "not accepted"
            raise HTTPProblem(
                401,
                f"API key {what}: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                "Authorization",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def _default_name(translator: Translator) -> str:
    """``<checkpoint file stem>@<step>`` (``best@12000``), or ``nmt`` for a model in memory."""
    if not translator.info.config:
        return "nmt"
    stem = os.path.splitext(os.path.basename(translator.info.source))[0]
    return f"{stem}@{translator.info.step}" if translator.info.step is not None else stem


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


class _Server:
    """uvicorn's server whose SIGTERM/SIGINT only drain: uvicorn re-raises the signal after its
    graceful shutdown (the process then dies of it, status 143); here ``run`` returns, exit 0."""

    def __init__(self, app: FastAPI, limits: ServeSettings):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                handled = (signal.SIGINT, signal.SIGTERM)
                originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
                try:
                    yield
                finally:
                    for sig, handler in originals.items():
                        signal.signal(sig, handler)

        config = uvicorn.Config(
            app,
            log_level=limits.log_level,
            access_log=limits.access_log,
            timeout_graceful_shutdown=int(limits.timeout_s) + 5,
            lifespan="on",
        )
        self.server = Server(config)

    def run(self, sock: socket.socket) -> None:
        self.server.run(sockets=[sock])


def http_stack() -> str:
    """The HTTP parser and event loop uvicorn picks (``auto``: httptools and uvloop when
    installed, else h11 and asyncio). Installed, they took the server's CPU a request from 0.70
    to 0.47 ms (no model, 64 clients, 2 shared cores); in the load benchmark the difference was
    within the run-to-run noise (+16% and -11% in two rounds), so they are not required."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} on {loop}"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free one); NMTError if taken."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise NMTError(f"port: expected an integer in 0..65535; got {port!r}")
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on such sockets, and
        # without it every answer written in two parts (headers, body) waited out the client's
        # 40 ms delayed ACK (GET /health took 44 ms on loopback; 1 ms with it)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        raise NMTError(f"host={host} port={port}: cannot listen ({err.strerror or err})") from None
    return sock


@hydra.main(config_path=str(CONFIG_DIR), config_name="serve", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    limits = ServeSettings.from_config(cfg.serve)
    # The event loop and the decoding thread share the GIL, which the decoder drops and takes
    # back around each of a beam step's many small torch ops; while the event loop has work,
    # each take-back could wait Python's default 5 ms switch interval. At 0.5 ms, 64 clients
    # got 69.8 sentences/s against 67.6 (means of six alternating runs, more in every pair).
    sys.setswitchinterval(0.0005)
    # the model is loaded in the decoding thread, the only one that runs torch (decoding_thread)
    limits = replace(limits, threads=limits.threads or torch.get_num_threads())
    decoding = decoding_thread(limits.threads)
    search = explicit_settings(cfg.search)
    translator = decoding.submit(
        Translator.from_checkpoint, cfg.ckpt, cfg.device, **search
    ).result()
    sock = listen(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    app = create_app(translator, limits, executor=decoding)
    print(
        f"nmt-serve: listening on http://{host}:{port} ({translator.device}, {http_stack()})",
        file=sys.stderr,
    )
    sys.stderr.flush()
    _Server(app, limits).run(sock)
    print("nmt-serve: stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
