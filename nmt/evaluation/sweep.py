"""Compare the runs of a sweep: their figures, one row per run and per variant, and plots.

A sweep dir is what ``python -m nmt.train -m …`` leaves in ``hydra.sweep.dir``: one run dir per
job (by default named after its overrides with each ``/`` turned into ``.``, e.g.
``model.attention=dot,model.encoder=lstm``; see ``hydra.sweep.subdir`` in configs/train.yaml),
found here as every folder below SWEEP_DIR, at any depth, that holds ``.hydra/config.yaml``
(:data:`nmt.core.run_dir.RUN_CONFIG`). A run's name is its path relative to SWEEP_DIR. From each
run dir it reads

* ``.hydra/config.yaml``: the variant, ``model.attention.score`` (with ``model.attention.type``
  and ``window`` when local) × ``model.encoder.rnn_type`` × ``model.decoder.style``, and the seed;
* ``validations.jsonl``: the best validation BLEU, the valid BLEU curve, and the attention
  statistics (entropy, diagonal mass, coverage deviation) of the last validation;
* ``tensorboard/``: the median of ``train/tokens_per_s`` (target tokens per second);
* ``checkpoints/best.pt`` (else ``last.pt``): the number of parameters, counted from the model's
  tensors (a tied matrix once);
* ``test_scores.json``: the test split's scores. It is the report
  :mod:`nmt.evaluation.testset` makes, the same as ``nmt-evaluate
  ckpt=RUN/checkpoints/best.pt split=test json=RUN/test_scores.json`` with the run's search
  settings (inline markup protected, as there by default; ``markup=false`` in both translates it
  as text); :func:`evaluate_test` writes it for a run that has a ``best.pt`` and no
  ``test_scores.json`` made with the same ``markup`` yet (an existing one is reused);
* ``test_hyps.txt`` and ``test_refs.txt``: the test hypotheses and the references as scored,
  one per line, written by :func:`evaluate_test` beside ``test_scores.json`` (when either is
  missing the run is decoded again), read by the significance test.

Runs whose configs are equal but for ``seed`` are one *variant*: the variant table gives each
figure as mean ± standard deviation over its runs (the sample standard deviation, n − 1), and a
significance test of its test BLEU (ko-mecab) and chrF against the baseline variant (by default
the first row), :mod:`nmt.evaluation.significance`'s paired test on the seeds' pooled outputs.
p < 0.05 is marked ``*``.

:func:`compare` writes ``comparison.md`` (the run table, with notes for runs that lack
something, and the variant table), ``comparison.json`` (the runs' figures, unformatted),
``variants.json`` (the variant table's) and three plots: ``bleu.png`` and ``chrf.png`` (best
valid and test score per variant: mean, ± one standard deviation and each run as a dot) and
``valid_bleu.png`` (valid BLEU against the training step, one line per run, one colour per
variant).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nmt.core.errors import NMTError
from nmt.core.io import write_json, write_text_atomic
from nmt.core.run_dir import (
    BEST,
    RUN_CONFIG,
    TENSORBOARD,
    VALIDATIONS,
    checkpoint_of,
    checkpoint_path,
    find_run_dirs,
)
from nmt.data.corpus import read_text_lines
from nmt.evaluation.metrics import Headline
from nmt.evaluation.significance import (
    SIGNIFICANCE_LEVEL,
    SIGNIFICANCE_TESTS,
    Outputs,
    Significance,
    p_cell,
    paired_test,
    untestable,
)
from nmt.evaluation.testset import evaluate_checkpoint
from nmt.models import ATTENTION_TYPES, SCORES
from nmt.models.attention_stats import STATISTICS
from nmt.models.seq2seq import attention_label

TEST_SCORES = "test_scores.json"
TEST_HYPS = "test_hyps.txt"
TEST_REFS = "test_refs.txt"
PLOTS = ("bleu.png", "chrf.png", "valid_bleu.png")


@dataclass
class Run:
    """What the comparison knows about one run dir; None where the run lacks the figure."""

    name: str  # the run dir, relative to the sweep dir
    attention: str  # the score function
    encoder: str
    decoder: str
    attention_type: str = "global"  # global | local_m | local_p
    window: int | None = None  # D, for the local types
    heads: int = 1  # model.attention.heads (1 for a decoder that brings its own attention)
    seed: int | None = None
    group: str = ""  # digest of the config without the seed: equal for runs of one variant
    steps: int | None = None  # of the last validation
    valid_bleu: float | None = None  # best over validations
    valid_chrf: float | None = None  # best over validations
    valid_perplexity: float | None = None  # of the last validation (no label smoothing)
    test_bleu: float | None = None  # BLEU ko-mecab
    test_chrf: float | None = None
    tokens_per_s: float | None = None
    parameters: int | None = None
    attn_entropy: float | None = None  # of the last validation
    attn_diagonal_mass: float | None = None
    attn_coverage_deviation: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, valid BLEU)
    notes: list[str] = field(default_factory=list)

    @property
    def attention_label(self) -> str:
        """The score with its heads when more than one, and for local attention its type and
        window: ``general``, ``concat-H4``, ``local_p-general-D10``."""
        score = self.attention if self.heads == 1 else f"{self.attention}-H{self.heads}"
        if self.attention_type == "global":
            return score
        return f"{self.attention_type}-{score}-D{self.window}"

    @property
    def variant(self) -> str:
        return f"{self.attention_label} × {self.encoder} × {self.decoder}"

    @property
    def key(self) -> str:
        """The variant as one word, for labels and ``baseline=``: ``general/gru/luong``."""
        return f"{self.attention_label}/{self.encoder}/{self.decoder}"


# --------------------------------------------------------------------------------------------
# Reading a run dir
# --------------------------------------------------------------------------------------------


def find_sweep_runs(sweep_dir: Path) -> list[Path]:
    """Every run dir below ``sweep_dir`` (itself included): :func:`nmt.core.run_dir.find_run_dirs`,
    with an error for a missing folder or one without runs."""
    if not sweep_dir.is_dir():
        raise NMTError(f"{sweep_dir}: no such directory")
    runs = find_run_dirs(sweep_dir)
    if not runs:
        raise NMTError(
            f"{sweep_dir}: no run directories in it (folders with {RUN_CONFIG}, as nmt.train "
            "writes them); give the hydra.sweep.dir of a `python -m nmt.train -m …` sweep"
        )
    return runs


def read_variant(run_dir: Path) -> dict[str, Any]:
    """The :class:`Run` fields that come from the run's config: the variant, the seed, and the
    group digest of the whole config but the seed (as Hydra saved it, unresolved)."""
    path = run_dir / RUN_CONFIG
    try:
        # the run's saved config, a file read: plain values are taken from it right here
        config = OmegaConf.load(path)
        model = config.model
        attention_type = model.attention.get("type", "global")  # absent before local attention
        attention = attention_label(model.attention.score, model.decoder.style)
        uses_score = attention == model.attention.score  # not a Transformer decoder
        fields = {
            "attention": attention,
            "heads": model.attention.get("heads", 1) if uses_score else 1,
            "encoder": model.encoder.get("rnn_type") or model.encoder.get("type"),
            "decoder": model.decoder.style,
            "attention_type": attention_type,
            "window": model.attention.get("window") if attention_type != "global" else None,
            "seed": config.get("seed"),
        }
        rest = OmegaConf.to_container(config, resolve=False)
    except (OmegaConfBaseException, OSError, ValueError) as err:
        raise NMTError(f"{path}: not a run config with model.* ({err})") from None
    rest.pop("seed", None)
    text = json.dumps(rest, sort_keys=True, default=str)
    return fields | {"group": hashlib.sha256(text.encode()).hexdigest()[:12]}


def read_validations(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The records of ``validations.jsonl``; a line that does not parse is noted and skipped
    (an interrupted run can leave half a line)."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            notes.append(f"{path.name} line {number} unreadable")
    return records


def median_tokens_per_s(tensorboard_dir: Path) -> float | None:
    """Median of the ``train/tokens_per_s`` scalars in the run's TensorBoard events."""
    if not tensorboard_dir.is_dir():
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})  # 0: keep all
    events.Reload()
    if "train/tokens_per_s" not in events.Tags()["scalars"]:
        return None
    return statistics.median(e.value for e in events.Scalars("train/tokens_per_s"))


def count_parameters(checkpoint: Path) -> int:
    """Elements of the model's tensors in ``checkpoint``, a tensor shared by two names once."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["model"]
    seen, total = set(), 0
    for tensor in state.values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


def read_test_scores(path: Path) -> tuple[float, float, int | None]:
    """(BLEU ko-mecab, chrF, the number of sentences when it was limited to the first N) of the
    first system of an ``nmt-evaluate`` report (:mod:`nmt.evaluation.testset`)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        scores = report["systems"][0]["scores"]
        limited = report["systems"][0]["lines"] if report.get("max_sentences") else None
        headline = Headline.of(scores)
        return headline.bleu, headline.chrf, limited
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise NMTError(
            f"{path}: not an nmt.evaluate report with bleu_ko-mecab and chrf ({err!r})"
        ) from None


def load_run(run_dir: Path, sweep_dir: Path) -> Run:
    name = "." if run_dir == sweep_dir else run_dir.relative_to(sweep_dir).as_posix()
    run = Run(name, **read_variant(run_dir))
    validations = read_validations(run_dir / VALIDATIONS, run.notes)
    if validations:
        last = validations[-1]
        run.steps = last["step"]
        run.valid_bleu = max(v["bleu"] for v in validations)
        run.valid_chrf = max(v["chrf"] for v in validations)
        run.valid_perplexity = last.get("perplexity")
        run.curve = [(v["step"], v["bleu"]) for v in validations]
        for key in STATISTICS:  # the attention statistics validation logged
            setattr(run, key, last.get("diagnostics", {}).get(key))
    else:
        run.notes.append("no validations yet")
    if (run_dir / TEST_SCORES).is_file():
        run.test_bleu, run.test_chrf, limited = read_test_scores(run_dir / TEST_SCORES)
        if limited is not None:
            run.notes.append(f"test: first {limited} sentences only")
    else:
        run.notes.append(f"no {TEST_SCORES} (evaluate_test=true)")
    run.tokens_per_s = median_tokens_per_s(run_dir / TENSORBOARD)
    if run.tokens_per_s is None and validations:
        run.notes.append("no train/tokens_per_s logged")
    checkpoint = checkpoint_of(run_dir)
    if checkpoint is None:
        run.notes.append("no checkpoint")
    else:
        run.parameters = count_parameters(checkpoint)
    return run


def evaluate_test(
    run_dir: Path,
    device: str,
    log: Callable[[str], None] = print,
    max_sentences: int | None = None,
    markup: bool = True,
) -> None:
    """Write ``test_scores.json``, ``test_hyps.txt`` and ``test_refs.txt``: ``best.pt`` decoded on
    the test split with the run's search settings and scored by
    :func:`nmt.evaluation.testset.evaluate_checkpoint`, inline markup protected with ``markup``
    as ``nmt-evaluate`` does by default. Kept when all three exist and the scores were made with
    the same ``markup`` (a report without the key was made with markup translated as text).
    ``max_sentences``: only the first N test sentences (a quick look), recorded in the report."""
    outputs = [run_dir / name for name in (TEST_SCORES, TEST_HYPS, TEST_REFS)]
    best = checkpoint_path(run_dir, BEST)
    if not best.is_file():
        return
    if all(path.is_file() for path in outputs) and scored_with_markup(outputs[0]) == markup:
        return
    # the run's saved config, a file read: its search settings as plain values
    search = OmegaConf.to_container(OmegaConf.load(run_dir / RUN_CONFIG).search, resolve=True)
    log(f"decoding the test split with {best}")
    report = evaluate_checkpoint(
        best,
        search,
        split="test",
        device=device,
        out_path=run_dir / TEST_HYPS,
        ref_out_path=run_dir / TEST_REFS,
        max_sentences=max_sentences,
        markup=markup,
    )
    write_json(outputs[0], report | {"max_sentences": max_sentences})


def scored_with_markup(scores_path: Path) -> bool | None:
    """Whether a ``test_scores.json`` was made with inline markup protected; None: unreadable."""
    try:
        return bool(json.loads(scores_path.read_text(encoding="utf-8"))["systems"][0].get("markup"))
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return None


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def variant_order(run: Run) -> tuple:
    kind = ATTENTION_TYPES.index(run.attention_type) if run.attention_type in ATTENTION_TYPES else 9
    attention = list(SCORES).index(run.attention) if run.attention in SCORES else len(SCORES)
    return (kind, attention, run.attention, run.window or 0, run.encoder, run.decoder, run.name)


def fmt(value: float | int | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


# header → how a run's cell is written
COLUMNS: list[tuple[str, Callable[[Run], str]]] = [
    ("run", lambda r: r.name),
    ("attention", lambda r: r.attention_label),
    ("encoder", lambda r: r.encoder),
    ("decoder", lambda r: r.decoder),
    ("seed", lambda r: fmt(r.seed, "d")),
    ("steps", lambda r: fmt(r.steps, "d")),
    ("valid BLEU (best)", lambda r: fmt(r.valid_bleu, ".2f")),
    ("valid ppl", lambda r: fmt(r.valid_perplexity, ".1f")),
    ("test BLEU", lambda r: fmt(r.test_bleu, ".2f")),
    ("test chrF", lambda r: fmt(r.test_chrf, ".2f")),
    ("tokens/s", lambda r: fmt(r.tokens_per_s, ",.0f")),
    ("parameters", lambda r: fmt(r.parameters, ",d")),
    ("attn entropy", lambda r: fmt(r.attn_entropy, ".3f")),
    ("diagonal mass", lambda r: fmt(r.attn_diagonal_mass, ".3f")),
    ("coverage dev.", lambda r: fmt(r.attn_coverage_deviation, ".3f")),
    ("notes", lambda r: "; ".join(r.notes)),
]


TEXT_COLUMNS = ("run", "attention", "encoder", "decoder", "notes")  # left-aligned; numbers right


def markdown_table(runs: Sequence[Run]) -> str:
    align = ["---" if header in TEXT_COLUMNS else "---:" for header, _ in COLUMNS]
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "|".join(align) + "|"]
    for run in runs:
        lines.append("| " + " | ".join(cell(run) for _, cell in COLUMNS) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Variants: mean ± std over seeds, significance against a baseline
# --------------------------------------------------------------------------------------------


@dataclass
class Spread:
    """mean ± std over the runs of a variant that have the figure; std is None for one run."""

    mean: float
    std: float | None
    n: int

    def format(self, spec: str) -> str:
        mean = format(self.mean, spec)
        return mean if self.std is None else f"{mean} ± {format(self.std, spec)}"


def spread(values: Sequence[float | None]) -> Spread | None:
    """Mean and sample standard deviation (n − 1) of the values that are not None."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return Spread(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))


SPREAD_FIGURES = (
    "valid_perplexity",
    "valid_bleu",
    "valid_chrf",
    "test_bleu",
    "test_chrf",
    "tokens_per_s",
)


@dataclass
class Variant:
    """The runs of one config, seeds aside."""

    label: str
    runs: list[str]
    seeds: list[int | None]
    figures: dict[str, Spread | None]
    baseline: bool = False
    significance: Significance | None = None
    notes: list[str] = field(default_factory=list)


def group_variants(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs grouped by config without the seed, in table order, each group in seed order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    ordered = sorted(groups.values(), key=lambda g: variant_order(g[0]))
    return [sorted(g, key=lambda r: (r.seed is None, r.seed or 0, r.name)) for g in ordered]


def variant_labels(groups: Sequence[Sequence[Run]]) -> list[str]:
    """Each group's variant key; with the first run's name where two groups share a key (runs of
    one variant that differ in another setting, as a recipe sweep makes them)."""
    keys = [g[0].key for g in groups]
    return [
        k if keys.count(k) == 1 else f"{k} ({g[0].name})" for k, g in zip(keys, groups, strict=True)
    ]


def read_outputs(sweep_dir: Path, run: Run) -> Outputs | None:
    """(test hypotheses, references) of a run, or None when either file is missing."""
    hyps, refs = (sweep_dir / run.name / name for name in (TEST_HYPS, TEST_REFS))
    if not (hyps.is_file() and refs.is_file()):
        return None
    hypotheses, references = read_text_lines(hyps, "hypothesis"), read_text_lines(refs, "reference")
    if len(hypotheses) != len(references):
        raise NMTError(f"{hyps} has {len(hypotheses)} lines but {refs} has {len(references)}")
    return hypotheses, references


def summarise(
    sweep_dir: Path,
    runs: Sequence[Run],
    baseline: str | None = None,
    test: str = "bs",
    samples: int | None = None,
) -> list[Variant]:
    """The variant table: each group's figures over seeds and its test against the baseline
    (``baseline``: a variant label or one of its runs' names; None: the first variant)."""
    groups = group_variants(runs)
    names = variant_labels(groups)
    variants = [
        Variant(
            label,
            [r.name for r in group],
            [r.seed for r in group],
            {key: spread([getattr(r, key) for r in group]) for key in SPREAD_FIGURES},
        )
        for label, group in zip(names, groups, strict=True)
    ]
    base = pick_baseline(variants, baseline)
    base.baseline = True
    outputs = {
        id(v): [o for r in g if (o := read_outputs(sweep_dir, r)) is not None]
        for v, g in zip(variants, groups, strict=True)
    }
    missing = {id(v): len(g) - len(outputs[id(v)]) for v, g in zip(variants, groups, strict=True)}
    for variant in variants:
        if missing[id(variant)]:
            variant.notes.append(f"{missing[id(variant)]} run(s) without {TEST_HYPS}/{TEST_REFS}")
        if variant.baseline or not outputs[id(variant)] or not outputs[id(base)]:
            continue
        note = untestable(outputs[id(base)], outputs[id(variant)])
        if note is not None:
            variant.notes.append(note)
            continue
        variant.significance = paired_test(outputs[id(base)], outputs[id(variant)], test, samples)
    return variants


def pick_baseline(variants: Sequence[Variant], baseline: str | None) -> Variant:
    if baseline is None:
        return variants[0]
    for variant in variants:
        if baseline == variant.label or baseline in variant.runs:
            return variant
    raise NMTError(
        f"baseline: no variant or run {baseline!r}; the variants are "
        + ", ".join(v.label for v in variants)
    )


def delta_cell(value: float, reference: float) -> str:
    return f"{value - reference:+.2f}"


VARIANT_COLUMNS: list[tuple[str, Callable[[Variant], str]]] = [
    ("variant", lambda v: v.label + (" (baseline)" if v.baseline else "")),
    ("runs", lambda v: str(len(v.runs))),
    ("seeds", lambda v: ", ".join("—" if s is None else str(s) for s in v.seeds)),
    *(
        (header, lambda v, key=key, spec=spec: "—" if v.figures[key] is None
         else v.figures[key].format(spec))
        for header, key, spec in (
            ("valid ppl", "valid_perplexity", ".1f"),
            ("valid BLEU (best)", "valid_bleu", ".2f"),
            ("test BLEU", "test_bleu", ".2f"),
            ("test chrF", "test_chrf", ".2f"),
            ("tokens/s", "tokens_per_s", ",.0f"),
        )
    ),
    ("Δ BLEU (pooled)", lambda v: "—" if v.significance is None
     else delta_cell(v.significance.bleu, v.significance.baseline_bleu)),
    ("p BLEU", lambda v: "—" if v.significance is None else p_cell(v.significance.bleu_p)),
    ("Δ chrF (pooled)", lambda v: "—" if v.significance is None
     else delta_cell(v.significance.chrf, v.significance.baseline_chrf)),
    ("p chrF", lambda v: "—" if v.significance is None else p_cell(v.significance.chrf_p)),
    ("notes", lambda v: "; ".join(v.notes)),
]  # fmt: skip


def variant_table(variants: Sequence[Variant]) -> str:
    text = ("variant", "seeds", "notes")
    align = ["---" if header in text else "---:" for header, _ in VARIANT_COLUMNS]
    lines = ["| " + " | ".join(h for h, _ in VARIANT_COLUMNS) + " |", "|" + "|".join(align) + "|"]
    for variant in variants:
        lines.append("| " + " | ".join(cell(variant) for _, cell in VARIANT_COLUMNS) + " |")
    return "\n".join(lines)


def markdown_report(
    sweep_dir: Path, runs: Sequence[Run], variants: Sequence[Variant], test: str = "bs"
) -> str:
    return f"""# Attention comparison: {sweep_dir}

## Runs

{markdown_table(runs)}

* **attention**: `model.attention.score`, and for local attention `model.attention.type` and
  the window D (`local_p-general-D10`); with `model.encoder.rnn_type` and
  `model.decoder.style` from each run's `.hydra/config.yaml`.
* **steps**, **attention statistics**: the last validation in `validations.jsonl` (entropy in
  nats, diagonal mass and coverage deviation as `nmt/models/attention_stats.py` defines them);
  **valid BLEU (best)**: the best validation BLEU (ko-mecab); **valid ppl**: the last
  validation's perplexity per target subword (no label smoothing; comparable only between runs
  with the same target vocabulary).
* **test BLEU** (ko-mecab) and **test chrF**: `test_scores.json`, the checkpoint `best.pt`
  decoded on the test split (`nmt-compare evaluate_test=true`).
* **tokens/s**: median of TensorBoard's `train/tokens_per_s` (target tokens per second).
* **parameters**: the tensors of the checkpoint's model, a tied matrix counted once.

## Variants

{variant_table(variants)}

* A **variant** is the runs whose configs are equal but for `seed`; its figures are the mean
  ± sample standard deviation over them (one run: the value alone).
* **Δ**, **p**: sacrebleu's {SIGNIFICANCE_TESTS[test]} (`{test}`) of test BLEU (ko-mecab) and
  chrF against the baseline; with several runs the k-th run of each side (seed order) is paired
  and their outputs concatenated, so Δ is the difference of the pooled corpus scores.
  `*`: p < {SIGNIFICANCE_LEVEL}. The test resamples test sentences, not training runs: a
  difference smaller than the spread over seeds is not established by a small p.

![BLEU](bleu.png) ![chrF](chrf.png) ![valid BLEU](valid_bleu.png)
"""


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    path: Path,
    runs: Sequence[Run],
    variants: Sequence[Variant],
    metric: str,
    valid: str,
    test: str,
) -> None:
    """Per variant, the best valid and the test score: a bar at the mean, an error bar of ± one
    standard deviation over its runs, and each run as a dot; a missing score has no bar."""
    plt = pyplot()
    by_name = {r.name: r for r in runs}
    positions = list(range(len(variants)))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(variants)), 4.0), dpi=100)
    for offset, attr, label in ((-0.2, valid, "valid (best)"), (0.2, test, "test")):
        shown = [
            (p, v.figures[attr])
            for p, v in zip(positions, variants, strict=True)
            if v.figures[attr]
        ]
        ax.bar(
            [p + offset for p, _ in shown],
            [s.mean for _, s in shown],
            width=0.4,
            yerr=[s.std or 0.0 for _, s in shown],
            capsize=3,
            label=f"{label}: mean ± std",
        )
        points = [
            (p + offset, value)
            for p, v in zip(positions, variants, strict=True)
            for value in (getattr(by_name[name], attr) for name in v.runs)
            if value is not None
        ]
        if points:
            ax.scatter(*zip(*points, strict=True), s=12, color="black", zorder=3)
    ax.set_xticks(positions, [v.label for v in variants], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per variant (dots: runs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curve_chart(path: Path, runs: Sequence[Run], variants: Sequence[Variant]) -> None:
    """Valid BLEU against the step, one line per run, the runs of one variant in one colour."""
    plt = pyplot()
    by_name = {r.name: r for r in runs}
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=100)
    for index, variant in enumerate(variants):
        colour = f"C{index % 10}"
        for number, name in enumerate(variant.runs):
            run = by_name[name]
            if run.curve:
                steps, bleu = zip(*run.curve, strict=True)
                label = variant.label if number == 0 else None
                ax.plot(steps, bleu, marker="o", markersize=3, color=colour, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("valid BLEU (ko-mecab)")
    ax.set_title("validation BLEU during training (one line per run)")
    if any(run.curve for run in runs):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def compare(
    sweep_dir: Path,
    out_dir: Path | None = None,
    evaluate: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    baseline: str | None = None,
    test: str = "bs",
    samples: int | None = None,
    max_sentences: int | None = None,
    markup: bool = True,
) -> tuple[list[Run], list[Variant]]:
    """Read (and with ``evaluate``, first test on ``max_sentences`` or all test sentences, inline
    markup protected with ``markup``) every run of ``sweep_dir``; write the report.

    ``baseline``, ``test`` (bs | ar) and ``samples`` (None: sacrebleu's default) choose the
    significance test of :func:`summarise`."""
    if test not in SIGNIFICANCE_TESTS:
        raise NMTError(
            f"significance: expected one of {', '.join(SIGNIFICANCE_TESTS)}; got {test!r}"
        )
    if max_sentences is not None and max_sentences < 1:
        raise NMTError(f"max_sentences: expected a positive number; got {max_sentences}")
    if samples is not None and samples < 1:
        raise NMTError(
            f"samples: expected a positive number of resamples (bs) or trials (ar); got {samples}"
        )
    run_dirs = find_sweep_runs(sweep_dir)
    if evaluate:
        for run_dir in run_dirs:
            evaluate_test(run_dir, device, log, max_sentences, markup)
    runs = sorted((load_run(d, sweep_dir) for d in run_dirs), key=variant_order)
    variants = summarise(sweep_dir, runs, baseline, test, samples)
    out_dir = out_dir or sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "comparison.md", markdown_report(sweep_dir, runs, variants, test))
    write_json(out_dir / "comparison.json", [asdict(r) | {"variant": r.variant} for r in runs])
    write_json(out_dir / "variants.json", [asdict(v) for v in variants])
    bar_chart(out_dir / "bleu.png", runs, variants, "BLEU (ko-mecab)", "valid_bleu", "test_bleu")
    bar_chart(out_dir / "chrf.png", runs, variants, "chrF", "valid_chrf", "test_chrf")
    curve_chart(out_dir / "valid_bleu.png", runs, variants)
    return runs, variants
