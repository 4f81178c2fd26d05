"""``python -m nmt.export ckpt=… format=onnx out=DIR``: a checkpoint as two ONNX graphs.

Writes ``encoder.onnx`` and ``decoder_step.onnx`` (their inputs and outputs:
:mod:`nmt.inference.onnx_export`), ``src.model`` / ``tgt.model`` (SentencePiece) and
``manifest.json`` into ``out``; then ``nmt-translate ckpt=DIR`` and ``nmt-evaluate ckpt=DIR``
decode with onnxruntime (:mod:`nmt.inference.onnx_backend`).

Exporter: ``exporter=legacy`` (default) is ``torch.onnx.export(..., dynamo=False)``, the
TorchScript-tracing exporter; ``exporter=dynamo`` is the torch.export-based one. Only legacy
passes the parity check on this model (docs/export.md has both results).

After exporting, the graphs are checked against eager PyTorch on batches whose sizes and lengths
differ from the export example (:func:`nmt.inference.onnx_export.check_parity`): an fp32 export
whose log-probabilities differ by more than 1e-4 is refused. ``quantize=int8`` then applies
onnxruntime's dynamic int8 quantization (weights int8, activations quantized per call).
Speed and BLEU beside eager PyTorch: ``scripts/bench_export.py``
(:mod:`nmt.evaluation.export_benchmark`).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import ExportConfig, check_command
from nmt.core.errors import exit_on_user_error
from nmt.core.paths import CONFIG_DIR
from nmt.inference.onnx_backend import ENCODER_GRAPH, MANIFEST, SRC_VOCAB, STEP_GRAPH, TGT_VOCAB
from nmt.inference.onnx_export import export_checkpoint


@hydra.main(config_path=str(CONFIG_DIR), config_name="export", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: ExportConfig = check_command("export", cfg)
    manifest = export_checkpoint(
        config.ckpt, config.out, config.exporter, config.opset, config.quantize
    )
    parity = manifest["parity"]
    print(
        f"exported {config.ckpt} to {config.out}: {ENCODER_GRAPH}, {STEP_GRAPH} "
        f"(exporter {config.exporter}, opset {manifest['exporter']['opset']}), {SRC_VOCAB}, "
        f"{TGT_VOCAB}, {MANIFEST}"
    )
    print(
        f"parity with {parity['eager_precision']} eager PyTorch (batches {parity['batches']}, "
        f"{parity['steps']} steps): "
        f"max |Δ log-prob| {parity['log_prob']:.2e}, max |Δ attention| "
        f"{parity['attn_weights']:.2e}"
    )
    if "int8" in parity:
        print(f"int8 vs fp32 eager: max |Δ log-prob| {parity['int8']['log_prob']:.3g}")


if __name__ == "__main__":
    main()
