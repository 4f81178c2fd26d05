"""The FastAPI app of ``nmt-serve`` on a :class:`~nmt.serving.service.TranslationService`, and
the uvicorn server that runs it on a socket.

Routes::

    GET  /              the demo page (:mod:`nmt.serving.demo`): a text box, the translation, the
                        n-best list, the chosen hypothesis's attention, the model card
    POST /v1/translate  {"text": "…" | ["…", …], "beam_size"?, "n_best"?, "return_attention"?,
                         "return_tokens"?}
                        → {"translations": [{"text", "score", "confidence", "tokens"?,
                           "source_tokens"?, "attention"?, "nbest"?: [{"text", "score",
                           "confidence", "tokens"?, "attention"?}, …]}, …],
                           "model", "timing_ms"}
    GET  /health        the process is alive (no API key needed)
    GET  /ready         the model is loaded and warmed (503 until then, and while draining)
    GET  /v1/model      architecture, vocabularies, checkpoint (step, scores, training precision),
                        decoding precision and CPU
    GET  /v1/stats      requests, batches, sentences decoded so far (mean batch size)
    GET  /docs          OpenAPI docs

A translate request's sentences are encoded once (:meth:`TranslationService.encode`, the
translator's own :meth:`~nmt.inference.translator.Translator.encode`), checked against
``serve.max_sentence_tokens`` by those ids, and queued as ids; the decoding thread decodes the
ids (:meth:`~nmt.inference.translator.Translator.translate_ids`) and the answer is built from the
:class:`~nmt.inference.translator.Translation` objects, as ``nmt-translate`` prints them.

**Limits** (``serve.*``, :class:`~nmt.serving.settings.ServeSettings`): a body over
``max_request_bytes`` or more than ``max_sentences_per_request`` sentences or a sentence over
``max_sentence_tokens`` subwords → 413; malformed JSON, a wrong type, an unknown field,
``beam_size`` over ``max_beam_size`` or ``n_best`` over ``beam_size`` → 422 naming the field;
more than ``max_queue_sentences`` waiting → 503 with ``Retry-After``; a request not answered
within ``timeout_s`` → 504; an exception while decoding → 500 for that batch's requests, and the
next batch runs as usual. With an API key (``serve.api_key`` or ``$NMT_SERVE_API_KEY``) ``/v1/*``
needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (else 401). CORS headers only for
``serve.cors_origins``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nmt.core.errors import NMTError
from nmt.core.paths import VERSION
from nmt.inference.translator import ModelInfo, Translation, Translator
from nmt.serving.demo import demo_headers, render_demo
from nmt.serving.service import HTTPProblem, TranslationService
from nmt.serving.settings import ServeSettings

# --------------------------------------------------------------------------------------------
# Errors a request can get
# --------------------------------------------------------------------------------------------


def problem_response(problem: HTTPProblem) -> JSONResponse:
    """The HTTP response of an :class:`HTTPProblem`: its status, JSON body and headers."""
    return JSONResponse(problem.body(), status_code=problem.status, headers=problem.headers)


# What each request field expects, for the 422 messages.
EXPECTED = {
    "text": "a string or a list of strings",
    "beam_size": "an integer >= 1",
    "n_best": "an integer >= 1",
    "return_attention": "true or false",
    "return_tokens": "true or false",
    "constraints": "Korean phrases the translation must contain: a list of strings for one "
    "sentence, a list of such lists for a list of sentences",
    "glossary": "true or false",
    "avoid": "Korean phrases the translation must not contain: a list of strings for one "
    "sentence, a list of such lists for a list of sentences",
}

MAX_CONSTRAINTS = 32  # phrases per sentence a request may impose (the beam grows by one each)


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
    constraints: list | None = Field(
        None,
        description="Korean phrases the translation must contain (lexically constrained beam "
        "search): a list of strings when `text` is one sentence, one such list per sentence "
        "when it is a list",
        examples=[["다른 이름으로 저장"]],
    )
    glossary: bool = Field(
        True, description="apply the server's glossary (nmt-serve glossary=FILE), if it has one"
    )
    avoid: list | None = Field(
        None,
        description="Korean phrases the translation must not contain (as `constraints`: a list "
        "of strings for one sentence, one such list per sentence for a list)",
        examples=[["화일"]],
    )


class Hypothesis(BaseModel):
    text: str
    score: float = Field(description="log-probability of the subwords and </s>")
    confidence: float = Field(description="score / predicted tokens (≤ 0)")
    tokens: list[str] | None = None
    attention: list[list[float]] | None = Field(
        None, description="(tokens + </s>) × (source_tokens + </s>); with return_attention"
    )
    missing_constraints: list[str] | None = Field(
        None, description="the constraints this output does not contain (when it had any)"
    )
    constrained_tokens: list[int] | None = Field(
        None, description="positions in `tokens` of the constraints met; with tokens"
    )


class TranslationOut(Hypothesis):
    source_tokens: list[str] | None = None
    constraints: list[str] | None = Field(
        None, description="the phrases imposed on this sentence: the request's and the glossary's"
    )
    nbest: list[Hypothesis] | None = Field(
        None, description="best first; each with its own tokens and attention when asked"
    )


class TranslateResponse(BaseModel):
    translations: list[TranslationOut]
    model: str
    timing_ms: dict[str, float] = Field(
        description="queue: waited for its batch; decode: the batch's decoding; total"
    )


def translation_json(t: Translation, n_best: int, tokens: bool, attention: bool) -> dict:
    """One :class:`Translation` as the response's JSON object (optional keys only when asked):
    the best hypothesis, ``source_tokens``, and with ``n_best`` > 1 the ``nbest`` list, whose
    every entry carries its own ``tokens`` and ``attention`` as the best one does."""

    def hypothesis(h: Translation) -> dict[str, Any]:
        out: dict[str, Any] = {"text": h.text, "score": h.score, "confidence": h.confidence}
        if tokens or attention:
            out["tokens"] = h.tokens
        if attention:
            out["attention"] = h.attention.tolist()
        if h.constraints:
            out["missing_constraints"] = h.missing_constraints
            if tokens or attention:
                out["constrained_tokens"] = h.constrained_tokens
        return out

    out = hypothesis(t)
    if t.constraints:
        out["constraints"] = t.constraints
    if tokens or attention:
        out["source_tokens"] = t.source_tokens
    if n_best > 1:
        out["nbest"] = [hypothesis(h) for h in t.nbest]
    return out


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
        },
        "card": info.card,  # the model card: code, data, training, validation, tests
        "search": asdict(translator.settings),
        "markup": translator.markup,  # inline markup masked and put back (nmt.data.markup)
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
                await problem_response(problem)(scope, receive, send)
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
    :func:`~nmt.serving.service.decoding_thread`). The lifespan starts the batcher and warms
    the model up."""
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
        return problem_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid_handler(request: Request, err: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(err))

    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)

    check_key = _api_key_check(limits.api_key)
    demo_page = render_demo(limits)
    demo_page_headers = demo_headers(demo_page)

    @app.get("/", tags=["demo"], response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> HTMLResponse:
        """The demo page (:mod:`nmt.serving.demo`); no API key: the page asks for it."""
        return HTMLResponse(demo_page, headers=demo_page_headers)

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
        requested = _check_phrase_lists(body.constraints, body.text)
        avoid = _check_phrase_lists(body.avoid, body.text, "avoid")
        prepared, encoded = service.encode(sentences)  # once: the queue and the decoder take these
        constraints = service.constraints_for(prepared, requested, body.glossary)
        for i, ids in enumerate(encoded):
            if len(ids) > limits.max_sentence_tokens:
                where = "text" if isinstance(body.text, str) else f"text[{i}]"
                raise HTTPProblem(
                    413,
                    f"{where}: {len(ids)} subwords, over the limit serve.max_sentence_tokens="
                    f"{limits.max_sentence_tokens}",
                    "text",
                )
        results, job = await service.translate(encoded, settings, constraints, avoid)
        results = service.restore(results, prepared)  # the protected markup back in the text
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


def _check_phrase_lists(
    given: list | None, text: str | list[str], field_name: str = "constraints"
) -> list[list[str]] | None:
    """A request's ``constraints`` or ``avoid`` as one list of phrases per sentence; 422
    naming the first element that is not what :data:`EXPECTED` says."""
    if given is None:
        return None
    one = isinstance(text, str)
    per_sentence = [given] if one else given
    if not one and len(given) != len(text):
        raise HTTPProblem(
            422,
            f"{field_name}: expected one list of phrases per sentence of text ({len(text)}); "
            f"got {len(given)}",
            field_name,
        )
    for i, phrases in enumerate(per_sentence):
        where = field_name if one else f"{field_name}[{i}]"
        if not isinstance(phrases, list):
            raise HTTPProblem(
                422, f"{where}: expected a list of Korean phrases; got {phrases!r}", field_name
            )
        if len(phrases) > MAX_CONSTRAINTS:
            raise HTTPProblem(
                422,
                f"{where}: {len(phrases)} phrases, over the limit of {MAX_CONSTRAINTS}",
                field_name,
            )
        for j, phrase in enumerate(phrases):
            if not isinstance(phrase, str) or not phrase.strip():
                raise HTTPProblem(
                    422,
                    f"{where}[{j}]: expected a non-empty Korean phrase; got {phrase!r}",
                    field_name,
                )
    return per_sentence


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
    """``<checkpoint file stem>@<step>`` (``best@12000``), an ensemble's joined by ``+``
    (``best@800+best@790``), or ``nmt`` for a model in memory."""
    if not translator.info.config:
        return "nmt"
    return "+".join(_member_name(m) for m in translator.info.members or [translator.info])


def _member_name(info: ModelInfo) -> str:
    stem = os.path.splitext(os.path.basename(info.source))[0]
    return f"{stem}@{info.step}" if info.step is not None else stem


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


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


def http_stack() -> str:
    """The HTTP parser and event loop uvicorn picks (``auto``: httptools and uvloop when
    installed, else h11 and asyncio). Installed, they took the server's CPU a request from 0.70
    to 0.47 ms (no model, 64 clients, 2 shared cores); in the load benchmark the difference was
    within the run-to-run noise (+16% and -11% in two rounds), so they are not required."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} on {loop}"


def run_server(app: FastAPI, limits: ServeSettings, sock: socket.socket) -> None:
    """Serve ``app`` with uvicorn on ``sock`` until SIGTERM or SIGINT, which only drain: uvicorn
    re-raises the signal after its graceful shutdown (the process then dies of it, status
    143); here this returns, and the command exits 0."""
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
    Server(config).run(sockets=[sock])
