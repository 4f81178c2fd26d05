"""Quality against training budget: every step checkpoint of a run, scored on valid and test.

    nmt-quality-curve runs=[RUN] [beam=5] [max_sentences=200]
    nmt-quality-curve runs=[RUN_A,RUN_B] labels=[default,joeynmt_ref] out=DIR

A run keeps every validation's ``checkpoints/stepNNNNNNN.pt`` when trained with
``trainer.keep_every_validation=true`` (or a ``trainer.keep_last`` as large as its number of
validations). Each one is decoded on the valid and the test split of the run's corpus — the run's
own search settings, or ``beam=N`` — and scored with BLEU (ko-mecab) and chrF. Its x coordinate is
``progress.minutes``, the run's wall-clock when the checkpoint was written (validation time
included, across resumes). How: :mod:`nmt.evaluation.quality_curve`.

Per run it writes ``RUN/quality_curve.md`` (one row per checkpoint), ``RUN/quality_curve.json``
and ``RUN/quality_curve.png`` (BLEU and chrF against minutes, valid and test). With several runs
``out=DIR`` gets the same three files for all of them, on one figure. A checkpoint already in
``RUN/quality_curve.json`` with the same search settings and ``max_sentences`` is not decoded
again (``fresh=true`` decodes everything).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import QualityCurveConfig, check_command
from nmt.core.errors import NMTError, exit_on_user_error, str_list
from nmt.core.paths import CONFIG_DIR
from nmt.core.runtime import pick_device
from nmt.evaluation.quality_curve import OUTPUTS, markdown_table, score_run, write_report


def run_dirs_and_labels(config: QualityCurveConfig) -> tuple[list[Path], list[str]]:
    """The run dirs and their labels, after the checks that involve several keys (one line
    naming the key)."""
    if config.runs is None:
        raise NMTError("runs: no value; give the run dirs, runs=[RUN] or runs=[RUN_A,RUN_B]")
    run_dirs = [Path(p) for p in str_list(config.runs, "runs")]
    labels = None if config.labels is None else str_list(config.labels, "labels")
    if labels is not None and len(labels) != len(run_dirs):
        raise NMTError(f"labels: {len(labels)} given for {len(run_dirs)} run dirs")
    if len(run_dirs) > 1 and config.out is None:
        raise NMTError("runs: several run dirs; give out=DIR for the report of all of them")
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise NMTError(f"runs: {run_dir}: no such directory")
    return run_dirs, labels or [d.resolve().name for d in run_dirs]


@hydra.main(config_path=str(CONFIG_DIR), config_name="quality_curve", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: QualityCurveConfig = check_command("quality_curve", cfg)
    run_dirs, labels = run_dirs_and_labels(config)
    device = str(pick_device(config.device, "device"))
    curves = []
    for run_dir, label in zip(run_dirs, labels, strict=True):
        curve = score_run(run_dir, label, config.beam, config.max_sentences, device, config.fresh)
        write_report(run_dir, [curve])
        curves.append(curve)
    print(markdown_table(curves))
    written = [run_dir / OUTPUTS[0] for run_dir in run_dirs]
    if config.out is not None:
        write_report(Path(config.out), curves)
        written.append(Path(config.out) / OUTPUTS[0])
    print(f"\nwrote {', '.join(map(str, written))} (and .json, .png beside each)")


if __name__ == "__main__":
    main()
