"""ONNX export and the onnxruntime backend: parity with eager PyTorch, the same search code,
the command lines on an exported folder, and bad input.

Every comparison here is in fp32: the exported graphs are fp32, and eager PyTorch decodes in
fp32 both when told so (``precision="fp32"``) and by default (``auto`` is fp32 on every CPU
kind, which ``test_defaults_decode_the_same_on_every_cpu_kind`` checks under each simulated
kind). CI runs this file again under each simulated kind (marker ``cpu_dependent``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from conftest import quote, run_main, train_tiny_checkpoint
from export_grid import parity_grid, tiny_model, tiny_model_config, tiny_parity

from nmt.core.errors import NMTError
from nmt.inference.onnx_backend import ENCODER_GRAPH, STEP_GRAPH, OnnxSeq2Seq, StateLayout
from nmt.inference.onnx_export import (
    CHECK_LENGTHS,
    EXPORT_LENGTHS,
    TOLERANCE,
    check_parity,
    export_graphs,
)
from nmt.inference.search import SearchSettings, decode_ids
from nmt.inference.translator import Translator

pytestmark = pytest.mark.cpu_dependent

LINES = ["Open the file.", "", "The station is closed on Sundays.", "Where is the station?"]


def test_checked_shapes_differ_from_the_export_example():
    """The parity check is only a check of the dynamic axes if its batches are not the example."""
    assert all(tuple(lengths) != EXPORT_LENGTHS for lengths in CHECK_LENGTHS)
    assert {len(lengths) for lengths in CHECK_LENGTHS} - {len(EXPORT_LENGTHS)}
    assert max(map(max, CHECK_LENGTHS)) > max(EXPORT_LENGTHS) > min(map(min, CHECK_LENGTHS))


@pytest.mark.parametrize("combo", parity_grid(), ids=lambda c: "-".join(map(str, c)))
def test_every_combination_matches_eager_within_tolerance(combo, tmp_path):
    parity = tiny_parity(tiny_model_config(*combo), tmp_path)
    assert parity["log_prob"] <= TOLERANCE
    assert parity["attn_weights"] <= TOLERANCE
    assert parity["memory"] <= TOLERANCE


def test_dot_without_key_projection_and_no_bridge_match_too(tmp_path):
    """Decoder hidden = encoder output size: dot's keys are the values (two equal outputs)."""
    cfg = tiny_model_config("gru", "dot", "luong", True, hidden_size=16, bridge=False)
    cfg["tie_embeddings"] = False
    assert tiny_parity(cfg, tmp_path)["log_prob"] <= TOLERANCE


def exported_tiny(tmp_path: Path, combo=("gru", "general", "luong", True)):
    cfg = tiny_model_config(*combo)
    model = tiny_model(cfg)
    layout = StateLayout.from_model_config(cfg)
    export_graphs(model, layout, tmp_path, "legacy", 17)
    return model, OnnxSeq2Seq(tmp_path, {"config": {"model": cfg}}, threads=1)


def test_gru_without_linear_before_reset_is_caught(tmp_path):
    """pytorch #189225: a GRU exported without linear_before_reset runs with wrong numbers."""
    model, _ = exported_tiny(tmp_path)
    graph = onnx.load(str(tmp_path / ENCODER_GRAPH))
    grus = [node for node in graph.graph.node if node.op_type == "GRU"]
    assert grus
    for node in grus:
        for attribute in node.attribute:
            if attribute.name == "linear_before_reset":
                attribute.i = 0
    onnx.save(graph, str(tmp_path / ENCODER_GRAPH))
    broken = OnnxSeq2Seq(
        tmp_path, {"config": {"model": tiny_model_config("gru", "general", "luong", True)}}, 1
    )
    assert check_parity(model, broken)["log_prob"] > 100 * TOLERANCE


def test_a_frozen_source_length_is_caught(tmp_path, monkeypatch):
    """pytorch #191855: an RNN's time dimension frozen at export fails at other lengths."""
    import nmt.inference.onnx_export

    real_export = nmt.inference.onnx_export._export

    def freeze_src_len(module, args, path, inputs, outputs, axes, exporter, opset):
        frozen = {
            name: {d: n for d, n in dims.items() if n != "src_len"} for name, dims in axes.items()
        }
        real_export(module, args, path, inputs, outputs, frozen, exporter, opset)

    monkeypatch.setattr(nmt.inference.onnx_export, "_export", freeze_src_len)
    with pytest.raises(NMTError, match="fail on a batch of source lengths"):
        tiny_parity(tiny_model_config("gru", "general", "bahdanau", False), tmp_path)


@pytest.mark.parametrize(
    "settings",
    [
        SearchSettings(
            name="greedy", beam_size=1, no_repeat_ngram_size=0, batch_size=3, precision="fp32"
        ),
        SearchSettings(
            name="beam", beam_size=4, n_best=3, length_penalty=1.0, batch_size=2, precision="fp32"
        ),
    ],
    ids=["greedy", "beam-nbest-ngram"],
)
def test_the_same_search_code_gives_the_same_hypotheses(settings, tmp_path):
    model, exported = exported_tiny(tmp_path, ("lstm", "concat", "luong", True))
    generator = torch.Generator().manual_seed(3)
    encoded = [
        torch.randint(4, 30, (n,), generator=generator).tolist() for n in (9, 3, 14, 1, 6, 0)
    ]
    eager = decode_ids(model, encoded, settings, "cpu")
    onnx_ = decode_ids(exported, encoded, settings, "cpu")
    for a_list, b_list in zip(eager, onnx_, strict=True):
        assert [h.tokens for h in a_list] == [h.tokens for h in b_list]
        for a, b in zip(a_list, b_list, strict=True):
            assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
            assert a.hit_max_len == b.hit_max_len
            assert torch.allclose(a.attn_weights, b.attn_weights, atol=1e-5)


# --------------------------------------------------------------------------------------------
# A trained checkpoint, exported through the command line


@pytest.fixture(scope="module")
def ckpt(tiny_prepared, tmp_path_factory) -> Path:
    """A tiny LSTM checkpoint after 2 training steps."""
    run_dir = tmp_path_factory.mktemp("export_run")
    return train_tiny_checkpoint(tiny_prepared, run_dir, "model/encoder=lstm")


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "model"
    result = run_main("nmt.export", f"ckpt={quote(ckpt)}", f"out={quote(out)}")
    assert result.returncode == 0, result.stderr
    assert "max |Δ log-prob|" in result.stdout
    return out


def test_export_writes_graphs_vocabularies_and_manifest(exported, ckpt):
    import hashlib

    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert manifest["exporter"]["name"] == "legacy" and manifest["exporter"]["opset"] >= 17
    assert manifest["config"]["model"]["encoder"]["rnn_type"] == "lstm"
    assert manifest["parity"]["log_prob"] <= TOLERANCE
    assert manifest["parity"]["eager_precision"] == "fp32"  # what the graphs were held to
    assert manifest["card"]["training"]["precision"] == "fp32"  # the checkpoint's model card
    assert manifest["source"]["format_version"] == 2
    for name in ("encoder.onnx", "decoder_step.onnx", "src.model", "tgt.model"):
        assert (exported / name).stat().st_size == manifest["files"][name]["bytes"]
    saved = torch.load(ckpt, weights_only=True)
    assert (exported / "src.model").read_bytes() == saved["vocab"]["src_model"]


@pytest.mark.parametrize("search", [{"name": "greedy"}, {"beam_size": 3, "n_best": 2}])
def test_translator_on_the_folder_equals_the_checkpoint(exported, ckpt, search):
    onnx_translator = Translator.from_checkpoint(exported, "cpu", **search, precision="fp32")
    eager = Translator.from_checkpoint(ckpt, "cpu", **search, precision="fp32")
    assert isinstance(onnx_translator.model, OnnxSeq2Seq) and onnx_translator.backend == "onnx"
    assert onnx_translator.settings == eager.settings
    assert eager.precision.name == onnx_translator.precision.name == "fp32"
    for a, b in zip(eager.translate(LINES), onnx_translator.translate(LINES), strict=True):
        assert [h.text for h in a.nbest] == [h.text for h in b.nbest]
        assert a.score == pytest.approx(b.score, abs=1e-4)
    assert onnx_translator.info.step == eager.info.step


def test_an_exported_folder_is_an_ensemble_member_like_its_checkpoint(exported, ckpt):
    """fp32 on both sides: the folder and the checkpoint in one ensemble decode as the
    checkpoint twice, and the folder's card is the checkpoint's."""
    search = {"beam_size": 3, "n_best": 2, "precision": "fp32"}
    mixed = Translator.from_checkpoints([ckpt, exported], "cpu", **search)
    twice = Translator.from_checkpoints([ckpt, ckpt], "cpu", **search)
    assert mixed.backend == "onnx+torch" and twice.backend == "torch"
    for a, b in zip(twice.translate(LINES), mixed.translate(LINES), strict=True):
        assert [h.text for h in a.nbest] == [h.text for h in b.nbest]
        assert a.score == pytest.approx(b.score, abs=1e-4)
    assert mixed.info.card["member 2"] == mixed.info.card["member 1"]


def test_nmt_info_reads_an_exported_folders_card(exported, ckpt):
    from nmt.inference.describe import describe_model

    described = describe_model(exported)
    assert described["kind"] == "exported folder" and described["format_version"] == 2
    assert described["card"] == torch.load(ckpt, weights_only=True)["card"]
    assert described["exported_from"] == str(ckpt)


@pytest.mark.parametrize("search", [("search=greedy",), ()], ids=["greedy", "checkpoint-beam"])
def test_defaults_decode_the_same_on_every_cpu_kind(exported, ckpt, tmp_path, cpu_kind, search):
    """A user's check: the checkpoint and its exported folder through ``nmt-translate`` with
    their defaults give the same text on every CPU kind, and stderr says both ran fp32. (Before
    ``auto`` meant fp32 everywhere, a CPU with bf16 units decoded the checkpoint in bf16 and the
    texts differed.)"""
    src = tmp_path / "in.en"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    outputs = {}
    for name, model in (("onnx", exported), ("torch", ckpt)):
        out = tmp_path / f"{name}.ko"
        args = (
            f"ckpt={quote(model)}",
            f"input={quote(src)}",
            f"output={quote(out)}",
            "scores=true",
        )
        result = run_main("nmt.translate", *args, *search)
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith("precision: fp32 (") and f"backend {name}" in result.stderr
        outputs[name] = out.read_text(encoding="utf-8").splitlines()
    assert len(outputs["onnx"]) == len(LINES)
    for eager_line, onnx_line in zip(outputs["torch"], outputs["onnx"], strict=True):
        eager_score, eager_text = eager_line.split("\t")
        onnx_score, onnx_text = onnx_line.split("\t")
        assert eager_text == onnx_text
        assert float(eager_score) == pytest.approx(float(onnx_score), abs=1e-4)


def test_evaluate_accepts_the_folder_and_reports_the_precision(exported, tmp_path):
    report = tmp_path / "report.json"
    args = (f"ckpt={quote(exported)}", "split=test", "search=greedy", f"json={quote(report)}")
    result = run_main("nmt.evaluate", *args)
    assert result.returncode == 0, result.stderr
    assert "bleu" in result.stdout.lower()
    assert (
        "decoded in fp32 (onnxruntime runs the exported fp32 graphs), onnx on cpu" in result.stdout
    )
    decoding = json.loads(report.read_text())["systems"][0]["decoding"]
    assert decoding["precision"] == "fp32" and decoding["backend"] == "onnx"


def test_int8_export_translates(ckpt, tmp_path):
    out = tmp_path / "int8"
    result = run_main("nmt.export", f"ckpt={quote(ckpt)}", f"out={quote(out)}", "quantize=int8")
    assert result.returncode == 0, result.stderr
    graph = onnx.load(str(out / STEP_GRAPH))
    assert any(
        node.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for node in graph.graph.node
    )
    translations = Translator.from_checkpoint(out, "cpu", name="greedy").translate(LINES)
    assert len(translations) == len(LINES)


# --------------------------------------------------------------------------------------------
# Bad input: one line each


def one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_exporting_a_missing_checkpoint_is_one_line(tmp_path):
    missing = tmp_path / "none.pt"
    result = run_main("nmt.export", f"ckpt={quote(missing)}", f"out={quote(tmp_path / 'o')}")
    one_line_error(result, "checkpoint not found", str(missing))


@pytest.mark.parametrize("content", ["text", "tensor"])
def test_exporting_a_file_that_is_no_nmt_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "other.pt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    result = run_main("nmt.export", f"ckpt={quote(path)}", f"out={quote(tmp_path / 'o')}")
    one_line_error(result, str(path), "checkpoint")
    assert not (tmp_path / "o").exists()


def test_exporting_over_a_folder_that_is_not_an_export_is_one_line(ckpt, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = run_main("nmt.export", f"ckpt={quote(ckpt)}", f"out={quote(tmp_path)}")
    one_line_error(result, "out=", "not an exported model folder")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_folder_with_a_missing_graph_is_one_line(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    (folder / STEP_GRAPH).unlink()
    with pytest.raises(NMTError, match="decoder_step.onnx: missing"):
        Translator.from_checkpoint(folder)
    result = run_main("nmt.translate", f"ckpt={quote(folder)}", "input=-")
    one_line_error(result, str(folder / STEP_GRAPH), "missing")


def test_a_graph_that_does_not_match_the_manifest_is_one_line(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    data = bytearray((folder / ENCODER_GRAPH).read_bytes())
    data[-1] ^= 0xFF
    (folder / ENCODER_GRAPH).write_bytes(bytes(data))
    result = run_main("nmt.evaluate", f"ckpt={quote(folder)}", "split=test")
    one_line_error(result, str(folder / ENCODER_GRAPH), "does not match the manifest")


def test_a_folder_without_manifest_is_one_line(tmp_path):
    with pytest.raises(NMTError, match="manifest.json: missing"):
        Translator.from_checkpoint(tmp_path, backend="onnx")
    with pytest.raises(NMTError, match="backend: expected one of auto, torch, onnx"):
        Translator.from_checkpoint(tmp_path, backend="tensorrt")
