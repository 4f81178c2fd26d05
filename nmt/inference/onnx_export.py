"""A checkpoint as two ONNX graphs for onnxruntime, checked against eager PyTorch.

    encoder.onnx       src (batch, src_len) int64, src_lengths (batch,) int64
                       → values (batch, src_len, value_size), keys (batch, src_len, key_size),
                         src_mask bool (batch, src_len), hidden (num_layers, batch, hidden) = s_0
    decoder_step.onnx  prev_tokens (batch,), hidden [, cell] [, attn_vector], values, keys, src_mask
                       → logits (batch, V), attn_weights (batch, src_len),
                         hidden_out [, cell_out] [, attn_vector_out]

``cell`` for an LSTM decoder, ``attn_vector`` (h̃_{t-1}) for Luong input feeding; an input a
graph does not read (``keys`` of ``location``) is left out by the exporter. Batch and source
length are dynamic axes. The search loop stays in Python: :mod:`nmt.inference.onnx_backend` runs
these graphs behind the model's step API, so :mod:`nmt.inference.search` decodes exported and
eager models with the same code. Beside the graphs (:func:`export_checkpoint`): ``src.model`` /
``tgt.model`` (SentencePiece) and ``manifest.json`` (the run's config, the SHA-256 of the source
checkpoint and of every file, the exporter, torch and opset, the parity measured at export).

Exporter: ``legacy`` is ``torch.onnx.export(..., dynamo=False)``, the TorchScript-tracing
exporter; ``dynamo`` is the torch.export-based one (:data:`EXPORTERS`). Only legacy passes the
parity check on this model (docs/export.md has both results).

After exporting, the graphs are checked against eager PyTorch on batches whose sizes and lengths
differ from the export example (:func:`check_parity`): an fp32 export whose log-probabilities
differ by more than :data:`TOLERANCE` is refused. ``quantize="int8"`` then applies onnxruntime's
dynamic int8 quantization (weights int8, activations quantized per call). onnx and onnxruntime
are imported only where a graph is written or quantized (the optional ``onnx`` extra).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nmt.core.errors import NMTError, os_error_behind
from nmt.core.io import write_error, write_json
from nmt.core.special_ids import BOS_ID, PAD_ID
from nmt.data.pipeline import file_sha256
from nmt.inference.onnx_backend import (
    ENCODER_GRAPH,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    SRC_VOCAB,
    STEP_GRAPH,
    TGT_VOCAB,
    OnnxSeq2Seq,
    StateLayout,
    is_exported_folder,
)
from nmt.models import DecoderState, Memory, Seq2Seq
from nmt.models.card import card_of
from nmt.models.checkpoint import load_checkpoint, model_from_checkpoint

FORMATS = ("onnx",)  # what nmt-export writes
EXPORTERS = ("legacy", "dynamo")  # the choices of nmt-export's exporter= (nmt.config.schema)
QUANTIZATIONS = (None, "int8")
TOLERANCE = 1e-4  # max |Δ log-prob| an fp32 export may differ from eager PyTorch
EXPORT_LENGTHS = (7, 5)  # the example batch the graphs are traced with
# checked after export: other batch sizes, longer and shorter sources, a one-token source
CHECK_LENGTHS = ((13, 4, 11, 1, 9), (3,), (6, 6, 2))


# --------------------------------------------------------------------------------------------
# The two graphs: thin wrappers over the model's own encode / init_state / step


class EncoderGraph(nn.Module):
    """src, src_lengths → values, keys, src_mask, and s_0 for a recurrent decoder (the bridge
    runs here); a Transformer decoder's keys are its layers' cross-attention [K ; V]."""

    def __init__(self, model: Seq2Seq, layout: StateLayout):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        memory = self.model.encode(src, src_lengths)
        if self.layout.has_cache:
            return memory.values, memory.keys, memory.src_mask
        state = self.model.init_state(memory)
        return memory.values, memory.keys, memory.src_mask, state.hidden


class StepGraph(nn.Module):
    """prev_tokens, state tensors, values, keys, src_mask → logits, attn_weights, new state."""

    def __init__(self, model: Seq2Seq, layout: StateLayout):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, prev_tokens: Tensor, first: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        """``first`` is the cache (Transformer) or ``hidden``; ``rest`` the other state tensors
        of :meth:`StateLayout.state_names`, then values, keys, src_mask."""
        rest_list = list(rest)
        if self.layout.has_cache:
            state_in = DecoderState(None, None, None, rest_list.pop(0), first)
        else:
            cell = rest_list.pop(0) if self.layout.has_cell else None
            attn_vector = rest_list.pop(0) if self.layout.has_attn_vector else None
            state_in = DecoderState(first, cell, attn_vector, rest_list.pop(0))
        values, keys, src_mask = rest_list
        # Memory.final feeds only the bridge, which ran in the encoder graph: unused here
        memory = Memory(values, keys, src_mask, values[:, 0])
        out = self.model.step(prev_tokens, state_in, memory)
        state = {
            "hidden": out.state.hidden,
            "cell": out.state.cell,
            "attn_vector": out.state.attn_vector,
            "position": out.state.position,
            "cache": out.state.cache,
        }
        return (out.logits, out.attn_weights, *(state[n] for n in self.layout.state_names()))


def example_batch(lengths: Sequence[int], vocab_size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random source ids (batch, max(lengths)), ``<pad>`` after each length; lengths (batch,)."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab_size, (len(lengths), max(lengths)), generator=generator)
    src_lengths = torch.tensor(lengths)
    positions = torch.arange(src.size(1))
    src = src.masked_fill(positions >= src_lengths[:, None], PAD_ID)
    return src, src_lengths


def export_graphs(
    model: Seq2Seq, layout: StateLayout, folder: Path, exporter: str, opset: int
) -> None:
    """Write ``encoder.onnx`` and ``decoder_step.onnx`` for ``model`` (eval mode) into folder."""
    if exporter not in EXPORTERS:
        raise NMTError(f"exporter: expected one of {', '.join(EXPORTERS)}; got {exporter!r}")
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 17:
        raise NMTError(f"opset: expected an integer >= 17; got {opset!r}")
    if exporter == "dynamo" and opset < 18:
        raise NMTError(f"opset: exporter=dynamo writes opset 18 or newer; got {opset}")
    model.eval()
    src, src_lengths = example_batch(EXPORT_LENGTHS, model.encoder.embed.num_embeddings)
    batch_src = {0: "batch", 1: "src_len"}
    _export(
        EncoderGraph(model, layout),
        (src, src_lengths),
        folder / ENCODER_GRAPH,
        ["src", "src_lengths"],
        layout.encoder_outputs(),
        {
            "src": batch_src,
            "src_lengths": {0: "batch"},
            "values": batch_src,
            "keys": batch_src,
            "src_mask": batch_src,
            "hidden": {1: "batch"},
        },
        exporter,
        opset,
    )
    with torch.no_grad():
        memory = model.encode(src, src_lengths)
        state = model.init_state(memory)
        prev = torch.full((src.size(0),), BOS_ID)
        if layout.has_cache:  # traced with a cache of 2 steps, so its length is not frozen at 0
            for _ in range(2):
                state = model.step(prev, state, memory).state
    names = layout.state_names()
    tensors = {
        "hidden": state.hidden,
        "cell": state.cell,
        "attn_vector": state.attn_vector,
        "position": state.position,
        "cache": state.cache,
    }
    batch_axis = {
        "hidden": {1: "batch"},
        "cell": {1: "batch"},
        "attn_vector": {0: "batch"},
        "position": {0: "batch"},
        "cache": {0: "batch", 1: "steps"},
    }
    axes = {
        "prev_tokens": {0: "batch"},
        "values": batch_src,
        "keys": batch_src,
        "src_mask": batch_src,
        "logits": {0: "batch"},
        "attn_weights": {0: "batch", 1: "src_len"},
    }
    for name in names:
        axes[name] = axes[f"{name}_out"] = batch_axis[name]
    if layout.has_cache:  # one step longer than the input: its own name
        axes["cache_out"] = {0: "batch", 1: "steps_out"}
    _export(
        StepGraph(model, layout),
        (prev, *(tensors[n] for n in names), memory.values, memory.keys, memory.src_mask),
        folder / STEP_GRAPH,
        ["prev_tokens", *names, "values", "keys", "src_mask"],
        ["logits", "attn_weights", *(f"{n}_out" for n in names)],
        axes,
        exporter,
        opset,
    )


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    exporter: str,
    opset: int,
) -> None:
    """``torch.onnx.export`` of ``module`` at the example ``args`` into ``path``: the legacy
    (TorchScript-tracing) exporter with ``dynamic_axes``, or the dynamo one with the same axes
    as torch.export Dims. Tracing warnings are silenced: the parity check decides."""
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes: the check below decides
        kwargs: dict[str, Any] = {"dynamo": False, "dynamic_axes": dynamic_axes}
        if exporter == "dynamo":
            shapes = _dynamic_shapes(input_names, dynamic_axes)
            if isinstance(module, StepGraph):  # forward(prev_tokens, hidden, *rest)
                shapes = (shapes[0], shapes[1], tuple(shapes[2:]))
            kwargs = {"dynamo": True, "dynamic_shapes": shapes, "external_data": False}
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            **kwargs,
        )


def _dynamic_shapes(
    input_names: list[str], dynamic_axes: dict[str, dict[int, str]]
) -> tuple[dict[int, Any], ...]:
    """The legacy exporter's named axes as torch.export Dims (one Dim per name)."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    return tuple(
        {axis: dims.setdefault(name, Dim(name)) for axis, name in dynamic_axes[n].items()}
        for n in input_names
    )


def quantize_int8(folder: Path) -> None:
    """Both graphs → dynamic int8 (onnxruntime.quantization.quantize_dynamic), in place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in (ENCODER_GRAPH, STEP_GRAPH):
        path = folder / name
        fp32 = path.with_name(path.stem + ".fp32.onnx")
        path.rename(fp32)
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
        fp32.unlink()


# --------------------------------------------------------------------------------------------
# Parity with eager PyTorch


@torch.inference_mode()
def compare_with_eager(
    model: Seq2Seq, exported: OnnxSeq2Seq, lengths: Sequence[int], steps: int = 6, seed: int = 0
) -> dict[str, float]:
    """Run both on one random batch through ``steps`` decoder steps and return the largest
    differences: ``log_prob`` (max over rows, steps and the vocabulary of |Δ log_softmax(logits)|),
    ``attn_weights`` and ``memory`` (values and keys).

    Each model keeps its own state, so errors accumulate as in decoding; between steps both
    states and memories are reordered by the same random rows (repeats allowed), as beam search
    does, and fed the same random tokens.
    """
    model.eval()
    src, src_lengths = example_batch(lengths, model.encoder.embed.num_embeddings, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    memories = [m.encode(src, src_lengths) for m in (model, exported)]
    states = [m.init_state(mem) for m, mem in zip((model, exported), memories, strict=True)]
    worst = {
        "memory": max(
            (a - b).abs().max().item()
            for a, b in zip(memories[0][:2], memories[1][:2], strict=True)
        ),
        "log_prob": 0.0,
        "attn_weights": 0.0,
    }
    prev = torch.full((src.size(0),), BOS_ID)
    vocab = model.tgt_embed.num_embeddings
    for _ in range(steps):
        outs = [
            m.step(prev, s, mem)
            for m, s, mem in zip((model, exported), states, memories, strict=True)
        ]
        log_probs = [torch.log_softmax(o.logits.float(), dim=-1) for o in outs]
        worst["log_prob"] = max(worst["log_prob"], (log_probs[0] - log_probs[1]).abs().max().item())
        attn = (outs[0].attn_weights - outs[1].attn_weights).abs().max().item()
        worst["attn_weights"] = max(worst["attn_weights"], attn)
        rows = torch.randint(0, src.size(0), (src.size(0),), generator=generator)
        states = [o.state.index_select(rows) for o in outs]
        memories = [mem.index_select(rows) for mem in memories]
        prev = torch.randint(4, vocab, (src.size(0),), generator=generator)
    return worst


def check_parity(model: Seq2Seq, exported: OnnxSeq2Seq) -> dict[str, Any]:
    """:func:`compare_with_eager` at each of :data:`CHECK_LENGTHS`; the worst of each."""
    results = []
    for lengths in CHECK_LENGTHS:
        try:
            results.append(compare_with_eager(model, exported, lengths))
        except Exception as err:  # onnxruntime's own types (Fail, InvalidArgument, …), not
            # RuntimeErrors: a graph that cannot run these shapes, e.g. a dimension frozen at export
            detail = str(err).splitlines()[0][:200]
            raise NMTError(
                f"the exported graphs fail on a batch of source lengths {list(lengths)} "
                f"(exported with {list(EXPORT_LENGTHS)}): {detail}"
            ) from None
    worst = {key: max(r[key] for r in results) for key in results[0]}
    # the eager side runs outside any autocast: the exported graphs are fp32, and so is the
    # reference they are held to, on every CPU
    batches = [list(lengths) for lengths in CHECK_LENGTHS]
    return {"batches": batches, "steps": 6, "eager_precision": "fp32", **worst}


# --------------------------------------------------------------------------------------------
# A checkpoint → an exported folder


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    exporter: str = "legacy",
    opset: int = 17,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Export ``ckpt`` into the folder ``out`` (replaced atomically if it is an earlier export);
    return the manifest. Raises NMTError if the fp32 graphs fail the parity check."""
    if quantize not in QUANTIZATIONS:
        raise NMTError(f"quantize: expected null or int8; got {quantize!r}")
    ckpt, out = Path(ckpt), Path(out)
    checkpoint = load_checkpoint(ckpt)
    missing = [
        k
        for k in ("model", "config", "vocab")
        if not isinstance(checkpoint, dict) or k not in checkpoint
    ]
    if missing:
        raise NMTError(f"{ckpt}: not an nmt checkpoint (no {', '.join(missing)} entry)")
    _check_out(out)
    # config: the run's config as the checkpoint stores it (a plain, resolved dict)
    model, src_vocab, tgt_vocab, config = model_from_checkpoint(checkpoint, ckpt, "cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    work.chmod(0o755)  # mkdtemp's 0700 would make the export private to its writer
    try:
        manifest = export_model(model, work, config, exporter, opset, quantize)
        (work / SRC_VOCAB).write_bytes(src_vocab.model_bytes())
        (work / TGT_VOCAB).write_bytes(tgt_vocab.model_bytes())
        progress = checkpoint.get("progress") or {}
        manifest["source"] = {
            "checkpoint": str(ckpt),
            "sha256": file_sha256(ckpt),
            "step": progress.get("step"),
            "best_score": progress.get("best_score"),
            "minutes": progress.get("minutes"),
            "format_version": checkpoint.get("format_version"),
        }
        manifest["card"] = card_of(checkpoint)  # what the checkpoint said about itself
        manifest["files"] = {
            name: {"sha256": file_sha256(work / name), "bytes": (work / name).stat().st_size}
            for name in (ENCODER_GRAPH, STEP_GRAPH, SRC_VOCAB, TGT_VOCAB)
        }
        write_json(work / MANIFEST, manifest)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except Exception as err:  # the graphs, the vocabularies: a full disk is one line
        cause = os_error_behind(err)
        if cause is None:
            raise
        raise write_error(out, cause) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _check_out(out: Path) -> None:
    if out.exists() and not (is_exported_folder(out) or (out.is_dir() and not any(out.iterdir()))):
        raise NMTError(
            f"out={out}: exists and is not an exported model folder (no {MANIFEST}); "
            "choose a new or empty folder"
        )


def export_model(
    model: Seq2Seq,
    folder: Path,
    config: dict[str, Any],
    exporter: str = "legacy",
    opset: int = 17,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Write both graphs of ``model`` into ``folder``, check them against eager PyTorch, and
    return the manifest's description of them (no vocabularies or checksums yet)."""
    import onnx
    import onnxruntime

    encoder = config["model"].get("encoder") or {}
    if encoder.get("layer_norm") == "cell":
        # its time loop runs in Python: a traced graph would keep the example's source length
        raise NMTError(
            "model.encoder.layer_norm=cell: an encoder with layer-normalised cells cannot be "
            "exported yet (its time loop is Python, which tracing unrolls to one source "
            "length); layer_norm=between exports, and so does a decoder with cell"
        )
    layout = StateLayout.from_model_config(config["model"])
    export_graphs(model, layout, folder, exporter, opset)
    manifest = {"config": config}
    parity = check_parity(model, OnnxSeq2Seq(folder, manifest, threads=1))
    if parity["log_prob"] > TOLERANCE:
        raise NMTError(
            f"exporter={exporter}: the graphs differ from eager PyTorch by {parity['log_prob']:.3g} "
            f"in log-probability (tolerance {TOLERANCE:g}) at batch sizes and lengths other than "
            f"the export example; use exporter=legacy"
        )
    if quantize == "int8":
        quantize_int8(folder)
        parity["int8"] = check_parity(model, OnnxSeq2Seq(folder, manifest, threads=1))
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": config,
        "exporter": {
            "name": exporter,
            "call": f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
            "opset": onnx.load(str(folder / STEP_GRAPH)).opset_import[0].version,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "quantization": "int8 dynamic (onnxruntime quantize_dynamic, QInt8 weights)"
        if quantize
        else None,
        "state": layout.__dict__,
        "parity": parity,
    }
