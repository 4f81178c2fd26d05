"""Quality against training budget: every step checkpoint of a run, scored on valid and test.

A run keeps every validation's ``checkpoints/stepNNNNNNN.pt`` when trained with
``trainer.keep_every_validation=true`` (or a ``trainer.keep_last`` as large as its number of
validations). :func:`score_run` decodes each one on the valid and the test split of the run's
corpus with :func:`nmt.evaluation.testset.evaluate_translator` — the run's own search settings,
or a beam size given — and scores it with BLEU (ko-mecab) and chrF. Its x coordinate is
``progress.minutes``, the run's wall-clock when the checkpoint was written (validation time
included, across resumes). A checkpoint already in ``RUN/quality_curve.json`` with the same
search settings and ``max_sentences`` is not decoded again (unless ``fresh``).

:func:`write_report` writes ``quality_curve.md`` (one row per checkpoint),
``quality_curve.json`` and ``quality_curve.png`` (BLEU and chrF against minutes, valid and test,
one colour per run) for one or several curves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nmt.core.errors import NMTError
from nmt.core.io import write_json, write_text_atomic
from nmt.core.run_dir import checkpoint_dir, step_checkpoints
from nmt.evaluation.metrics import HEADLINE_BLEU, Headline
from nmt.evaluation.testset import evaluate_translator
from nmt.inference.translator import Translator
from nmt.models.checkpoint import load_checkpoint

SCORED_SPLITS = ("valid", "test")  # the splits each step checkpoint is scored on
OUTPUTS = ("quality_curve.md", "quality_curve.json", "quality_curve.png")


@dataclass
class Point:
    """One checkpoint's scores (BLEU is ko-mecab)."""

    checkpoint: str  # the file name, stepNNNNNNN.pt
    step: int
    minutes: float  # progress.minutes: the run's wall-clock when it was written
    valid_bleu: float
    valid_chrf: float
    test_bleu: float
    test_chrf: float


@dataclass
class Curve:
    """The points of one run, oldest first, and the settings they were decoded with."""

    label: str
    run_dir: str
    search: dict[str, Any]
    max_sentences: int | None  # null: whole splits
    points: list[Point] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)  # sacrebleu's, per metric

    def same_settings(self, other: dict[str, Any]) -> bool:
        return other.get("search") == self.search and other.get("max_sentences") == (
            self.max_sentences
        )


# --------------------------------------------------------------------------------------------
# Scoring a run
# --------------------------------------------------------------------------------------------


def search_settings(checkpoint: dict[str, Any], beam: int | None) -> dict[str, Any]:
    """The run's ``search`` config; ``beam`` replaces its beam size (1: greedy search)."""
    search = dict(checkpoint["config"]["search"])
    if beam is not None:
        if beam < 1:
            raise NMTError(f"beam: expected an integer >= 1, got {beam}")
        search.update(name="greedy" if beam == 1 else "beam", beam_size=beam)
        search["n_best"] = min(search.get("n_best", 1), beam)
    return search


def earlier_curve(run_dir: Path, curve: Curve) -> Curve | None:
    """This run's curve in ``run_dir/quality_curve.json`` if it was decoded with the same
    settings as ``curve``; None when there is none (or it does not parse)."""
    path = run_dir / "quality_curve.json"
    if not path.is_file():
        return None
    try:
        for entry in json.loads(path.read_text(encoding="utf-8"))["runs"]:
            if Path(entry["run_dir"]).resolve() == run_dir.resolve() and curve.same_settings(entry):
                points = [Point(**p) for p in entry.pop("points")]
                return Curve(**entry, points=points)
    except (json.JSONDecodeError, KeyError, TypeError):
        pass  # from another version of this script: decode again
    return None


def score_run(
    run_dir: Path,
    label: str,
    beam: int | None = None,
    max_sentences: int | None = None,
    device: str = "cpu",
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> Curve:
    """Decode and score every step checkpoint of ``run_dir`` on valid and test (the first
    ``max_sentences`` of each, or all), on ``device``, with the run's search settings or
    ``beam``; the points of ``run_dir/quality_curve.json`` decoded with the same settings are
    reused unless ``fresh``."""
    ckpt_dir = checkpoint_dir(run_dir)
    found = step_checkpoints(ckpt_dir)
    if not found:
        raise NMTError(
            f"{ckpt_dir}: no step checkpoints (stepNNNNNNN.pt); train with "
            "trainer.keep_every_validation=true to keep one per validation"
        )
    first = load_checkpoint(found[0][1])
    curve = Curve(label, str(run_dir), search_settings(first, beam), max_sentences)
    earlier = None if fresh else earlier_curve(run_dir, curve)
    cache = {(p.checkpoint, p.step): p for p in earlier.points} if earlier else {}
    curve.signatures = dict(earlier.signatures) if earlier else {}
    for number, (step, path) in enumerate(found, start=1):
        point = cache.get((path.name, step))
        if point is None:
            translator = Translator.from_checkpoint(path, device, **curve.search)
            minutes = translator.info.minutes
            log(f"[{label}] {number}/{len(found)} {path.name} ({minutes:.1f} min): decoding")
            scores = {}
            for split in SCORED_SPLITS:
                report = evaluate_translator(
                    translator, split=split, tokenizers=("ko-mecab",), max_sentences=max_sentences
                )
                scores[split] = report["systems"][0]["scores"]
            valid, test = Headline.of(scores["valid"]), Headline.of(scores["test"])
            point = Point(
                checkpoint=path.name,
                step=step,
                minutes=minutes,
                valid_bleu=valid.bleu,
                valid_chrf=valid.chrf,
                test_bleu=test.bleu,
                test_chrf=test.chrf,
            )
            curve.signatures = {m: scores["test"][m]["signature"] for m in (HEADLINE_BLEU, "chrf")}
        curve.points.append(point)
    return curve


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

COLUMNS = (
    "run",
    "checkpoint",
    "step",
    "minutes",
    "valid BLEU",
    "valid chrF",
    "test BLEU",
    "test chrF",
)


def markdown_table(curves: Sequence[Curve]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    for curve in curves:
        for p in curve.points:
            cells = [curve.label, p.checkpoint, f"{p.step:d}", f"{p.minutes:.1f}"]
            cells += [f"{v:.2f}" for v in (p.valid_bleu, p.valid_chrf, p.test_bleu, p.test_chrf)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(curve: Curve) -> str:
    s = curve.search
    search = "greedy" if s["name"] == "greedy" else f"beam {s['beam_size']}"
    search += f", length_penalty {s.get('length_penalty')}" if s["name"] != "greedy" else ""
    sentences = (
        "whole splits" if curve.max_sentences is None else f"first {curve.max_sentences} sentences"
    )
    return f"* **{curve.label}**: `{curve.run_dir}`; {search}; {sentences}"


def markdown_report(curves: Sequence[Curve]) -> str:
    settings = "\n".join(describe(c) for c in curves)
    signatures = next((c.signatures for c in curves if c.signatures), {})
    signature_lines = "\n".join(f"  * {m}: `{sig}`" for m, sig in signatures.items())
    return f"""# Quality against training budget

{markdown_table(curves)}

{settings}
* **minutes**: `progress.minutes` of the checkpoint, the run's wall-clock when it was written
  (validation included). **BLEU** is ko-mecab; both metrics from `nmt.evaluate`, signatures:
{signature_lines}

![quality against minutes](quality_curve.png)
"""


def plot(path: Path, curves: Sequence[Curve]) -> None:
    """BLEU and chrF against minutes side by side; one colour per run, valid solid, test dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2), dpi=100)
    for ax, metric, name in zip(axes, ("bleu", "chrf"), ("BLEU (ko-mecab)", "chrF"), strict=True):
        for i, curve in enumerate(curves):
            minutes = [p.minutes for p in curve.points]
            for split, style in (("valid", "-o"), ("test", "--s")):
                values = [getattr(p, f"{split}_{metric}") for p in curve.points]
                label = f"{curve.label} {split}"
                ax.plot(minutes, values, style, color=f"C{i}", markersize=3, label=label)
        ax.set_xlabel("training minutes")
        ax.set_ylabel(name)
        ax.set_title(f"{name} against training budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out_dir: Path, curves: Sequence[Curve]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "quality_curve.md", markdown_report(curves))
    write_json(out_dir / "quality_curve.json", {"runs": [asdict(c) for c in curves]})
    plot(out_dir / "quality_curve.png", curves)
