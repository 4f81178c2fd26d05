"""The HTTP API (``nmt.serve``: ``nmt.serving.app``, ``nmt.serving.service``) on a tiny checkpoint.

In process, through httpx's ASGI transport: the schema, dynamic batching (merged batches, settings
groups, answers equal to decoding alone) and every error status. One real server process on
127.0.0.1: ready, 32 concurrent requests equal to ``nmt-translate``'s output, SIGTERM drains
and exits 0. The worker thread is held busy with a real blocking call where a test needs a queue
(503, 504, /health during a long batch); only the 500 test injects a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import torch
from conftest import compose_config, quote, run_main

import nmt.inference.search as search
from nmt.core.errors import NMTError
from nmt.core.paths import VERSION
from nmt.data.glossary import Glossary
from nmt.inference.search import padded_chunks
from nmt.inference.translator import Translator
from nmt.serving.app import create_app, listen
from nmt.serving.load_test import ServerProcess, offline, percentile
from nmt.serving.settings import API_KEY_ENV, ServeSettings

SENTENCES = [
    "Open the file.",
    "The station is closed on Sundays.",
    "Where is the nearest hospital?",
    "This function returns the number of items in the list.",
    "Hello, world.",
    "I would like to book a table for two people tonight.",
    "",
    "Click the button to save your changes.",
]


@pytest.fixture(scope="module")
def translator(tiny_checkpoint) -> Translator:
    return Translator.from_checkpoint(tiny_checkpoint, device="cpu")


@contextlib.asynccontextmanager
async def serving(translator: Translator, **limits) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan (batcher, warm-up) and an httpx client on its ASGI transport, ready."""
    app = create_app(translator, ServeSettings.from_config(limits))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nmt") as client:
            client.service = app.state.service  # type: ignore[attr-defined]
            await wait_until(lambda: app.state.service.ready)
            yield client


async def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(coro)


@contextlib.contextmanager
def busy_worker(service):
    """Hold the one decoding thread with a real blocking call until the block ends."""
    release = threading.Event()
    service.executor.submit(release.wait, 30)
    try:
        yield
    finally:
        release.set()


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


def test_one_sentence_and_a_list(translator):
    async def go():
        async with serving(translator) as client:
            one = await client.post("/v1/translate", json={"text": "Open the file."})
            many = await client.post("/v1/translate", json={"text": SENTENCES})
            return one, many

    one, many = run(go())
    assert one.status_code == 200, one.text
    body = one.json()
    assert set(body) == {"translations", "model", "timing_ms"}
    assert body["model"] == "best@2"
    assert set(body["timing_ms"]) == {"queue", "decode", "total"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["decode"] > 0
    (t,) = body["translations"]
    assert set(t) == {"text", "score", "confidence"}  # the optional keys only when asked
    expected = translator.translate(["Open the file."])[0]
    assert t["text"] == expected.text
    assert t["score"] == pytest.approx(expected.score, abs=1e-5)
    assert t["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    texts = [t["text"] for t in many.json()["translations"]]
    assert texts == translator.translate_text(SENTENCES)
    assert texts[SENTENCES.index("")] == ""


def test_attention_tokens_and_nbest(translator):
    request = {"text": "Open the file.", "beam_size": 3, "n_best": 2, "return_attention": True}

    async def go():
        async with serving(translator) as client:
            return await client.post("/v1/translate", json=request)

    response = run(go())
    assert response.status_code == 200, response.text
    (t,) = response.json()["translations"]
    expected = translator.with_settings(beam_size=3, n_best=2).translate(["Open the file."])[0]
    assert t["tokens"] == expected.tokens
    assert t["source_tokens"] == expected.source_tokens
    assert len(t["attention"]) == expected.num_predicted
    assert all(len(row) == len(t["source_tokens"]) + 1 for row in t["attention"])
    assert all(sum(row) == pytest.approx(1.0, abs=1e-4) for row in t["attention"])
    assert [h["text"] for h in t["nbest"]] == [h.text for h in expected.nbest]
    assert t["nbest"][0]["text"] == t["text"]
    keys = {"text", "score", "confidence", "tokens", "attention"}
    assert all(set(h) == keys for h in t["nbest"])


def test_every_nbest_hypothesis_carries_its_own_attention(translator):
    """With ``return_attention`` each n-best entry has its subwords and its attention matrix
    (what the demo page shades for the chosen one); with only ``return_tokens``, no matrix."""
    sentence = "The station is closed on Sundays."
    request = {"text": sentence, "beam_size": 3, "n_best": 3}

    async def go():
        async with serving(translator) as client:
            with_attention = {**request, "return_attention": True}
            return (
                await client.post("/v1/translate", json=with_attention),
                await client.post("/v1/translate", json={**request, "return_tokens": True}),
            )

    attention, tokens_only = run(go())
    assert attention.status_code == tokens_only.status_code == 200, attention.text
    (t,) = attention.json()["translations"]
    expected = translator.with_settings(beam_size=3, n_best=3).translate([sentence])[0]
    assert len(t["nbest"]) == len(expected.nbest) == 3
    for shown, hyp in zip(t["nbest"], expected.nbest, strict=True):
        assert shown["tokens"] == hyp.tokens
        assert torch.allclose(torch.tensor(shown["attention"]), hyp.attention, atol=1e-6)
        assert len(shown["attention"]) == hyp.num_predicted
    assert t["nbest"][0]["attention"] == t["attention"]  # the best one's, as at the top level
    (plain,) = tokens_only.json()["translations"]
    assert "attention" not in plain and all("attention" not in h for h in plain["nbest"])
    assert [h["tokens"] for h in plain["nbest"]] == [h.tokens for h in expected.nbest]


def test_model_ready_health_and_docs(translator):
    async def go():
        async with serving(translator) as client:
            return [await client.get(p) for p in ("/v1/model", "/ready", "/health", "/docs")]

    model, ready, health, docs = run(go())
    info = model.json()
    assert info["checkpoint"]["step"] == 2
    assert info["checkpoint"]["early_stopping_metric"] == "bleu"
    validation = info["card"]["validation"]  # stored by the trainer with the checkpoint
    assert validation["step"] == 2 and {"loss", "bleu", "chrf", "perplexity"} <= set(validation)
    assert validation["signatures"]["bleu"].startswith("nrefs:1|")  # sacrebleu's
    assert info["card"]["code"]["version"] == VERSION and info["card"]["training"]["steps"] == 2
    assert info["checkpoint"]["best_score"] == pytest.approx(validation["bleu"])
    assert info["vocabulary"]["source_size"] == len(translator.src_vocab)
    assert info["vocabulary"]["target_size"] == len(translator.tgt_vocab)
    assert info["architecture"]["attention"]["score"] == "concat"
    assert info["architecture"]["parameters"] > 0
    assert info["search"]["name"] == "greedy"
    # what decodes here, and what the weights were trained in
    assert info["decoding"]["precision"] == "fp32" and info["decoding"]["backend"] == "torch"
    assert info["decoding"]["precision_reason"].startswith("search.precision=")
    assert info["decoding"]["cpu"]["model"]
    assert info["card"]["training"]["precision"] == "fp32"
    assert info["limits"]["api_key"] is None
    assert ready.json() == {"status": "ready", "model": "best@2"}
    assert health.json() == {"status": "ok"}
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_ready_waits_for_the_warm_up(translator):
    """Until the warm-up translation has run in the decoding thread, /ready and /v1/translate
    answer 503 with Retry-After, and /health answers 200."""
    app = create_app(translator, ServeSettings())
    service = app.state.service
    release = threading.Event()

    async def go():
        service.executor.submit(release.wait, 30)  # the warm-up queues behind this
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://nmt") as c:
                    before = [await c.get("/ready"), await c.get("/health")]
                    before.append(await c.post("/v1/translate", json={"text": "Hi."}))
                    release.set()
                    await wait_until(lambda: service.ready)
                    return [*before, await c.get("/ready")]
        finally:
            release.set()

    ready, health, translate, after = run(go())
    assert ready.status_code == 503 and ready.json() == {"status": "warming up"}
    assert ready.headers["retry-after"] == "1"
    assert health.status_code == 200
    assert translate.status_code == 503
    assert translate.json() == {"detail": "not ready: the server is warming up"}
    assert after.status_code == 200


# --------------------------------------------------------------------------------------------
# Dynamic batching
# --------------------------------------------------------------------------------------------


def test_concurrent_requests_share_one_batch_and_answer_as_alone(translator):
    """Eight requests of one sentence are decoded as one batch (full at max_batch_sentences=8,
    long before max_wait_ms); each answer equals that sentence decoded alone."""

    async def go():
        async with serving(translator, max_batch_sentences=8, max_wait_ms=5000) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/translate", json={"text": s}) for s in SENTENCES)
            )
            return responses, (await client.get("/v1/stats")).json()

    responses, stats = run(go())
    assert stats["batches"] == 1 and stats["batch_sentences"] == 8
    assert stats["mean_batch_sentences"] == 8
    for sentence, response in zip(SENTENCES, responses, strict=True):
        assert response.status_code == 200, response.text
        (got,) = response.json()["translations"]
        alone = translator.translate([sentence])[0]
        assert got["text"] == alone.text
        assert got["score"] == pytest.approx(alone.score, rel=1e-6, abs=1e-5)  # fp32 sums


def test_batches_stop_at_the_sentence_and_token_budgets(translator):
    async def go(**limits):
        async with serving(translator, max_wait_ms=200, **limits) as client:
            await asyncio.gather(
                *(client.post("/v1/translate", json={"text": s}) for s in SENTENCES)
            )
            return (await client.get("/v1/stats")).json()

    by_sentences = run(go(max_batch_sentences=3))
    assert by_sentences["batches"] == 3 and by_sentences["max_batch_sentences_seen"] == 3
    tokens = [n for n in translator.src_vocab.encode(SENTENCES)]
    budget = max(len(ids) + 1 for ids in tokens)  # the longest sentence fits, alone
    by_tokens = run(go(max_batch_tokens=budget))
    assert by_tokens["batches"] >= 3
    assert by_tokens["batch_sentences"] == len(SENTENCES)


def test_padded_chunks_sort_longest_first_within_the_budget():
    lengths = [3, 40, 5, 12, 2, 100, 12]
    chunks = padded_chunks(lengths, budget=40, max_sentences=3)
    assert chunks == [[5], [1], [3, 6, 2], [0, 4]]  # 100 alone, over the budget; 3 × 12 <= 40
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    assert all(len(c) * lengths[c[0]] <= 40 for c in chunks if len(c) > 1)
    assert padded_chunks([5, 5, 5], budget=1000, max_sentences=1) == [[0], [1], [2]]
    assert padded_chunks([], budget=10, max_sentences=4) == []
    # no budget (decode_ids): longest first, ties in input order, max_sentences at a time
    assert padded_chunks([3, 9, 9, 1, 3], budget=None, max_sentences=2) == [[1, 2], [0, 4], [3]]


def test_a_batch_decoded_in_chunks_answers_as_alone(translator):
    """A small search.batch_tokens cuts the batch into several decoder calls; the answers do
    not change."""

    async def go():
        small = translator.with_settings(batch_tokens=24)
        async with serving(small, max_wait_ms=200) as client:
            return await asyncio.gather(
                *(client.post("/v1/translate", json={"text": s}) for s in SENTENCES)
            )

    responses = run(go())
    texts = [r.json()["translations"][0]["text"] for r in responses]
    assert texts == [translator.translate_text([s])[0] for s in SENTENCES]


def test_a_request_split_over_decoder_calls_answers_in_order(translator):
    """Its sentences land in different chunks (search.batch_tokens=24), decoded with another
    request's; it is answered once its last one is decoded, in its own order, as alone."""

    async def go():
        small = translator.with_settings(batch_tokens=24)
        async with serving(small, max_wait_ms=200) as client:
            many = client.post("/v1/translate", json={"text": SENTENCES})
            one = client.post("/v1/translate", json={"text": SENTENCES[3]})
            responses = await asyncio.gather(many, one)
            return responses, (await client.get("/v1/stats")).json()

    (many, one), stats = run(go())
    assert [t["text"] for t in many.json()["translations"]] == translator.translate_text(SENTENCES)
    assert one.json()["translations"][0]["text"] == translator.translate_text([SENTENCES[3]])[0]
    assert stats["batches"] > 1 and stats["batch_sentences"] == len(SENTENCES) + 1
    assert stats["decode_cpu_seconds"] > 0 and stats["process_cpu_seconds"] > 0


def test_encode_then_translate_ids_is_translate(translator):
    """``Translator.encode`` is the one text → source ids step (normalised as the corpus is);
    ``translate_ids`` of its ids gives what ``translate`` gives (text, scores, tokens,
    attention, n-best)."""
    beam = translator.with_settings(beam_size=3, n_best=2)
    encoded = beam.encode(SENTENCES)
    assert encoded == beam.src_vocab.encode([" ".join(s.split()) for s in SENTENCES])
    assert beam.encode(["Open  the\tfile. "]) == beam.encode(["Open the file."])
    with pytest.raises(TypeError):
        beam.encode("Open the file.")
    for got, want in zip(beam.translate_ids(encoded), beam.translate(SENTENCES), strict=True):
        assert got.source_tokens == want.source_tokens
        for g, w in zip(got.nbest, want.nbest, strict=True):
            assert (g.text, g.score, g.tokens, g.token_ids) == (
                w.text,
                w.score,
                w.tokens,
                w.token_ids,
            )
            assert torch.equal(g.attention, w.attention)


def test_a_request_is_encoded_once_and_each_chunk_is_one_decoder_call(translator, monkeypatch):
    """The app encodes a request's sentences once (``Translator.encode``); the decoding thread
    gets those ids, not the text; each chunk the batcher cuts (``search_batches``) is exactly
    one decoder call in ``decode_ids``, which cuts by the same rule; the answers are
    ``nmt-translate``'s."""
    small = translator.with_settings(batch_tokens=24)  # several chunks
    encodes: list[list[str]] = []
    chunks: list[tuple[object, list[list[int]]]] = []
    calls_per_chunk: list[int] = []
    searches: list[int] = []
    real_search = search._search_batch

    def counting_search(model, src, src_lengths, settings, *phrases):
        searches.append(src.shape[0])
        return real_search(model, src, src_lengths, settings, *phrases)

    async def go():
        async with serving(small, max_wait_ms=200) as client:
            service = client.service
            real_encode, real_decode = service.base.encode_prepared, service.decode

            def encode(prepared):
                encodes.append([p.masked for p in prepared])
                return real_encode(prepared)

            def decode(settings, encoded, *phrases):
                assert all(isinstance(i, int) for ids in encoded for i in ids)
                before = len(searches)
                chunks.append((settings, encoded))
                results = real_decode(settings, encoded, *phrases)
                calls_per_chunk.append(len(searches) - before)
                return results

            monkeypatch.setattr(service.base, "encode_prepared", encode)
            monkeypatch.setattr(service, "decode", decode)
            monkeypatch.setattr(search, "_search_batch", counting_search)
            many = client.post("/v1/translate", json={"text": SENTENCES})
            one = client.post("/v1/translate", json={"text": SENTENCES[3]})
            responses = await asyncio.gather(many, one)
            return responses, (await client.get("/v1/stats")).json()

    (many, one), stats = run(go())
    monkeypatch.undo()
    assert sorted(encodes) == sorted([SENTENCES, [SENTENCES[3]]])  # once per request
    decoded = sorted(ids for _, chunk in chunks for ids in chunk)
    assert decoded == sorted(small.encode([*SENTENCES, SENTENCES[3]]))  # each sentence once
    assert len(chunks) == stats["batches"] > 1
    assert calls_per_chunk == [1 if any(chunk) else 0 for _, chunk in chunks]
    for settings, chunk in chunks:
        lengths = [len(ids) + 1 for ids in chunk]
        assert len(search.search_batches(lengths, settings, "cpu")) == 1
    assert [t["text"] for t in many.json()["translations"]] == translator.translate_text(SENTENCES)
    assert one.json()["translations"][0]["text"] == translator.translate_text([SENTENCES[3]])[0]


def test_different_search_settings_are_not_mixed(translator):
    async def go():
        async with serving(translator, max_wait_ms=300) as client:
            requests = [{"text": s} for s in SENTENCES[:4]]
            requests += [{"text": s, "beam_size": 3, "n_best": 2} for s in SENTENCES[4:]]
            responses = await asyncio.gather(
                *(client.post("/v1/translate", json=r) for r in requests)
            )
            return responses, (await client.get("/v1/stats")).json()

    responses, stats = run(go())
    assert stats["batches"] == 2
    greedy = translator.translate_text(SENTENCES[:4])
    beam = translator.with_settings(beam_size=3, n_best=2).translate(SENTENCES[4:])
    texts = [r.json()["translations"][0]["text"] for r in responses]
    assert texts == greedy + [t.text for t in beam]
    assert all("nbest" in r.json()["translations"][0] for r in responses[4:])
    assert all("nbest" not in r.json()["translations"][0] for r in responses[:4])


def test_health_answers_while_the_worker_decodes(translator):
    async def go():
        async with serving(translator) as client:
            service = client.service
            with busy_worker(service):
                pending = asyncio.create_task(client.post("/v1/translate", json={"text": "Hi."}))
                await wait_until(lambda: service.busy)
                start = time.perf_counter()
                health = await client.get("/health")
                seconds = time.perf_counter() - start
                assert not pending.done()
            return health, seconds, await pending

    health, seconds, translated = run(go())
    assert health.status_code == 200 and seconds < 1.0
    assert translated.status_code == 200


# --------------------------------------------------------------------------------------------
# Bad input and limits
# --------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    # (raw body or JSON, field, the start of the one-line detail)
    (b'{"text": "Open', "body", "body: malformed JSON at character 9 (unterminated string)"),
    (b"[1, 2]", "body", "body: expected a JSON object with a 'text' field; got list"),
    ({}, "text", "text: required field missing (a string or a list of strings)"),
    ({"text": 12}, "text", "text: expected a string or a list of strings; got 12"),
    ({"text": None}, "text", "text: expected a string or a list of strings; got None"),
    ({"text": ["a", 3]}, "text", "text[1]: expected a string; got 3"),
    ({"text": []}, "text", "text: expected at least one sentence; got []"),
    ({"text": "a", "beam_size": "3"}, "beam_size", "beam_size: expected an integer >= 1; got '3'"),
    ({"text": "a", "beam_size": 0}, "beam_size", "beam_size: expected an integer >= 1; got 0"),
    ({"text": "a", "beam_size": 2.5}, "beam_size", "beam_size: expected an integer >= 1; got 2.5"),
    (
        {"text": "a", "beam_size": 17},
        "beam_size",
        "beam_size: expected an integer in 1..16 (serve.max_beam_size); got 17",
    ),
    (
        {"text": "a", "beam_size": 3, "n_best": 4},
        "n_best",
        "n_best: expected 1 <= n_best <= 3 (beam_size); got 4",
    ),
    (
        {"text": "a", "n_best": 2},
        "n_best",
        "n_best: expected 1 <= n_best <= 1 (greedy search keeps one hypothesis); got 2",
    ),
    (
        {"text": "a", "return_attention": "yes"},
        "return_attention",
        "return_attention: expected true or false; got 'yes'",
    ),
    ({"text": "a", "beam": 3}, "beam", "beam: unknown field; expected one of text, beam_size"),
    (
        {"text": ["a", "b"], "constraints": [["저장"]]},
        "constraints",
        "constraints: expected one list of phrases per sentence of text (2); got 1",
    ),
    (
        {"text": "a", "constraints": "저장"},
        "constraints",
        "constraints: expected Korean phrases the translation must contain",
    ),
    (
        {"text": ["a"], "constraints": ["저장"]},
        "constraints",
        "constraints[0]: expected a list of Korean phrases; got '저장'",
    ),
    (
        {"text": "a", "constraints": ["저장", " "]},
        "constraints",
        "constraints[1]: expected a non-empty Korean phrase; got ' '",
    ),
    (
        {"text": ["a"], "constraints": [[3]]},
        "constraints",
        "constraints[0][0]: expected a non-empty Korean phrase; got 3",
    ),
    (
        {"text": "a", "constraints": ["저장"] * 33},
        "constraints",
        "constraints: 33 phrases, over the limit of 32",
    ),
    ({"text": "a", "glossary": "no"}, "glossary", "glossary: expected true or false; got 'no'"),
    ({"text": "a", "avoid": ["화일", ""]}, "avoid", "avoid[1]: expected a non-empty Korean phrase"),
    (
        {"text": ["a", "b"], "avoid": [["화일"]]},
        "avoid",
        "avoid: expected one list of phrases per sentence of text (2); got 1",
    ),
]


@pytest.mark.parametrize(("body", "field", "detail"), BAD_REQUESTS)
def test_bad_input_is_422_naming_the_field(translator, body, field, detail):
    async def go():
        async with serving(translator) as client:
            if isinstance(body, bytes):
                headers = {"content-type": "application/json"}
                return await client.post("/v1/translate", content=body, headers=headers)
            return await client.post("/v1/translate", json=body)

    response = run(go())
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["detail"].startswith(detail), response.json()["detail"]
    assert "\n" not in response.json()["detail"]


def test_constraints_and_the_glossary_in_a_request(translator):
    """A request's constraints and the server's glossary reach the constrained search; the
    answer says what was imposed and what was missed, and a sentence without any decodes as
    without them, in the same batch."""
    glossary = Glossary({"station": "역", "file": "파일"})
    texts = ["The station is closed on Sundays.", "Open the file.", "Hello, world."]

    async def go():
        async with serving(translator.with_glossary(glossary)) as client:
            asked = {"text": texts, "constraints": [["일요일"], [], []], "return_tokens": True}
            with_glossary = await client.post("/v1/translate", json=asked)
            without = await client.post("/v1/translate", json={**asked, "glossary": False})
            return with_glossary.json(), without.json()

    with_glossary, without = run(go())
    first, second, third = with_glossary["translations"]
    assert first["constraints"] == ["일요일", "역"]
    assert second["constraints"] == ["파일"]
    for t in (first, second):
        assert t["missing_constraints"] == []
        assert all(phrase in t["text"] for phrase in t["constraints"])
        assert t["constrained_tokens"]
    assert "constraints" not in third and "missing_constraints" not in third
    assert third["text"] == translator.translate([texts[2]])[0].text
    expected = translator.translate(texts, constraints=[["일요일"], [], []])
    assert [t["text"] for t in without["translations"]] == [t.text for t in expected]
    assert without["translations"][0]["constraints"] == ["일요일"]


def test_avoided_phrases_in_a_request(translator):
    texts = ["Open the file.", "The station is closed on Sundays."]
    plain = translator.translate(texts)
    # a word the first output spells with one piece
    avoid = [[next(p[1:] for p in plain[0].tokens if p.startswith("▁") and len(p) > 1)], []]

    async def go():
        async with serving(translator) as client:
            answer = await client.post("/v1/translate", json={"text": texts, "avoid": avoid})
            return answer.json()

    first, second = run(go())["translations"]
    assert first["text"] != plain[0].text
    assert first["text"] == translator.translate(texts, avoid=avoid)[0].text
    assert second["text"] == plain[1].text


def test_limits_are_413_naming_the_limit(translator):
    long_sentence = " ".join(["word"] * 40)

    async def go():
        limits = {"max_sentences_per_request": 3, "max_sentence_tokens": 20}
        async with serving(translator, max_request_bytes=2000, **limits) as client:
            post = client.post
            return (
                await post("/v1/translate", json={"text": ["a", "b", "c", "d"]}),
                await post("/v1/translate", json={"text": ["a", long_sentence]}),
                await post("/v1/translate", json={"text": long_sentence}),
                await post("/v1/translate", json={"text": "x" * 3000}),
                await post("/v1/translate", json={"text": ["a", "b", "c"]}),
            )

    many, long_in_list, long_alone, big, fine = run(go())
    assert many.status_code == 413
    assert many.json()["detail"] == (
        "text: 4 sentences, over the limit serve.max_sentences_per_request=3"
    )
    assert long_in_list.status_code == 413
    count = len(translator.src_vocab.encode([long_sentence])[0])
    assert long_in_list.json()["detail"] == (
        f"text[1]: {count} subwords, over the limit serve.max_sentence_tokens=20"
    )
    assert long_alone.json()["detail"].startswith(f"text: {count} subwords")
    assert big.status_code == 413
    assert big.json()["detail"].startswith("body: 30")
    assert big.json()["detail"].endswith("bytes, over the limit serve.max_request_bytes=2000")
    assert fine.status_code == 200


def test_full_queue_is_503_with_retry_after(translator):
    async def go():
        async with serving(translator, max_queue_sentences=3, retry_after_s=2) as client:
            service = client.service
            with busy_worker(service):
                first = asyncio.create_task(client.post("/v1/translate", json={"text": "a"}))
                await wait_until(lambda: service.busy)  # its batch waits for the thread
                queued = asyncio.create_task(
                    client.post("/v1/translate", json={"text": ["b", "c", "d"]})
                )
                await wait_until(lambda: service.pending_sentences == 3)
                full = await client.post("/v1/translate", json={"text": "e"})
            return full, await first, await queued

    full, first, queued = run(go())
    assert full.status_code == 503
    assert full.headers["retry-after"] == "2"
    assert full.json()["detail"] == (
        "queue full: 3 sentences waiting, the limit is serve.max_queue_sentences=3; retry after 2 s"
    )
    assert first.status_code == 200 and queued.status_code == 200  # the queue still drains


def test_waiting_past_the_timeout_is_504_and_the_server_goes_on(translator):
    async def go():
        async with serving(translator, timeout_s=0.3) as client:
            with busy_worker(client.service):
                late = await client.post("/v1/translate", json={"text": "Open the file."})
            return late, await client.post("/v1/translate", json={"text": "Open the file."})

    late, after = run(go())
    assert late.status_code == 504
    assert late.json()["detail"].startswith("timed out: no answer within serve.timeout_s=0.3 s")
    assert after.status_code == 200


def test_decoding_failure_is_500_then_the_next_requests_work(translator, monkeypatch):
    async def go():
        async with serving(translator, max_wait_ms=0) as client:
            service = client.service
            decode = service.decode
            boom = translator.encode(["boom"])[0]

            def failing(settings, encoded, *phrases):  # a fault in the decoding thread
                if boom in encoded:
                    raise RuntimeError("injected failure")
                return decode(settings, encoded, *phrases)

            monkeypatch.setattr(service, "decode", failing)
            failed = await client.post("/v1/translate", json={"text": "boom"})
            after = await client.post("/v1/translate", json={"text": "Open the file."})
            return failed, after, (await client.get("/v1/stats")).json()

    failed, after, stats = run(go())
    assert failed.status_code == 500
    assert failed.json() == {"detail": "decoding failed: RuntimeError: injected failure"}
    assert after.status_code == 200
    assert (
        after.json()["translations"][0]["text"] == translator.translate_text(["Open the file."])[0]
    )
    assert stats["decode_errors"] == 1


@pytest.mark.parametrize("from_env", [False, True])
def test_api_key_is_required_on_v1_when_set(translator, monkeypatch, from_env):
    if from_env:
        monkeypatch.setenv(API_KEY_ENV, "s3cret")
    limits = {} if from_env else {"api_key": "s3cret"}

    async def go():
        async with serving(translator, **limits) as client:
            body = {"text": "Open the file."}
            return (
                await client.post("/v1/translate", json=body),
                await client.post("/v1/translate", json=body, headers={"X-API-Key": "wrong"}),
                await client.get("/v1/model"),
                await client.post(
                    "/v1/translate", json=body, headers={"Authorization": "Bearer s3cret"}
                ),
                await client.post("/v1/translate", json=body, headers={"X-API-Key": "s3cret"}),
                await client.get("/health"),
                await client.get("/ready"),
            )

    missing, wrong, model, bearer, header, health, ready = run(go())
    for response in (missing, wrong, model):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert missing.json()["detail"] == (
        "API key missing: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    )
    assert wrong.json()["detail"].startswith("API key not accepted")
    assert bearer.status_code == header.status_code == 200
    assert health.status_code == ready.status_code == 200  # probes need no key


def test_the_typed_serve_block_takes_the_api_key_from_the_environment(monkeypatch):
    """``nmt-serve`` reads its typed config (``check_command``), which the environment is not
    part of; ``with_env_api_key`` adds ``$NMT_SERVE_API_KEY`` there as ``from_config`` does,
    and a key given as ``serve.api_key`` wins."""
    from nmt.config.schema import check_command

    monkeypatch.setenv(API_KEY_ENV, "s3cret")
    plain = check_command("serve", compose_config("ckpt=x.pt", config_name="serve")).serve
    assert plain.api_key is None and plain.with_env_api_key().api_key == "s3cret"
    assert plain.with_env_api_key() == ServeSettings.from_config({})
    given = compose_config("ckpt=x.pt", "serve.api_key=mine", config_name="serve")
    assert check_command("serve", given).serve.with_env_api_key().api_key == "mine"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert plain.with_env_api_key().api_key is None


def test_no_cors_headers_unless_configured(translator):
    origin = {"Origin": "https://example.org"}
    preflight = {**origin, "Access-Control-Request-Method": "POST"}

    async def go(**limits):
        async with serving(translator, **limits) as client:
            return (
                await client.post("/v1/translate", json={"text": "Hi."}, headers=origin),
                await client.options("/v1/translate", headers=preflight),
            )

    plain, plain_preflight = run(go())
    assert "access-control-allow-origin" not in plain.headers
    assert plain_preflight.status_code == 405
    allowed, allowed_preflight = run(go(cors_origins=["https://example.org"]))
    assert allowed.headers["access-control-allow-origin"] == "https://example.org"
    assert allowed_preflight.status_code == 200


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_batch_sentences": 0}, "serve.max_batch_sentences: expected an integer >= 1; got 0"),
        ({"max_wait_ms": -1}, "serve.max_wait_ms: expected a number >= 0; got -1"),
        ({"timeout_s": 0}, "serve.timeout_s: expected a number > 0; got 0"),
        ({"api_key": ""}, "serve.api_key: expected a non-empty string or null; got ''"),
        ({"log_level": "loud"}, "serve.log_level: expected one of critical, error, warning, info"),
        ({"batch": 3}, "serve.batch: unknown setting; expected one of max_batch_sentences"),
    ],
)
def test_bad_serve_settings_name_the_key(values, message):
    with pytest.raises(NMTError) as err:
        ServeSettings.from_config(values)
    assert str(err.value).startswith(message)


def test_command_line_errors_are_one_line(tmp_path):
    missing = tmp_path / "no.pt"
    result = run_main("nmt.serve", f"ckpt={quote(missing)}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint not found: {missing}"
    unknown = run_main("nmt.serve", f"ckpt={quote(missing)}", "serve.batch=3")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "Could not override 'serve.batch'" in unknown.stderr
    client = run_main("nmt.serve_bench", f"ckpt={quote(missing)}", "client=curl")
    assert client.returncode == 2
    assert client.stderr.strip() == "error: client: expected one of raw, httpx; got 'curl'"
    bad = run_main("nmt.serve", f"ckpt={quote(missing)}", "serve.max_wait_ms=-5")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: serve.max_wait_ms: expected a number >= 0; got -5"
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(NMTError, match=r"^host=127.0.0.1 port=\d+: cannot listen"):
            listen("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_answers_on_the_listening_socket_are_sent_without_delay():
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; on one made with
    proto 0 every answer uvicorn writes in two parts waited for the client's delayed ACK (GET
    /health took 44 ms on loopback instead of 1)."""
    import socket

    async def accepted_nodelay() -> int:
        flags: list[int] = []

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            sock = writer.get_extra_info("socket")
            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = listen("127.0.0.1", 0)
        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            while not flags:
                await asyncio.sleep(0.01)
            writer.close()
        return flags[0]

    assert asyncio.run(asyncio.wait_for(accepted_nodelay(), 10)) != 0


# --------------------------------------------------------------------------------------------
# A real server process on 127.0.0.1
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_server_process_answers_as_the_cli_and_drains_on_sigterm(tiny_checkpoint, tmp_path):
    """Start, wait for /ready, send 32 concurrent requests; SIGTERM while they wait for their
    batch: every one is answered, the answers equal ``nmt-translate``'s, and the exit status is 0."""
    lines = [s for s in SENTENCES if s] * 5
    lines = [f"{s} ({i})" for i, s in enumerate(lines[:32])]
    src = tmp_path / "in.en"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    cli = run_main(
        "nmt.translate",
        f"ckpt={quote(tiny_checkpoint)}",
        f"input={quote(src)}",
        "search.beam_size=3",
        "progress=false",
    )
    assert cli.returncode == 0, cli.stderr
    expected = cli.stdout.splitlines()

    server = ServerProcess(
        f"ckpt={quote(tiny_checkpoint)}",
        "search.beam_size=3",
        "serve.max_wait_ms=3000",  # the 32 requests wait together for their batch…
        "serve.threads=2",  # the decoding thread's (the main thread runs no torch)
    )
    try:
        server.wait_ready(timeout=90)

        async def load():
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                tasks = [
                    asyncio.create_task(client.post("/v1/translate", json={"text": line}))
                    for line in lines
                ]
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as probe:
                    assert (await probe.get("/v1/stats")).json()["decode_threads"] == 2
                    deadline = time.monotonic() + 30
                    while (await probe.get("/v1/stats")).json()["requests"] < len(lines):
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
                server.proc.send_signal(signal.SIGTERM)  # …and SIGTERM arrives before it runs
                return await asyncio.gather(*tasks)

        responses = asyncio.run(load())
        returncode = server.proc.wait(timeout=60)
    finally:
        server.kill()
    assert [r.status_code for r in responses] == [200] * len(lines), server.output()
    texts = [r.json()["translations"][0]["text"] for r in responses]
    assert texts == expected
    assert returncode == 0, server.output()
    assert "Shutting down" in server.output()
    assert json.loads(responses[0].text)["model"] == "best@2"


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50, 95, 99)
    assert percentile([7.0], 99) == 7.0


def test_the_offline_ceiling_takes_a_search_group_with_its_own_batch_size(
    tiny_checkpoint, tiny_prepared
):
    """``search=greedy`` brings ``batch_size``; the benchmark's ``batch_sentences`` wins."""
    lines = Path(tiny_prepared.corpus.test).read_text(encoding="utf-8").splitlines()[:6]
    sentences = [line.split("\t")[0] for line in lines]
    settings = {"name": "greedy", "beam_size": 1, "batch_size": 64}
    base = offline(tiny_checkpoint, "cpu", settings, 2, sentences)
    assert (base.settings["name"], base.settings["batch_size"]) == ("greedy", 2)
    assert len(base.texts) == 6


@pytest.mark.slow
def test_load_benchmark_runs_and_prints_its_table(tiny_checkpoint, tiny_prepared, tmp_path):
    """A few requests only: that the command runs end to end (the figures are not checked)."""
    report = tmp_path / "bench.json"
    result = run_main(
        "nmt.serve_bench",
        f"ckpt={quote(tiny_checkpoint)}",
        f"input={quote(tiny_prepared.corpus.test)}",
        "requests=4",
        "clients=[2]",
        "max_seconds=30",
        "threads=1",
        f"output={quote(report)}",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "the ceiling" in result.stdout
    data = json.loads(report.read_text(encoding="utf-8"))
    runs = {(r["clients"], r["batching"]): r for r in data["runs"]}
    assert set(runs) == {(2, "on"), (2, "off")}
    assert all(
        r["answered"] == 4 and r["errors"] == 0 and r["mismatches"] == 0 for r in runs.values()
    )
    assert runs[(2, "off")]["mean_batch"] == 1.0
    assert all(r["server_cpu"] > 0 and r["client_cpu"] >= 0 for r in runs.values())
    assert "one at a time" in result.stdout and "load average" in result.stdout
    assert data["exit_status"] == {"on": 0, "off": 0}
    timings = data["ceiling_timings_sentences_per_s"]  # before the one client count, and after
    assert len(timings) == 2 and all(t > 0 for t in timings)
    assert data["ceiling_per_clients"] == {"2": pytest.approx(sum(timings) / 2)}
    single = data["offline_single_sentences_per_s"]
    assert data["x_off_bound"] == pytest.approx(sum(timings) / 2 / single)
    assert "the bound on 'x off' is" in result.stdout
