"""Compare the runs of a sweep: ``nmt-compare sweep=SWEEP_DIR [out=DIR] [evaluate_test=true]``.

A sweep dir is what ``python -m nmt.train -m …`` leaves in ``hydra.sweep.dir``: one run dir per
job, found as every folder below SWEEP_DIR, at any depth, that holds ``.hydra/config.yaml``. From
each run it reads the variant and seed (its config), the validations, the training throughput
(TensorBoard), the parameters (its checkpoint) and ``test_scores.json``; ``evaluate_test=true``
first decodes each run's ``best.pt`` on the test split into ``test_scores.json``,
``test_hyps.txt`` and ``test_refs.txt`` (existing ones are reused; ``max_sentences=N``: only the
first N sentences; ``markup=false``: inline markup translated as text, not protected as
``nmt-evaluate`` protects it by default). What is read and how: :mod:`nmt.evaluation.sweep`.

Runs whose configs are equal but for ``seed`` are one *variant*: mean ± standard deviation over
its runs, and a significance test of its test BLEU (ko-mecab) and chrF against the baseline
variant (``baseline=``, by default the first row): sacrebleu's paired bootstrap resampling
(``bs``) or paired approximate randomisation (``ar``), ``significance=``, ``samples=N``
(:mod:`nmt.evaluation.significance`).

It writes ``comparison.md``, ``comparison.json``, ``variants.json`` and the plots ``bleu.png``,
``chrf.png`` and ``valid_bleu.png`` to SWEEP_DIR or ``out=DIR``, and prints the two tables.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import CompareConfig, check_command
from nmt.core.errors import NMTError, exit_on_user_error
from nmt.core.paths import CONFIG_DIR
from nmt.core.runtime import pick_device
from nmt.evaluation.sweep import PLOTS, compare, markdown_table, variant_table


@hydra.main(config_path=str(CONFIG_DIR), config_name="compare", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: CompareConfig = check_command("compare", cfg)
    if config.sweep is None:
        raise NMTError("sweep: no value; give the sweep's folder (its hydra.sweep.dir), sweep=DIR")
    device = str(pick_device(config.device, "device"))
    sweep_dir = Path(config.sweep)
    out_dir = Path(config.out) if config.out is not None else sweep_dir
    runs, variants = compare(
        sweep_dir,
        out_dir,
        config.evaluate_test,
        device,
        baseline=config.baseline,
        test=config.significance,
        samples=config.samples,
        max_sentences=config.max_sentences,
        markup=config.markup,
    )
    print(markdown_table(runs))
    print()
    print(variant_table(variants))
    print(f"\nwrote {out_dir / 'comparison.md'}, comparison.json, variants.json and "
          f"{', '.join(PLOTS)}")  # fmt: skip


if __name__ == "__main__":
    main()
