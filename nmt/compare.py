"""Compare the runs of a sweep: ``nmt-compare sweep=SWEEP_DIR [out=DIR] [evaluate_test=true]``.

A sweep dir is what ``python -m nmt.train -m …`` leaves in ``hydra.sweep.dir``: one run dir per
job (by default named after its overrides with each ``/`` turned into ``.``, e.g.
``model.attention=dot,model.encoder=lstm``; see ``hydra.sweep.subdir`` in configs/train.yaml),
found here as every folder below SWEEP_DIR, at any depth, that holds ``.hydra/config.yaml``. A
run's name is its path relative to SWEEP_DIR. From each run dir it reads

* ``.hydra/config.yaml``: the variant, ``model.attention.score`` × ``model.encoder.rnn_type`` ×
  ``model.decoder.style``;
* ``validations.jsonl``: the best validation BLEU, the valid BLEU curve, and the attention
  statistics (entropy, diagonal mass, coverage deviation) of the last validation;
* ``tensorboard/``: the median of ``train/tokens_per_s`` (target tokens per second);
* ``checkpoints/best.pt`` (else ``last.pt``): the number of parameters, counted from the model's
  tensors (a tied matrix once);
* ``test_scores.json``: the test split's scores. It is the report ``nmt.evaluate`` writes, the
  same as ``nmt-evaluate ckpt=RUN/checkpoints/best.pt split=test json=RUN/test_scores.json``
  with the run's search settings; ``evaluate_test=true`` writes it for every run that has a
  ``best.pt`` and no ``test_scores.json`` yet (an existing one is reused).

It writes ``comparison.md`` (the table, with notes for runs that lack something),
``comparison.json`` (the same figures, unformatted) and three plots to SWEEP_DIR or ``out=DIR``:
``bleu.png`` and ``chrf.png`` (best valid and test score per variant) and ``valid_bleu.png``
(valid BLEU against the training step, one line per run).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import nmt.config_resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt import CONFIG_DIR
from nmt.errors import NMTError, boolean, exit_on_user_error
from nmt.evaluate import evaluate_checkpoint
from nmt.metrics import write_json, write_text_atomic
from nmt.models import SCORES
from nmt.runtime import pick_device

RUN_MARKER = Path(".hydra") / "config.yaml"
TEST_SCORES = "test_scores.json"
ATTENTION_STATS = ("attn_entropy", "attn_diagonal_mass", "attn_coverage_deviation")
PLOTS = ("bleu.png", "chrf.png", "valid_bleu.png")


@dataclass
class Run:
    """What the comparison knows about one run dir; None where the run lacks the figure."""

    name: str  # the run dir, relative to the sweep dir
    attention: str
    encoder: str
    decoder: str
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
    def variant(self) -> str:
        return f"{self.attention} × {self.encoder} × {self.decoder}"


# --------------------------------------------------------------------------------------------
# Reading a run dir
# --------------------------------------------------------------------------------------------


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Every folder below ``sweep_dir`` (itself included) that holds ``.hydra/config.yaml``."""
    if not sweep_dir.is_dir():
        raise NMTError(f"{sweep_dir}: no such directory")
    runs = sorted(marker.parent.parent for marker in sweep_dir.glob(f"**/{RUN_MARKER}"))
    if not runs:
        raise NMTError(
            f"{sweep_dir}: no run directories in it (folders with {RUN_MARKER}, as nmt.train "
            "writes them); give the hydra.sweep.dir of a `python -m nmt.train -m …` sweep"
        )
    return runs


def read_variant(run_dir: Path) -> tuple[str, str, str]:
    """(attention score, encoder RNN, decoder style) from the run's config."""
    path = run_dir / RUN_MARKER
    try:
        model = OmegaConf.load(path).model
        return model.attention.score, model.encoder.rnn_type, model.decoder.style
    except (OmegaConfBaseException, OSError, ValueError) as err:
        raise NMTError(f"{path}: not a run config with model.* ({err})") from None


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


def read_test_scores(path: Path) -> tuple[float, float]:
    """(BLEU ko-mecab, chrF) of the first system of an ``nmt.evaluate`` report."""
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))["systems"][0]["scores"]
        return scores["bleu_ko-mecab"]["score"], scores["chrf"]["score"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise NMTError(
            f"{path}: not an nmt.evaluate report with bleu_ko-mecab and chrf ({err!r})"
        ) from None


def checkpoint_of(run_dir: Path) -> Path | None:
    for name in ("best.pt", "last.pt"):
        path = run_dir / "checkpoints" / name
        if path.is_file():
            return path
    return None


def load_run(run_dir: Path, sweep_dir: Path) -> Run:
    name = "." if run_dir == sweep_dir else run_dir.relative_to(sweep_dir).as_posix()
    run = Run(name, *read_variant(run_dir))
    validations = read_validations(run_dir / "validations.jsonl", run.notes)
    if validations:
        last = validations[-1]
        run.steps = last["step"]
        run.valid_bleu = max(v["bleu"] for v in validations)
        run.valid_chrf = max(v["chrf"] for v in validations)
        run.valid_perplexity = last.get("perplexity")
        run.curve = [(v["step"], v["bleu"]) for v in validations]
        for key in ATTENTION_STATS:
            setattr(run, key, last.get("diagnostics", {}).get(key))
    else:
        run.notes.append("no validations yet")
    if (run_dir / TEST_SCORES).is_file():
        run.test_bleu, run.test_chrf = read_test_scores(run_dir / TEST_SCORES)
    else:
        run.notes.append(f"no {TEST_SCORES} (evaluate_test=true)")
    run.tokens_per_s = median_tokens_per_s(run_dir / "tensorboard")
    if run.tokens_per_s is None and validations:
        run.notes.append("no train/tokens_per_s logged")
    checkpoint = checkpoint_of(run_dir)
    if checkpoint is None:
        run.notes.append("no checkpoint")
    else:
        run.parameters = count_parameters(checkpoint)
    return run


def evaluate_test(run_dir: Path, device: str, log: Callable[[str], None] = print) -> None:
    """Write ``test_scores.json``: ``best.pt`` decoded on the test split with the run's search
    settings and scored by :func:`nmt.evaluate.evaluate_checkpoint`. An existing file is kept."""
    target = run_dir / TEST_SCORES
    best = run_dir / "checkpoints" / "best.pt"
    if target.is_file() or not best.is_file():
        return
    search_cfg = OmegaConf.load(run_dir / RUN_MARKER).search
    log(f"decoding the test split with {best}")
    write_json(target, evaluate_checkpoint(best, search_cfg, split="test", device=device))


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def variant_order(run: Run) -> tuple:
    attention = SCORES.index(run.attention) if run.attention in SCORES else len(SCORES)
    return (attention, run.attention, run.encoder, run.decoder, run.name)


def fmt(value: float | int | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


# header → how a run's cell is written
COLUMNS: list[tuple[str, Callable[[Run], str]]] = [
    ("run", lambda r: r.name),
    ("attention", lambda r: r.attention),
    ("encoder", lambda r: r.encoder),
    ("decoder", lambda r: r.decoder),
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


def markdown_report(sweep_dir: Path, runs: Sequence[Run]) -> str:
    return f"""# Attention comparison: {sweep_dir}

{markdown_table(runs)}

* **variant**: `model.attention.score` × `model.encoder.rnn_type` × `model.decoder.style`, from
  each run's `.hydra/config.yaml`.
* **steps**, **attention statistics**: the last validation in `validations.jsonl` (entropy in
  nats, diagonal mass and coverage deviation as `nmt/attention_stats.py` defines them);
  **valid BLEU (best)**: the best validation BLEU (ko-mecab); **valid ppl**: the last
  validation's perplexity per target subword (no label smoothing; comparable only between runs
  with the same target vocabulary).
* **test BLEU** (ko-mecab) and **test chrF**: `test_scores.json`, the checkpoint `best.pt`
  decoded on the test split (`nmt-compare evaluate_test=true`).
* **tokens/s**: median of TensorBoard's `train/tokens_per_s` (target tokens per second).
* **parameters**: the tensors of the checkpoint's model, a tied matrix counted once.

![BLEU](bleu.png) ![chrF](chrf.png) ![valid BLEU](valid_bleu.png)
"""


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def labels(runs: Sequence[Run]) -> list[str]:
    """The variant of each run; the run's name too where two runs share a variant."""
    variants = [f"{r.attention}/{r.encoder}/{r.decoder}" for r in runs]
    return [
        v if variants.count(v) == 1 else f"{v}\n{r.name}"
        for v, r in zip(variants, runs, strict=True)
    ]


def bar_chart(path: Path, runs: Sequence[Run], metric: str, valid: str, test: str) -> None:
    """Best valid and test score of each run side by side; a missing score has no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = list(range(len(runs)))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(runs)), 4.0), dpi=100)
    for offset, attr, label in ((-0.2, valid, "valid (best)"), (0.2, test, "test")):
        xs = [
            p + offset for p, r in zip(positions, runs, strict=True) if getattr(r, attr) is not None
        ]
        ys = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
        ax.bar(xs, ys, width=0.4, label=label)
    ax.set_xticks(positions, labels(runs), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per variant")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curve_chart(path: Path, runs: Sequence[Run]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=100)
    for run, label in zip(runs, labels(runs), strict=True):
        if run.curve:
            steps, bleu = zip(*run.curve, strict=True)
            ax.plot(steps, bleu, marker="o", markersize=3, label=label.replace("\n", " "))
    ax.set_xlabel("training step")
    ax.set_ylabel("valid BLEU (ko-mecab)")
    ax.set_title("validation BLEU during training")
    if any(run.curve for run in runs):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def compare(
    sweep_dir: Path,
    out_dir: Path | None = None,
    evaluate: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> list[Run]:
    """Read (and with ``evaluate``, first test) every run of ``sweep_dir``; write the report."""
    run_dirs = find_run_dirs(sweep_dir)
    if evaluate:
        for run_dir in run_dirs:
            evaluate_test(run_dir, device, log)
    runs = sorted((load_run(d, sweep_dir) for d in run_dirs), key=variant_order)
    out_dir = out_dir or sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "comparison.md", markdown_report(sweep_dir, runs))
    write_json(out_dir / "comparison.json", [asdict(r) | {"variant": r.variant} for r in runs])
    bar_chart(out_dir / "bleu.png", runs, "BLEU (ko-mecab)", "valid_bleu", "test_bleu")
    bar_chart(out_dir / "chrf.png", runs, "chrF", "valid_chrf", "test_chrf")
    curve_chart(out_dir / "valid_bleu.png", runs)
    return runs


@hydra.main(config_path=str(CONFIG_DIR), config_name="compare", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if cfg.sweep is None:
        raise NMTError("sweep: no value; give the sweep's folder (its hydra.sweep.dir), sweep=DIR")
    evaluate = boolean(cfg.evaluate_test, "evaluate_test")
    device = str(pick_device(cfg.device, "device"))
    sweep_dir = Path(cfg.sweep)
    out_dir = Path(cfg.out) if cfg.out is not None else sweep_dir
    runs = compare(sweep_dir, out_dir, evaluate, device)
    print(markdown_table(runs))
    print(f"\nwrote {out_dir / 'comparison.md'}, comparison.json and {', '.join(PLOTS)}")


if __name__ == "__main__":
    main()
