"""The batching service behind ``nmt-serve``: a job queue, the batcher, the one decoding thread.

**A request's path.** The app (:mod:`nmt.serving.app`) encodes a request's sentences once,
with the translator's own :meth:`~nmt.inference.translator.Translator.encode` (normalised as the
corpus is, SentencePiece ids without ``</s>``), checks their lengths, and queues them as one
:class:`Job` of source ids. The batcher cuts chunks by those ids' lengths, and the decoding
thread decodes a chunk's ids with :meth:`~nmt.inference.translator.Translator.translate_ids`:
the text is never encoded twice, and the chunk, cut within the search's batch limits by the one
batching rule (:func:`nmt.inference.search.search_batches`), is one decoder call there.

**Dynamic batching.** Each request becomes a *job* in a queue. One batcher task groups the
oldest job with every later job of the same search settings, oldest first, up to
``serve.max_batch_sentences`` sentences or ``serve.max_batch_tokens`` source subwords, sorts
their undecoded sentences longest first, cuts them into chunks within the search's batch limits
(``search.batch_size``, and on the CPU ``search.batch_tokens`` over the hypotheses:
:func:`~nmt.inference.search.search_batches`, shared with ``nmt-translate``), and gives the one
decoding thread the chunk that holds the oldest job's first sentence: one decoder call. It goes
at once when the group is full or the chunk cannot grow, else ``serve.max_wait_ms`` after the
oldest job arrived or, if later, after the decoding thread became free. A job is answered as
soon as its last sentence is decoded; the sentences not taken stay queued and are grouped
again, with the jobs that arrived meanwhile, for the next call. While the thread decodes, the
event loop keeps answering (``/health`` during a long batch) and new jobs queue up. Jobs with
other settings (``beam_size``, ``n_best``) wait for a group of their own. Because the searches
are batch independent (a sentence's hypotheses do not depend on its batch mates,
:mod:`nmt.inference.search`), a request's answer is the one it gets decoded alone, and the one
``nmt-translate`` prints for the same text and settings.

The service raises :class:`HTTPProblem` for what a request can get other than an answer (503
queue full or not ready, 504 timed out, 500 decoding failed, 422 bad search settings); the app
turns it into the HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nmt.core.errors import NMTError
from nmt.data.markup import Protected
from nmt.inference.search import SearchSettings, search_batches
from nmt.inference.translator import Translation, Translator
from nmt.serving.settings import ServeSettings

log = logging.getLogger("nmt.serve")

WARMUP_TEXT = ["Where is the station?", "Open the file and read the first line."]


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

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"detail": …}``, and ``"field"`` when there is one."""
        body: dict[str, Any] = {"detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        return body


@dataclass(eq=False)  # a job is itself (identity), in the queue and as a dict key
class Job:
    """One request's sentences, waiting for (or in) the decoder calls that translate them.

    encoded: each sentence's source ids without ``</s>`` (:meth:`Translator.encode`), what
        the decoding thread decodes; lengths: their lengths with ``</s>``, what the batcher
        cuts chunks by (as :func:`~nmt.inference.search.decode_ids` counts them).
    """

    encoded: list[list[int]]
    settings: SearchSettings
    future: asyncio.Future
    # each sentence's phrases to contain (Translator.constraints_for) and to avoid
    constraints: list[list[str]] | None = None
    avoid: list[list[str]] | None = None
    arrived: float = field(default_factory=time.perf_counter)
    started: float | None = None  # its first sentences began decoding
    decode_s: float = 0.0  # the decoder calls that held its sentences
    lengths: list[int] = field(init=False)  # source subwords of each sentence, </s> included
    todo: list[int] = field(init=False)  # its sentences no decoder call has taken yet
    results: list[Translation | None] = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = [len(ids) + 1 for ids in self.encoded]
        self.todo = list(range(len(self.encoded)))
        self.results = [None] * len(self.encoded)

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

    ``decode(settings, encoded)`` runs in that thread; it is ``translator.translate_ids`` under
    the settings' translator (the model shared, one per settings seen).
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

    def encode(self, sentences: Sequence[str]) -> tuple[list[Protected], list[list[int]]]:
        """Each sentence prepared (normalised, its markup masked when the translator protects
        it) and its source ids without ``</s>``, as the decoder gets them
        (:meth:`Translator.prepare`, :meth:`Translator.encode_prepared`; SentencePiece only, no torch:
        it runs in the event loop)."""
        prepared = self.base.prepare(sentences)
        return prepared, self.base.encode_prepared(prepared)

    def constraints_for(
        self,
        prepared: list[Protected],
        constraints: list[list[str]] | None,
        glossary: bool = True,
    ) -> list[list[str]] | None:
        """The phrases each sentence's translation must contain: a request's ``constraints``
        and, with ``glossary``, the server's glossary terms in its source
        (:meth:`Translator.constraints_for`); 422 naming the bad phrase."""
        translator = self.base if glossary else self.base.with_glossary(None)
        try:
            return translator.constraints_for(prepared, constraints)
        except NMTError as err:
            raise HTTPProblem(422, str(err), "constraints") from None

    def restore(
        self, translations: list[Translation], prepared: list[Protected]
    ) -> list[Translation]:
        """The masked spans back in the translations (:meth:`Translator.restore`)."""
        return self.base.restore(translations, prepared)

    async def translate(
        self,
        encoded: list[list[int]],
        settings: SearchSettings,
        constraints: list[list[str]] | None = None,
        avoid: list[list[str]] | None = None,
    ) -> tuple[list[Translation], Job]:
        """Queue the encoded sentences (:meth:`encode`) and wait for their batch; 503 when the
        queue is full, 504 past ``timeout_s``, 500 when decoding raised. ``constraints``: each
        sentence's phrases (:meth:`constraints_for`), ``avoid`` the phrases it must not
        contain; they share batches with other requests' sentences, constrained or not."""
        if not self.ready or self.draining:
            state = "shutting down" if self.draining else "warming up"
            raise HTTPProblem(
                503,
                f"not ready: the server is {state}",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            )
        if self.pending_sentences + len(encoded) > self.limits.max_queue_sentences:
            self.stats.rejected_queue_full += 1
            raise HTTPProblem(
                503,
                f"queue full: {self.pending_sentences} sentences waiting, the limit is "
                f"serve.max_queue_sentences={self.limits.max_queue_sentences}; retry after "
                f"{self.limits.retry_after_s} s",
                headers={"Retry-After": str(self.limits.retry_after_s)},
            )
        future = asyncio.get_running_loop().create_future()
        job = Job(encoded, settings, future, constraints, avoid)
        self.pending.append(job)
        self.pending_sentences += len(encoded)
        self.stats.requests += 1
        self.stats.sentences += len(encoded)
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

    def decode(
        self,
        settings: SearchSettings,
        encoded: list[list[int]],
        constraints: list[list[str]] | None = None,
        avoid: list[list[str]] | None = None,
    ) -> list[Translation]:
        """Runs in the decoding thread: :meth:`Translator.translate_ids` of the chunk's source
        ids (and their phrases to contain and to avoid) under ``settings`` (a chunk the batcher
        took is within the settings' batch limits, cut by the same rule: one decoder call)."""
        translator = self._translator(settings)
        return translator.translate_ids(encoded, constraints=constraints, avoid=avoid)

    def _timed_decode(
        self,
        settings: SearchSettings,
        encoded: list[list[int]],
        constraints: list[list[str]] | None,
        avoid: list[list[str]] | None,
    ) -> tuple[list[Translation], float]:
        """:meth:`decode`, and the CPU seconds the decoding thread spent on it."""
        start = time.thread_time()
        results = self.decode(settings, encoded, constraints, avoid)
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
                [job.encoded[i] for job, i in chunk],
                _chunk_phrases(chunk, "constraints"),
                _chunk_phrases(chunk, "avoid"),
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


def _chunk_phrases(chunk: list[tuple[Job, int]], kind: str) -> list[list[str]] | None:
    """The phrases (``kind``: the jobs' ``constraints`` or ``avoid``) of a chunk's sentences, in
    its order; None when none of them has any."""
    phrases = [getattr(job, kind)[i] if getattr(job, kind) else [] for job, i in chunk]
    return phrases if any(phrases) else None
