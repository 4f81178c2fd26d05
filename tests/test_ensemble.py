"""Ensembles: several checkpoints decoded together through the one search
(:mod:`nmt.inference.ensemble`), in the Python API, the commands, the server and the explorer.
Every comparison here is in fp32 (the translators' ``search.precision`` is fp32 or ``auto``,
which is fp32 on every CPU kind)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch
from conftest import prepare, quote, run_main, train_tiny_checkpoint

from nmt.core.errors import NMTError
from nmt.inference.ensemble import Ensemble, EnsembleSettings
from nmt.inference.translator import Translator

SENTENCES = [
    "Open the file.",
    "Click the Save button to save the document in another format.",
    "",
    "Where is it?",
]


@pytest.fixture(scope="module")
def other_ckpt(tiny_prepared, tmp_path_factory):
    """A second tiny model on the same prepared data: dot attention, another seed."""
    run_dir = tmp_path_factory.mktemp("ensemble_other")
    return train_tiny_checkpoint(tiny_prepared, run_dir, "model/attention=dot", "seed=7")


@pytest.fixture(scope="module")
def other_vocab_ckpt(tiny_prepared, tmp_path_factory):
    """A tiny model whose target vocabulary has another size (900, not 800)."""
    root = tmp_path_factory.mktemp("ensemble_other_vocab")
    cfg = tiny_prepared.corpus.cfg("data.vocab.tgt_size=900", out_dir=root / "prepared")
    data = prepare(cfg.data, seed=cfg.seed, log=lambda _: None)
    return train_tiny_checkpoint(
        type(tiny_prepared)(tiny_prepared.corpus, cfg, data),
        root / "run",
        "data.vocab.tgt_size=900",
    )


def translators(*paths, **search):
    search = {"beam_size": 3, "n_best": 2, "length_penalty": 1.0, **search}
    return Translator.from_checkpoints([str(p) for p in paths], device="cpu", **search)


@pytest.mark.parametrize("search", [{"beam_size": 1, "n_best": 1}, {"beam_size": 3, "n_best": 2}])
def test_an_ensemble_of_one_model_twice_is_that_model(tiny_checkpoint, search):
    one = Translator.from_checkpoint(tiny_checkpoint, device="cpu", **search)
    twice = translators(tiny_checkpoint, tiny_checkpoint, **search)
    assert isinstance(twice.model, Ensemble) and len(twice.model.models) == 2
    for a, b in zip(one.translate(SENTENCES), twice.translate(SENTENCES), strict=True):
        assert [h.tokens for h in a.nbest] == [h.tokens for h in b.nbest]
        assert [h.score for h in b.nbest] == pytest.approx([h.score for h in a.nbest], abs=1e-4)
        assert torch.allclose(a.attention, b.attention, atol=1e-6)


def test_each_step_is_the_renormalised_mean_of_the_members_log_probs(tiny_checkpoint, other_ckpt):
    ensemble = translators(tiny_checkpoint, other_ckpt)
    a, b = (m for m in ensemble.model.models)
    src = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 0]])
    src_lengths = torch.tensor([4, 3])
    prev = torch.tensor([1, 1])
    with torch.inference_mode():
        memory = ensemble.model.encode(src, src_lengths)
        out = ensemble.model.step(prev, ensemble.model.init_state(memory), memory)
        outs = [
            m.step(prev, m.init_state(m.encode(src, src_lengths)), m.encode(src, src_lengths))
            for m in (a, b)
        ]
    members = [torch.log_softmax(o.logits, dim=-1) for o in outs]
    expected = torch.log_softmax((members[0] + members[1]) / 2, dim=-1)
    assert torch.allclose(torch.log_softmax(out.logits, dim=-1), expected, atol=1e-6)
    expected_attn = (outs[0].attn_weights + outs[1].attn_weights) / 2
    assert torch.allclose(out.attn_weights, expected_attn, atol=1e-6)

    fairseq = Translator.from_checkpoints(
        [tiny_checkpoint, other_ckpt], device="cpu", ensemble=EnsembleSettings(combine="prob")
    )
    with torch.inference_mode():
        memory = fairseq.model.encode(src, src_lengths)
        out_prob = fairseq.model.step(prev, fairseq.model.init_state(memory), memory)
    mean_prob = (members[0].exp() + members[1].exp()) / 2
    assert torch.allclose(out_prob.logits.exp(), mean_prob, atol=1e-6)
    assert fairseq.info.card["ensemble"]["combination"].startswith("the mean of the members' prob")

    first = Translator.from_checkpoints(
        [tiny_checkpoint, other_ckpt], device="cpu", ensemble=EnsembleSettings(attention="first")
    )
    with torch.inference_mode():
        memory = first.model.encode(src, src_lengths)
        out_first = first.model.step(prev, first.model.init_state(memory), memory)
    assert torch.allclose(out_first.attn_weights, outs[0].attn_weights)


def test_an_ensemble_translates_each_sentence_as_it_would_alone(tiny_checkpoint, other_ckpt):
    ensemble = translators(tiny_checkpoint, other_ckpt)
    together = ensemble.translate(SENTENCES)
    for sentence, result in zip(SENTENCES, together, strict=True):
        alone = ensemble.translate([sentence])[0]
        assert alone.tokens == result.tokens and alone.score == pytest.approx(
            result.score, abs=1e-4
        )
    best = together[1]
    assert best.attention.shape == (best.num_predicted, len(best.source_tokens) + 1)
    assert torch.allclose(best.attention.sum(dim=1), torch.ones(best.num_predicted), atol=1e-4)
    assert all(math.isfinite(h.score) for h in best.nbest) and len(best.nbest) == 2
    assert together[2].text == ""  # an empty line stays empty


def test_the_ensembles_info_names_its_members(tiny_checkpoint, other_ckpt):
    ensemble = translators(tiny_checkpoint, other_ckpt)
    info = ensemble.info
    assert info.source == f"ensemble of 2: {tiny_checkpoint} + {other_ckpt}"
    assert [m.source for m in info.members] == [str(tiny_checkpoint), str(other_ckpt)]
    assert info.card["ensemble"]["members"] == [str(tiny_checkpoint), str(other_ckpt)]
    assert info.card["member 2"]["training"]["steps"] == 2
    assert ensemble.backend == "torch"
    assert sum(p.numel() for p in ensemble.model.parameters()) == sum(
        sum(p.numel() for p in m.parameters()) for m in ensemble.model.models
    )


def test_mismatched_vocabularies_are_one_line_naming_both_files(tiny_checkpoint, other_vocab_ckpt):
    with pytest.raises(NMTError) as err:
        translators(tiny_checkpoint, other_vocab_ckpt)
    assert str(err.value) == (
        f"ckpt: {other_vocab_ckpt} and {tiny_checkpoint} have different target vocabularies "
        "(900 and 800 subwords): an ensemble's members must share both "
        "vocabularies (train them on the same prepared data)"
    )
    result = run_main(
        "nmt.translate", f"ckpt=[{quote(tiny_checkpoint)},{quote(other_vocab_ckpt)}]", "input=-"
    )
    assert result.returncode == 2 and result.stderr.strip() == f"error: {err.value}"


def test_a_one_element_list_is_the_checkpoint_alone(tiny_checkpoint):
    single = Translator.from_checkpoints([tiny_checkpoint], device="cpu")
    assert not isinstance(single.model, Ensemble) and single.info.source == str(tiny_checkpoint)
    with pytest.raises(TypeError, match="takes a list of paths"):
        Translator.from_checkpoints(str(tiny_checkpoint))


# ---------------------------------------------------------------------------- the commands


def test_translate_and_evaluate_take_a_list_of_checkpoints(
    tiny_checkpoint, other_ckpt, tmp_path, monkeypatch
):
    source = tmp_path / "in.en"
    source.write_text("Open the file.\nWhere is it?\n", encoding="utf-8")
    pair = f"ckpt=[{quote(tiny_checkpoint)},{quote(other_ckpt)}]"
    result = run_main("nmt.translate", pair, f"input={quote(source)}", "search.beam_size=3")
    assert result.returncode == 0, result.stderr
    expected = translators(tiny_checkpoint, other_ckpt, n_best=1).translate_text(
        ["Open the file.", "Where is it?"]
    )
    assert result.stdout.splitlines() == expected

    report = tmp_path / "report.json"
    scored = run_main("nmt.evaluate", pair, "split=test", "progress=false", f"json={quote(report)}")
    assert scored.returncode == 0, scored.stderr
    assert "not recorded in a model card: only one checkpoint file is" in scored.stdout
    system = json.loads(report.read_text())["systems"][0]
    assert system["system"].startswith("ensemble of 2: ") and system["lines"] == 50


def test_the_server_decodes_with_an_ensemble(tiny_checkpoint, other_ckpt):
    from test_serve import serving

    ensemble = translators(tiny_checkpoint, other_ckpt, n_best=1)

    async def go():
        async with serving(ensemble) as client:
            model = await client.get("/v1/model")
            reply = await client.post("/v1/translate", json={"text": "Open the file."})
            assert reply.status_code == 200, reply.text
            return model.json(), reply.json()

    model, reply = asyncio.run(go())
    assert model["model"] == "best@2+best@2"
    assert model["card"]["ensemble"]["members"] == [str(tiny_checkpoint), str(other_ckpt)]
    assert reply["translations"][0]["text"] == ensemble.translate_text(["Open the file."])[0]


def test_the_explorer_compares_an_ensemble_with_a_single_model(
    tiny_checkpoint, other_ckpt, tmp_path
):
    from nmt.evaluation.explorer import explore

    source = tmp_path / "in.en"
    source.write_text("Open the file.\n", encoding="utf-8")
    payload = explore(
        [[str(tiny_checkpoint), str(other_ckpt)], str(tiny_checkpoint)],
        source,
        out_path=tmp_path / "page.html",
        device="cpu",
    )
    ensemble_entry, single_entry = payload["models"]
    assert ensemble_entry["label"] == "ensemble of 2: concat · gru · luong + dot · gru · luong"
    assert ensemble_entry["card"]["ensemble"]["members"] == [str(tiny_checkpoint), str(other_ckpt)]
    assert single_entry["card"]["training"]["steps"] == 2
