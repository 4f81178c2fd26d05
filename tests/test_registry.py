"""The registries of score functions and decoder styles (nmt/models/registry.py): each part is
declared once, the builder and the benchmark ask it, and a new score function is one class plus
one YAML — shown by a score registered inside a test that trains a step through the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import (
    CONFIGS_DIR,
    TINY_MODEL,
    build_model,
    flops_per_target_token,
    quote,
    run_main,
)
from omegaconf import OmegaConf
from torch import Tensor, nn

from nmt.core.errors import NMTError
from nmt.models import DECODER_STYLES, SCORES, Decoder, Score
from nmt.models.attention import ScoreFlops, build_attention
from nmt.models.flops import LengthStats
from nmt.models.registry import Registry

# enko-like batches: source/target ≈ 1.05, a target token attends over 44 source tokens
LENGTHS = LengthStats(sentences=100, src_tokens=105_000, tgt_tokens=100_000, attended=4_400_000)


def yaml_options(group: str) -> dict[str, dict]:
    return {
        path.stem: yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted((CONFIGS_DIR / group).glob("*.yaml"))
    }


# ------------------------------------------------------------------------------ the registries


def test_every_registered_part_has_its_yaml_and_every_yaml_its_class():
    """The sweep's default list (the registry) and the config folder name the same options."""
    scores = yaml_options("model/attention")
    assert set(SCORES) == set(scores)
    for name, cfg in scores.items():
        assert cfg["score"] == name
        assert set(SCORES[name].config_keys) <= set(cfg), name
    styles = yaml_options("model/decoder")
    assert set(DECODER_STYLES) == set(styles)
    assert all(cfg["style"] == name for name, cfg in styles.items())
    assert all(SCORES[name].name == name for name in SCORES)


def test_unknown_names_are_one_line_listing_the_registered_ones():
    with pytest.raises(NMTError) as err:
        SCORES.lookup("foo")
    # the names in registration order (the five's: tests/test_models.py's messages)
    assert (
        str(err.value) == f"model.attention.score: expected one of {', '.join(SCORES)}; got 'foo'"
    )
    with pytest.raises(NMTError) as err:
        DECODER_STYLES.lookup(["x"])  # unhashable: still the one line
    known = ", ".join(DECODER_STYLES)  # luong, bahdanau
    assert str(err.value) == f"model.decoder.style: expected one of {known}; got ['x']"


def test_a_part_must_declare_its_flops_and_checkable_key_types():
    registry: Registry = Registry("model.attention.score")

    class NoFlops(Score):
        def forward(self, query: Tensor, keys: Tensor) -> Tensor:
            return query @ keys.transpose(1, 2)

    with pytest.raises(TypeError, match="NoFlops .* does not define flops"):
        registry.register("no_flops")(NoFlops)

    class FloatKey(NoFlops):
        config_keys = {"temperature": float}

        @classmethod
        def flops(cls, query_size, value_size, src_len, **options) -> ScoreFlops:
            return ScoreFlops(0, 0)

    with pytest.raises(TypeError, match="'temperature' has type"):
        registry.register("float_key")(FloatKey)
    with pytest.raises(ValueError, match="'dot' is already registered"):
        SCORES.register("dot")(FloatKey)
    assert dict(registry) == {}
    with pytest.raises(TypeError, match="abstract"):
        Decoder(None, None, 1)  # type: ignore[arg-type]


def test_bahdanau_accepts_input_feeding_as_false_only_and_needs_it_not():
    """The Bahdanau style declares no input feeding; configs that set it to false still load."""
    from test_models import SRC_VOCAB, TGT_VOCAB, model_cfg, tiny_batch

    src, src_lengths, tgt_in, _ = tiny_batch()
    with_key = model_cfg(style="bahdanau", input_feeding=False)
    without = model_cfg(style="bahdanau")
    del without["decoder"]["input_feeding"]
    outputs = []
    for cfg in (with_key, without):
        torch.manual_seed(0)
        model = build_model(cfg, SRC_VOCAB, TGT_VOCAB)
        with torch.no_grad():
            outputs.append(model(src, src_lengths, tgt_in).logits)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    luong = model_cfg(style="luong")
    del luong["decoder"]["input_feeding"]
    with pytest.raises(NMTError, match=r"^model\.decoder\.input_feeding: missing$"):
        build_model(luong, SRC_VOCAB, TGT_VOCAB)


# ------------------------------------------------------------------------------ the benchmark

# MFLOP per target token (forward + backward) from nmt/benchmark.py before the registry
# (commit cd2b4a0, its own if-chains), for LENGTHS and the config's target vocabulary.
FLOPS_BEFORE_REGISTRY = {
    "default": ([], 15.666757632),
    "joeynmt_ref": (["+experiment=joeynmt_ref"], 23.383621632),
    "dot-unidirectional": (["model/attention=dot", "model.encoder.bidirectional=false"], 11.902550016),
    "scaled_dot-unidirectional-bahdanau": (
        ["model/attention=scaled_dot", "model.encoder.bidirectional=false", "model/decoder=bahdanau"],
        13.475414016,
    ),
    "location-lstm-2-layers-local_m": (
        ["model/attention=location", "model/encoder=lstm", "model.decoder.num_layers=2",
         "model.attention.type=local_m"],
        20.554481664,
    ),
    "concat-bahdanau-lstm-untied": (
        ["model/attention=concat", "model/decoder=bahdanau", "model/encoder=lstm",
         "model.tie_embeddings=false"],
        22.036856832,
    ),
    "general-feeding-no-bridge-128": (
        ["model/attention=general", "model.decoder.input_feeding=true", "model.decoder.bridge=false",
         "model.decoder.hidden_size=128"],
        13.5481344,
    ),
}  # fmt: skip
# forward FLOPs of every score × style × global/local_p at the default sizes, 4k vocabulary
FORWARD_BEFORE_REGISTRY = {
    ("dot", "luong"): 5222252.544,
    ("dot", "bahdanau"): 6139756.544,
    ("general", "luong"): 5222252.544,
    ("general", "bahdanau"): 6139756.544,
    ("scaled_dot", "luong"): 5222252.544,
    ("scaled_dot", "bahdanau"): 6139756.544,
    ("concat", "luong"): 5353324.544,
    ("concat", "bahdanau"): 6270828.544,
    ("location", "luong"): 4990009.344,
    ("location", "bahdanau"): 5907513.344,
}
LOCAL_P_CENTRE = 2 * 256 * 256 + 2 * 256  # v_pᵀ tanh(W_p q) per target token: 131,584


@pytest.mark.parametrize("case", FLOPS_BEFORE_REGISTRY, ids=list(FLOPS_BEFORE_REGISTRY))
def test_benchmark_mflop_per_target_token_are_those_before_the_registry(compose_config, case):
    overrides, mflop = FLOPS_BEFORE_REGISTRY[case]
    cfg = compose_config(*overrides, config_name="benchmark")
    count = flops_per_target_token(cfg.model, cfg.data.vocab.tgt_size, LENGTHS)
    assert count.train / 1e6 == pytest.approx(mflop, rel=1e-12)


@pytest.mark.parametrize("attention_type", ["global", "local_p"])
def test_every_score_and_style_has_its_flops_of_before_the_registry(compose_config, attention_type):
    for (score, style), forward in FORWARD_BEFORE_REGISTRY.items():
        cfg = compose_config(
            f"model/attention={score}",
            f"model/decoder={style}",
            f"model.attention.type={attention_type}",
            config_name="benchmark",
        )
        expected = forward + (LOCAL_P_CENTRE if attention_type == "local_p" else 0)
        got = flops_per_target_token(cfg.model, 4000, LENGTHS).forward
        assert got == pytest.approx(expected, rel=1e-12), (score, style)


# ------------------------------------------------------------------------------ a new score


class LowRankBilinearScore(Score):
    """score(q, h_j) = (U q)ᵀ (W h_j + b): a bilinear score of rank r (``model.attention.rank``)."""

    config_keys = {"rank": int}

    def __init__(self, query_size: int, value_size: int, rank: int):
        super().__init__()
        self.query_proj = nn.Linear(query_size, rank, bias=False)  # U
        self.key_proj = nn.Linear(value_size, rank)  # W, b

    def project_keys(self, values: Tensor) -> Tensor:
        return self.key_proj(values)  # (batch, src_len, rank)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        # (batch, tgt_len, rank) @ (batch, rank, src_len)
        return torch.bmm(self.query_proj(query), keys.transpose(1, 2))  # (batch, tgt_len, src_len)

    @classmethod
    def flops(
        cls, query_size: int, value_size: int, src_len: float, *, rank: int, **options: Any
    ) -> ScoreFlops:
        return ScoreFlops(2 * value_size * rank, 2 * query_size * rank + 2 * rank * src_len)


TOY = "toy_bilinear"
TOY_YAML = f"""# score(q, h_j) = (U q)ᵀ (W h_j + b), rank r: registered by tests/test_registry.py only
score: {TOY}
rank: 3
type: global
window: 10
"""


@pytest.fixture
def toy_score(tmp_path: Path):
    """The toy score registered as ``toy_bilinear``, and a config folder holding its YAML (for
    ``hydra.searchpath``); the registry is restored afterwards."""
    assert TOY not in SCORES
    SCORES.register(TOY)(LowRankBilinearScore)
    folder = tmp_path / "configs"
    (folder / "model" / "attention").mkdir(parents=True)
    (folder / "model" / "attention" / f"{TOY}.yaml").write_text(TOY_YAML, encoding="utf-8")
    try:
        yield folder
    finally:
        del SCORES[TOY]


def test_a_score_registered_in_a_test_trains_a_step_through_the_config(
    toy_score, tiny_prepared, tmp_path, compose_config
):
    """One class (registered here) and one YAML (in a folder on hydra.searchpath): nmt.train
    composes ``model/attention=toy_bilinear``, builds, trains one step and saves it; the
    benchmark's FLOPs are the class's; an unknown name lists the new one too."""
    searchpath = f"hydra.searchpath=[{quote('file://' + str(toy_score))}]"
    run_dir = tmp_path / "run"
    result = run_main(
        "nmt.train",
        *tiny_prepared.corpus.overrides(tiny_prepared.data.out_dir),
        *TINY_MODEL,
        searchpath,
        f"model/attention={TOY}",
        "trainer.max_steps=1",
        "trainer.val_max_sentences=2",
        "trainer.num_attention_plots=0",
        f"hydra.run.dir={quote(run_dir)}",
    )
    assert result.returncode == 0, result.stderr
    assert "stopped at step 1: trainer.max_steps=1 reached" in (run_dir / "train.log").read_text()
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["model"]["attention"] == {
        "score": TOY, "rank": 3, "type": "global", "window": 10, "heads": 1
    }  # fmt: skip
    assert ckpt["model"]["decoder.attention.score.query_proj.weight"].shape == (3, 16)  # U
    assert ckpt["model"]["decoder.attention.score.key_proj.bias"].shape == (3,)

    cfg = compose_config(f"model/attention={TOY}", searchpath)
    assert cfg.model.attention.rank == 3
    pieces = flops_per_target_token(cfg.model, 4000, LENGTHS).pieces
    values, hidden, rank, src_len = 512, 256, 3, LENGTHS.attn_src_len  # src_len 44
    assert pieces["attention_keys"] == pytest.approx(2 * values * rank * LENGTHS.src_per_tgt)
    assert pieces["attention"] == pytest.approx(
        2 * hidden * rank + 2 * rank * src_len + 2 * src_len * values
    )

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    del model_cfg["attention"]["rank"]
    with pytest.raises(NMTError, match=r"^model\.attention\.rank: missing$"):
        build_model(model_cfg, 50, 60)
    with pytest.raises(NMTError, match=rf"expected one of .*, location, {TOY}; got 'foo'$"):
        build_attention("foo", 4, 4)
