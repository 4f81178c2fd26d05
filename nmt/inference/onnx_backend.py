"""An exported model folder (``nmt-export``) run by onnxruntime behind the model's step API.

:class:`OnnxSeq2Seq` has the three methods the searches call on a :class:`~nmt.models.Seq2Seq`::

    memory = model.encode(src, src_lengths)          # encoder.onnx
    state = model.init_state(memory)
    logits, attn_weights, state = model.step(prev_tokens, state, memory)   # decoder_step.onnx

and returns the same :class:`~nmt.models.Memory` and :class:`~nmt.models.DecoderState` of plain
CPU torch tensors, so their ``index_select`` (beam reordering, finished sentences leaving the
batch) and all of :mod:`nmt.inference.search` run unchanged: only the step function differs. Tensors go to
onnxruntime as numpy views and come back with ``torch.from_numpy``, without copies.

One difference in what the tuples hold: the bridge runs inside ``encoder.onnx``, so
``Memory.final`` holds its output, the initial decoder state s_0 laid out batch-first
(batch, num_layers * hidden), instead of the bridge's input; :meth:`OnnxSeq2Seq.init_state`
only reshapes it.

A folder holds ``manifest.json`` (config, exporter, opset, SHA-256 of every file it lists and of
the source checkpoint), ``encoder.onnx``, ``decoder_step.onnx`` and the SentencePiece models
``src.model`` / ``tgt.model``. Loading checks every file against the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.core.errors import NMTError
from nmt.data.pipeline import file_sha256
from nmt.data.vocab import Vocab
from nmt.models import DecoderState, Memory, StepOutput

MANIFEST = "manifest.json"
ENCODER_GRAPH = "encoder.onnx"
STEP_GRAPH = "decoder_step.onnx"
SRC_VOCAB = "src.model"
TGT_VOCAB = "tgt.model"
FORMAT_NAME = "nmt-onnx"
FORMAT_VERSION = 1


def is_exported_folder(path: str | Path) -> bool:
    """A folder with a ``manifest.json``: what ``nmt-export`` writes."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


@dataclass(frozen=True)
class StateLayout:
    """The decoder state's shape, from the model config: which tensors the step graph takes."""

    num_layers: int
    hidden_size: int
    has_cell: bool  # LSTM memory cell
    has_attn_vector: bool  # Luong input feeding: h̃_{t-1} is part of the state
    has_cache: bool = False  # the Transformer: [K ; V] of the steps so far instead of an RNN state

    @classmethod
    def from_model_config(cls, model_cfg: dict[str, Any]) -> StateLayout:
        dec = model_cfg["decoder"]
        return cls(
            num_layers=dec["num_layers"],
            hidden_size=dec["hidden_size"],
            has_cell=dec.get("rnn_type") == "lstm",
            has_attn_vector=dec["style"] == "luong" and dec["input_feeding"],
            has_cache=dec["style"] == "transformer",
        )

    @property
    def cache_width(self) -> int:
        """L·2·d: every layer's self-attention keys and values of one step."""
        return self.num_layers * 2 * self.hidden_size

    def state_names(self) -> list[str]:
        """The state tensors in graph order (inputs; the step graph outputs them + ``_out``)."""
        if self.has_cache:
            return ["cache", "position"]
        return [
            "hidden",
            *(["cell"] if self.has_cell else []),
            *(["attn_vector"] if self.has_attn_vector else []),
            "position",  # the target step t (local attention's window centre; counted always)
        ]

    def encoder_outputs(self) -> list[str]:
        """What the encoder graph returns: the memory, and s_0 for a recurrent decoder."""
        return ["values", "keys", "src_mask", *([] if self.has_cache else ["hidden"])]


def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder/manifest.json`` checked against the files beside it (one NMTError line each)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise NMTError(f"{folder}: no such exported model folder")
    if not path.is_file():
        raise NMTError(f"{path}: missing; is {folder} a folder written by nmt-export?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NMTError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise NMTError(f"{path}: expected an {FORMAT_NAME} manifest (key 'format')")
    if manifest.get("version") != FORMAT_VERSION:
        raise NMTError(
            f"{path}: format version {manifest.get('version')!r}; this code reads {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise NMTError(f"{path}: key 'files' missing")
    for name in (ENCODER_GRAPH, STEP_GRAPH, SRC_VOCAB, TGT_VOCAB):
        file = folder / name
        if name not in files:
            raise NMTError(f"{path}: files.{name} missing")
        if not file.is_file():
            raise NMTError(f"{file}: missing; the manifest lists it (export the model again)")
        actual = file_sha256(file)
        if actual != files[name]["sha256"]:
            raise NMTError(
                f"{file}: SHA-256 {actual[:12]}… does not match the manifest's "
                f"{files[name]['sha256'][:12]}… (changed or partly copied; export again)"
            )
    return manifest


def _session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise NMTError(
            f"{path}: running an exported model needs onnxruntime (pip install 'nmt[onnx]')"
        ) from None

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy())


class OnnxSeq2Seq:
    """The step API of :class:`~nmt.models.Seq2Seq` on two onnxruntime sessions (CPU).

    ``threads``: onnxruntime intra-op threads; default torch's current count, so a comparison
    with eager PyTorch uses the same number.
    """

    training = False  # decode_ids saves and restores the mode; an exported graph has no other

    def __init__(self, folder: str | Path, manifest: dict[str, Any], threads: int | None = None):
        folder = Path(folder)
        threads = threads or torch.get_num_threads()
        self.layout = StateLayout.from_model_config(manifest["config"]["model"])
        self.encoder = _session(folder / ENCODER_GRAPH, threads)
        self.decoder = _session(folder / STEP_GRAPH, threads)
        # the exporter drops inputs a graph does not read (e.g. keys for location): feed by name
        self.step_inputs = {i.name for i in self.decoder.get_inputs()}

    def eval(self) -> OnnxSeq2Seq:
        return self

    def train(self, mode: bool = True) -> OnnxSeq2Seq:
        if mode:
            raise NMTError("an exported (ONNX) model cannot be trained; use the checkpoint")
        return self

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Memory:
        """src (batch, src_len) long; src_lengths (batch,) → Memory, ``final`` = s_0 batch-first."""
        values, keys, src_mask, *hidden = self.encoder.run(
            None, {"src": _numpy(src), "src_lengths": _numpy(src_lengths.long())}
        )
        if hidden:  # s_0 of a recurrent decoder, batch first: (batch, L*H)
            final = torch.from_numpy(hidden[0]).transpose(0, 1).reshape(src.size(0), -1)
        else:  # the Transformer decoder reads no final state
            final = torch.zeros(src.size(0), 0)
        return Memory(
            torch.from_numpy(values), torch.from_numpy(keys), torch.from_numpy(src_mask), final
        )

    def init_state(self, memory: Memory) -> DecoderState:
        """s_0 (num_layers, batch, hidden); an LSTM's cell starts equal to it; h̃_0 = 0."""
        batch = memory.final.size(0)
        layout = self.layout
        position = torch.zeros(batch, dtype=torch.long)  # t = 0, as the decoder's first_position
        if layout.has_cache:  # nothing cached yet: (batch, 0, L·2·d)
            return DecoderState(
                None, None, None, position, torch.zeros(batch, 0, layout.cache_width)
            )
        hidden = memory.final.view(batch, layout.num_layers, layout.hidden_size)
        hidden = hidden.transpose(0, 1).contiguous()  # (num_layers, batch, hidden)
        attn_vector = (
            hidden.new_zeros(batch, layout.hidden_size) if layout.has_attn_vector else None
        )
        return DecoderState(hidden, hidden if layout.has_cell else None, attn_vector, position)

    def step(self, prev_tokens: torch.Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        """One decoder step: prev_tokens (batch,) → logits (batch, V), attn_weights
        (batch, src_len), the next state."""
        feeds = {
            "prev_tokens": prev_tokens,
            "hidden": state.hidden,
            "cell": state.cell,
            "attn_vector": state.attn_vector,
            "position": state.position,
            "cache": state.cache,
            "values": memory.values,
            "keys": memory.keys,
            "src_mask": memory.src_mask,
        }
        outputs = self.decoder.run(
            None, {name: _numpy(t) for name, t in feeds.items() if name in self.step_inputs}
        )
        logits, attn_weights, *state_out = (torch.from_numpy(o) for o in outputs)
        named = dict(zip(self.layout.state_names(), state_out, strict=True))
        new_state = DecoderState(
            named.get("hidden"),
            named.get("cell"),
            named.get("attn_vector"),
            named["position"],
            named.get("cache"),
        )
        return StepOutput(logits, attn_weights, new_state)


def load_exported(
    folder: str | Path, threads: int | None = None
) -> tuple[OnnxSeq2Seq, Vocab, Vocab, dict[str, Any]]:
    """``(model, src_vocab, tgt_vocab, manifest)`` from an exported folder, files checked."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    src_vocab = Vocab(model_proto=(folder / SRC_VOCAB).read_bytes())
    tgt_vocab = Vocab(model_proto=(folder / TGT_VOCAB).read_bytes())
    return OnnxSeq2Seq(folder, manifest, threads), src_vocab, tgt_vocab, manifest
