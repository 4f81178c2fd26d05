"""Score translations: hypothesis files against a reference, or decode with a checkpoint first.

    python -m nmt.evaluate hyp=out.ko ref=test.ko [json=report.json]
    python -m nmt.evaluate hyp=[a.ko,b.ko] ref=test.ko
    python -m nmt.evaluate ckpt=best.pt split=test [search=greedy] [out=hyp.ko]
    python -m nmt.evaluate ckpt=best.pt src=test.en ref=test.ko
    python -m nmt.evaluate ckpt=[a.pt,b.pt] split=test     # their ensemble

Every system gets the same report from :mod:`nmt.evaluation.metrics` that validation uses during training:
BLEU (ko-mecab, char, 13a), chrF and TER with their sacrebleu signatures, and the degeneracy
diagnostics (in ckpt mode with ``max_len_rate``, the share of hypotheses the decoder cut at its
length limit). The report is printed as a table and, with ``json=``, written as JSON; its layout
and the decoding and scoring are :mod:`nmt.evaluation.testset`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import EvaluateConfig, check_command
from nmt.core.errors import NMTError, exit_on_user_error, str_list
from nmt.core.io import write_json
from nmt.core.paths import CONFIG_DIR
from nmt.evaluation.testset import (
    evaluate_checkpoint,
    evaluate_files,
    format_report,
    record_test_scores,
)


# An absolute config path: "../configs" would be resolved as a Python package (and fail) whenever
# main is imported rather than run as __main__ (scripts/evaluate.py, the nmt-evaluate command).
@hydra.main(config_path=str(CONFIG_DIR), config_name="evaluate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: EvaluateConfig = check_command("evaluate", cfg)
    tokenizers = str_list(config.tokenizers, "tokenizers")
    if config.json is not None and not Path(config.json).parent.is_dir():
        raise NMTError(f"json={config.json}: folder {Path(config.json).parent} does not exist")
    if config.hyp is not None:
        ckpt_keys = [k for k in ("ckpt", "split", "src", "out") if getattr(config, k) is not None]
        if ckpt_keys:
            raise NMTError(
                f"hyp= scores files; {'=, '.join(ckpt_keys)}= belong to ckpt= mode (decode, then score)"
            )
        if config.ref is None:
            raise NMTError("hyp= needs ref=FILE, the reference translations")
        report = evaluate_files(str_list(config.hyp, "hyp"), _one_ref(config.ref), tokenizers)
    elif config.ckpt is not None:
        if (config.split is None) == (config.src is None):
            raise NMTError("ckpt= needs either split=train|valid|test or src=FILE ref=FILE")
        if config.split is not None and config.ref is not None:
            raise NMTError("split= reads the references from the corpus; leave out ref=")
        if config.src is not None and config.ref is None:
            raise NMTError("src= needs ref=FILE, the reference translations")
        report = evaluate_checkpoint(
            config.ckpt,
            config.search,  # the keys search= sets; the checkpoint's own values for the rest
            config.device,
            config.ensemble,
            config.markup,
            config.glossary,
            split=config.split,
            src_path=config.src,
            ref_path=None if config.ref is None else _one_ref(config.ref),
            out_path=config.out,
            tokenizers=tokenizers,
            progress=config.progress,
        )
    else:
        raise NMTError(
            "nothing to evaluate: give hyp=FILE ref=FILE, or ckpt=FILE with split= or src= ref="
        )
    print(format_report(report))
    if config.ckpt is not None:
        print(record_note(config, report))
    if config.json is not None:
        write_json(config.json, report)
        print(f"\nwrote {config.json}")


def record_note(config: EvaluateConfig, report: dict[str, Any]) -> str:
    """Record a whole split's scores in the checkpoint's model card (``record=true``, one
    checkpoint file); say what was done, or why not."""
    paths = str_list(config.ckpt, "ckpt")
    if not config.record:
        return "\nnot recorded in the model card (record=false)"
    if config.split is None or len(paths) > 1 or Path(paths[0]).is_dir():
        what = "a split= of the corpus" if config.split is None else "one checkpoint file"
        return f"\nnot recorded in a model card: only {what} is (record=false silences this)"
    key = record_test_scores(paths[0], report)
    return f"\nrecorded in {paths[0]}'s model card as tests.{key!r} (nmt-info shows it)"


def _one_ref(value: Any) -> str:
    refs = str_list(value, "ref")
    if len(refs) != 1:
        raise NMTError(f"ref: expected one reference file, got {len(refs)}")
    return refs[0]


if __name__ == "__main__":
    main()
