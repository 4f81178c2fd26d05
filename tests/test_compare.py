"""nmt-compare (nmt/compare.py) on fabricated sweeps: run dirs written the way nmt.train writes them, with
known numbers, so every cell of the table is known in advance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import quote, run_main
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from nmt.evaluation import sweep as compare

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    run_dir: Path,
    config,
    validations: list[dict] | None = None,
    tokens_per_s: list[float] | None = None,
    test_scores: tuple[float, float] | None = None,
    checkpoint: tuple[str, dict[str, torch.Tensor]] | None = None,
) -> None:
    """A run dir as nmt.train leaves it: .hydra/config.yaml (unresolved, as Hydra saves it),
    validations.jsonl, TensorBoard events, test_scores.json (an nmt.evaluate report) and a
    checkpoint (only its ``model`` entry matters here)."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    if validations is not None:
        with open(run_dir / "validations.jsonl", "w", encoding="utf-8") as f:
            for record in validations:
                f.write(json.dumps(record) + "\n")
    if tokens_per_s is not None:
        writer = SummaryWriter(str(run_dir / "tensorboard"))
        for step, value in enumerate(tokens_per_s, start=1):
            writer.add_scalar("train/tokens_per_s", value, step)
            writer.add_scalar("train/loss", 5.0, step)
        writer.close()
    if test_scores is not None:
        bleu, chrf = test_scores
        report = {
            "ref": "test.ko",
            "split": "test",
            "systems": [
                {
                    "system": "best.pt",
                    "lines": 3,
                    "scores": {"bleu_ko-mecab": {"score": bleu}, "chrf": {"score": chrf}},
                }
            ],
        }
        (run_dir / "test_scores.json").write_text(json.dumps(report))
    if checkpoint is not None:
        name, model = checkpoint
        (run_dir / "checkpoints").mkdir()
        torch.save({"model": model, "config": {}}, run_dir / "checkpoints" / name)


def validation(step: int, bleu: float, chrf: float, entropy: float, diag: float, cov: float):
    """One line of validations.jsonl, with the fields nmt.training.validation writes."""
    return {
        "step": step,
        "loss": 4.0,
        "perplexity": 10_000.0 / step,  # falls as training goes on
        "bleu": bleu,
        "chrf": chrf,
        "scores": {"bleu_ko-mecab": {"score": bleu, "signature": "…"}, "chrf": {"score": chrf}},
        "diagnostics": {
            "repetition_rate": 0.1,
            "max_len_rate": 0.0,
            "len_ratio_chars": 1.0,
            "attn_entropy": entropy,
            "attn_diagonal_mass": diag,
            "attn_coverage_deviation": cov,
        },
    }


@pytest.fixture
def sweep(tmp_path, compose_config) -> Path:
    """Three runs: a complete one, one named as configs/train.yaml's hydra.sweep.subdir names a
    job (the overrides, '/' turned into '.') with neither test scores nor TensorBoard events, and
    one a level deeper (a second half of a sweep run into SWEEP_DIR/rest) that never validated."""
    root = tmp_path / "sweep"
    weight = torch.zeros(3, 4)
    write_run(
        root / "concat-gru-luong",
        compose_config("model/attention=concat"),
        validations=[
            validation(200, 5.0, 20.0, 2.0, 0.25, 1.5),
            validation(400, 4.5, 22.5, 1.234, 0.5678, 0.9012),
        ],
        tokens_per_s=[100.0, 300.0, 200.0],
        test_scores=(7.25, 30.5),
        checkpoint=("best.pt", {"w": weight, "b": torch.zeros(5), "tied": weight}),
    )
    write_run(
        root / "model.attention=dot,model.encoder=lstm",
        compose_config("model/attention=dot", "model/encoder=lstm", "model/decoder=bahdanau"),
        validations=[validation(100, 1.5, 10.25, 3.0, 0.125, 0.75)],
        checkpoint=("last.pt", {"x": torch.zeros(10)}),
    )
    write_run(root / "rest" / "general-gru-luong", compose_config("model/attention=general"))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


EXPECTED_ROWS = [
    "| model.attention=dot,model.encoder=lstm | dot | lstm | bahdanau | 1234 | 100 | 1.50 | 100.0 "
    "| — | — | — | 10 | 3.000 | 0.125 | 0.750 | no test_scores.json (evaluate_test=true); "
    "no train/tokens_per_s logged |",
    "| rest/general-gru-luong | general | gru | luong | 1234 | — | — | — | — | — | — | — | — | — | — "
    "| no validations yet; no test_scores.json (evaluate_test=true); no checkpoint |",
    "| concat-gru-luong | concat | gru | luong | 1234 | 400 | 5.00 | 25.0 | 7.25 | 30.50 | 200 "
    "| 17 | 1.234 | 0.568 | 0.901 |  |",
]


def table_rows(
    markdown: str, header: str = "| run | attention | encoder | decoder | seed |"
) -> list[str]:
    """The rows of the table whose header line starts with ``header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # after the header and the alignment line
        if not line.startswith("| "):
            break
        rows.append(line)
    return rows


def test_table_holds_exactly_the_runs_numbers(sweep, tmp_path):
    out = tmp_path / "report"
    result = run_main("nmt.compare", f"sweep={quote(sweep)}", f"out={quote(out)}")
    assert result.returncode == 0, result.stderr
    assert table_rows((out / "comparison.md").read_text()) == EXPECTED_ROWS
    assert table_rows(result.stdout) == EXPECTED_ROWS
    assert not (sweep / "comparison.md").exists()  # out=, not the sweep dir

    runs = {r["name"]: r for r in json.loads((out / "comparison.json").read_text())}
    concat = runs["concat-gru-luong"]
    assert concat["variant"] == "concat × gru × luong"
    assert (concat["valid_bleu"], concat["valid_chrf"]) == (5.0, 22.5)  # best, not last
    assert concat["valid_perplexity"] == 25.0  # the last validation's
    assert (concat["test_bleu"], concat["test_chrf"]) == (7.25, 30.5)
    assert concat["tokens_per_s"] == 200.0  # the median
    assert concat["parameters"] == 17  # the tied matrix once
    assert concat["attn_diagonal_mass"] == 0.5678
    assert concat["curve"] == [[200, 5.0], [400, 4.5]]
    assert runs["rest/general-gru-luong"]["curve"] == []

    for name in compare.PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(out / name) as image:
            image.verify()
            assert image.size[0] > 100 and image.size[1] > 100


def test_report_goes_to_the_sweep_dir_by_default(sweep):
    result = run_main("nmt.compare", f"sweep={quote(sweep)}")
    assert result.returncode == 0, result.stderr
    for name in ("comparison.md", "comparison.json", *compare.PLOTS):
        assert (sweep / name).is_file(), name


def test_unreadable_validation_line_is_noted(tmp_path, compose_config):
    root = tmp_path / "sweep"
    write_run(root / "run", compose_config(), validations=[validation(50, 2.0, 9.0, 1, 0.5, 0.5)])
    with open(root / "run" / "validations.jsonl", "a") as f:
        f.write('{"step": 100, "bl')  # an interrupted write
    [run], [variant] = compare.compare(root, log=lambda _: None)
    assert run.steps == 50
    assert "validations.jsonl line 2 unreadable" in run.notes


def test_evaluate_test_writes_missing_scores_and_keeps_existing_ones(
    tmp_path, compose_config, monkeypatch
):
    root = tmp_path / "sweep"
    model = ("best.pt", {"w": torch.zeros(2)})
    for name in ("scored", "scored_as_text"):
        write_run(root / name, compose_config(), test_scores=(9.5, 40.0), checkpoint=model)
        for kept in (compare.TEST_HYPS, compare.TEST_REFS):
            (root / name / kept).write_text("하나\n", encoding="utf-8")
    # "scored" protected inline markup, as evaluate_test does by default; "scored_as_text"
    # (a report without the key, from before) did not: decoded again
    scores = root / "scored" / "test_scores.json"
    report = json.loads(scores.read_text())
    report["systems"][0]["markup"] = True
    scores.write_text(json.dumps(report))
    # scores without the hypotheses (a sweep compared before they were kept): decoded again
    write_run(root / "no_hyps", compose_config(), test_scores=(1.0, 2.0), checkpoint=model)
    write_run(root / "unscored", compose_config("search=greedy"), checkpoint=model)
    write_run(root / "untrained", compose_config())
    calls = []

    def fake_evaluate(
        ckpt, search_cfg, split, device, out_path, ref_out_path, max_sentences, markup
    ):
        calls.append((Path(ckpt), search_cfg["name"], split, device, max_sentences, markup))
        assert (out_path, ref_out_path) == (
            Path(ckpt).parents[1] / compare.TEST_HYPS,
            Path(ckpt).parents[1] / compare.TEST_REFS,
        )
        Path(out_path).write_text("하나\n", encoding="utf-8")
        Path(ref_out_path).write_text("둘\n", encoding="utf-8")
        scores = {"bleu_ko-mecab": {"score": 3.5}, "chrf": {"score": 12.0}}
        return {"systems": [{"lines": 1, "scores": scores, "markup": markup}]}

    monkeypatch.setattr(compare, "evaluate_checkpoint", fake_evaluate)
    result = run_main(
        "nmt.compare", f"sweep={quote(root)}", "evaluate_test=true", "device=cpu", "max_sentences=1"
    )
    assert result.returncode == 0, result.stderr
    # only the runs with a best.pt and no test_scores.json (made with markup protected) or no
    # hypotheses, with their own search settings
    assert calls == [
        (root / "no_hyps" / "checkpoints" / "best.pt", "beam", "test", "cpu", 1, True),
        (root / "scored_as_text" / "checkpoints" / "best.pt", "beam", "test", "cpu", 1, True),
        (root / "unscored" / "checkpoints" / "best.pt", "greedy", "test", "cpu", 1, True),
    ]
    assert (root / "unscored" / compare.TEST_REFS).read_text(encoding="utf-8") == "둘\n"
    runs = {r["name"]: r for r in json.loads((root / "comparison.json").read_text())}
    assert (runs["unscored"]["test_bleu"], runs["unscored"]["test_chrf"]) == (3.5, 12.0)
    assert "test: first 1 sentences only" in runs["unscored"]["notes"]
    assert not any("first" in note for note in runs["scored"]["notes"])
    assert runs["scored"]["test_bleu"] == 9.5


@pytest.mark.parametrize("make", [lambda d: d.mkdir(), lambda d: None], ids=["empty", "missing"])
def test_no_runs_is_an_error(tmp_path, make):
    sweep = tmp_path / "sweep"
    make(sweep)
    result = run_main("nmt.compare", f"sweep={quote(sweep)}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {sweep}: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep" / "comparison.md").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "sweep: no value; give the sweep's folder (its hydra.sweep.dir), sweep=DIR"),
        (["sweep=.", "evaluate_test=yes"], "evaluate_test: expected true or false; got 'yes'"),
        (["sweep=.", "device=gpu"], "device: expected auto, cpu or cuda; got 'gpu'"),
    ],
)
def test_bad_keys_are_one_line_naming_the_key(args, message):
    result = run_main("nmt.compare", *args)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"


# --------------------------------------------------------------------------------------------
# variants over seeds, and significance against a baseline


def korean_references(corpora_dir: Path, n: int = 40) -> list[str]:
    """The Korean side of the first ``n`` test pairs of the real corpus."""
    lines = (corpora_dir / "enko" / "test.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[1] for line in lines[:n]]


def degrade(sentence: str, keep: int) -> str:
    """The sentence with only every ``keep``-th word kept: a clearly worse translation."""
    return " ".join(sentence.split()[::keep])


def write_outputs(run_dir: Path, hypotheses: list[str], references: list[str]) -> None:
    (run_dir / compare.TEST_HYPS).write_text("".join(h + "\n" for h in hypotheses), "utf-8")
    (run_dir / compare.TEST_REFS).write_text("".join(r + "\n" for r in references), "utf-8")


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, corpora_dir, compose_config):
    """Three variants × seeds: global general (seeds 1, 2, 3; the baseline: half-degraded
    outputs), local_p general (seeds 1, 2, 3; the references themselves, clearly better) and
    local_m general (seeds 1, 2; the baseline's outputs but for two sentences, a difference
    too small to be significant), with test scores and valid perplexities known in advance."""
    root = tmp_path_factory.mktemp("seeds") / "sweep"
    refs = korean_references(corpora_dir)
    general = compose_config("model/attention=general")  # composed once: Hydra takes ~1 s
    variants = {
        "global": ([2, 2, 2], [(4.0, 20.0), (5.0, 21.0), (6.0, 25.0)]),
        "local_p": ([0, 0, 0], [(8.0, 30.0)] * 3),
        "local_m": ([2, 2], [(4.5, 20.0), (4.5, 22.0)]),
    }
    for kind, (keeps, scores) in variants.items():
        for seed, (keep, test_scores) in enumerate(zip(keeps, scores, strict=True), start=1):
            run_dir = root / f"{kind}-seed{seed}"
            config = general.copy()
            config.model.attention.type, config.seed = kind, seed
            record = validation(100, 1.0, 10.0, 1.0, 0.5, 0.5) | {"perplexity": 100.0 + seed}
            write_run(run_dir, config, validations=[record], test_scores=test_scores)
            # seed-dependent outputs: each seed degrades from a different word on
            hyps = refs if keep == 0 else [degrade(r, keep + (i + seed) % 2) for i, r in
                                           enumerate(refs)]  # fmt: skip
            if kind == "local_m":  # the baseline's output of the same seed, but 2 sentences
                hyps = [degrade(r, 2 + (i + seed) % 2 if i > 1 else 4) for i, r in enumerate(refs)]
            write_outputs(run_dir, hyps, refs)
    return root, refs


VARIANT_HEADER = "| variant | runs | seeds |"
SAMPLES = 200  # resamples / trials: enough for p < 0.05 (p ≥ 1/201), and fast


def test_variants_give_mean_and_std_over_seeds_and_mark_significant_differences(
    seed_sweep, tmp_path
):
    root, refs = seed_sweep
    out = tmp_path / "report"
    result = run_main(
        "nmt.compare", f"sweep={quote(root)}", f"out={quote(out)}", f"samples={SAMPLES}"
    )
    assert result.returncode == 0, result.stderr
    rows = table_rows((out / "comparison.md").read_text(), VARIANT_HEADER)
    assert table_rows(result.stdout, VARIANT_HEADER) == rows
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    labels = [c[0] for c in cells]
    assert labels == [
        "general/gru/luong (baseline)",
        "local_m-general-D10/gru/luong",
        "local_p-general-D10/gru/luong",
    ]
    base, local_m, local_p = cells
    # runs, seeds, valid ppl (101, 102, 103), valid BLEU, test BLEU (4, 5, 6), test chrF
    assert base[1:7] == ["3", "1, 2, 3", "102.0 ± 1.0", "1.00 ± 0.00", "5.00 ± 1.00",
                         "22.00 ± 2.65"]  # fmt: skip
    assert local_m[1:3] == ["2", "1, 2"]
    assert local_m[5] == "4.50 ± 0.00"
    assert base[8:12] == ["—", "—", "—", "—"]  # the baseline is not tested against itself

    variants = {v["label"]: v for v in json.loads((out / "variants.json").read_text())}
    better = variants["local_p-general-D10/gru/luong"]["significance"]
    same = variants["local_m-general-D10/gru/luong"]["significance"]
    assert better["paired_runs"] == 3 and better["segments"] == 3 * len(refs)
    assert same["paired_runs"] == 2 and same["segments"] == 2 * len(refs)  # the shorter side
    assert better["bleu_p"] < 0.05 and better["chrf_p"] < 0.05
    assert better["bleu"] == pytest.approx(100.0)  # the references themselves
    assert local_p[9].endswith(" *") and local_p[11].endswith(" *")
    assert float(local_p[8]) > 0  # Δ BLEU (pooled)
    # two sentences changed: a small difference, not significant, no mark
    assert same["bleu"] != same["baseline_bleu"]
    assert same["bleu_p"] > 0.05 and same["chrf_p"] > 0.05
    assert not local_m[9].endswith("*") and not local_m[11].endswith("*")
    assert float(local_m[9]) == pytest.approx(same["bleu_p"], abs=5e-4)


def test_outputs_identical_to_the_baseline_are_not_marked(seed_sweep, tmp_path):
    """sacrebleu's paired test gives identical systems p = 1/(samples + 1): such a variant is
    noted, not marked significant."""
    root = tmp_path / "sweep"
    shutil.copytree(seed_sweep[0], root)  # the fixture is shared: change a copy
    for seed in (1, 2):
        for name in (compare.TEST_HYPS, compare.TEST_REFS):
            source = root / f"global-seed{seed}" / name
            (root / f"local_m-seed{seed}" / name).write_bytes(source.read_bytes())
    _, variants = compare.compare(root, log=lambda _: None, samples=SAMPLES)
    same = next(v for v in variants if v.label.startswith("local_m"))
    assert same.significance is None
    assert same.notes == ["test outputs identical to the baseline's: not tested"]


def test_pooled_test_is_sacrebleus_paired_bootstrap_on_the_concatenated_seeds(seed_sweep, tmp_path):
    """The figures are sacrebleu's own: the same test called directly on the runs' outputs,
    seed k of the variant paired with seed k of the baseline and concatenated."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    root, _ = seed_sweep
    _, variants = compare.compare(root, tmp_path, log=lambda _: None, samples=SAMPLES)
    tested = next(v for v in variants if v.label.startswith("local_p"))

    def pooled(prefix: str, name: str) -> list[str]:
        return [
            line
            for seed in (1, 2, 3)
            for line in (root / f"{prefix}-seed{seed}" / name).read_text("utf-8").splitlines()
        ]

    _, scores = PairedTest(
        [("b", pooled("global", compare.TEST_HYPS)), ("s", pooled("local_p", compare.TEST_HYPS))],
        {"bleu": BLEU(tokenize="ko-mecab"), "chrf": CHRF()},
        [pooled("global", compare.TEST_REFS)],
        test_type="bs",
        n_samples=SAMPLES,
    )()
    bleu_name, chrf_name = (name for name in scores if name != "System")
    assert tested.significance.bleu_p == scores[bleu_name][1].p_value
    assert tested.significance.chrf_p == scores[chrf_name][1].p_value
    assert tested.significance.bleu == scores[bleu_name][1].score
    assert tested.significance.baseline_bleu == scores[bleu_name][0].score


def test_baseline_and_test_type_can_be_chosen(seed_sweep, tmp_path):
    root, _ = seed_sweep
    out = tmp_path / "ar"
    result = run_main(
        "nmt.compare", f"sweep={quote(root)}", f"out={quote(out)}", "baseline=local_p-seed2",
        "significance=ar", f"samples={SAMPLES}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    variants = json.loads((out / "variants.json").read_text())
    assert [v["baseline"] for v in variants] == [False, False, True]  # chosen by a run's name
    assert {v["significance"]["test"] for v in variants if not v["baseline"]} == {"ar"}
    assert all(v["significance"]["bleu_p"] < 0.05 for v in variants if not v["baseline"])
    assert "paired approximate randomisation (`ar`)" in (out / "comparison.md").read_text()

    _, by_label = compare.compare(
        root, tmp_path / "m", log=lambda _: None, baseline="local_m-general-D10/gru/luong",
        samples=SAMPLES,
    )  # fmt: skip
    assert [v.baseline for v in by_label] == [False, True, False]


@pytest.mark.parametrize(
    "args, message",
    [
        (["baseline=nope"], "error: baseline: no variant or run 'nope'; the variants are "
         "general/gru/luong, local_m-general-D10/gru/luong, local_p-general-D10/gru/luong"),
        (["significance=t"], "error: significance: expected one of bs, ar; got 't'"),
        (["samples=0"], "error: samples: expected an integer >= 1 or null; got 0"),
        (["max_sentences=0"], "error: max_sentences: expected an integer >= 1 or null; got 0"),
    ],
)  # fmt: skip
def test_bad_baseline_or_test_is_one_line(seed_sweep, tmp_path, args, message):
    root, _ = seed_sweep
    result = run_main(
        "nmt.compare", f"sweep={quote(root)}", f"out={quote(tmp_path / 'out')}", *args
    )
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out" / "comparison.md").exists()


def test_runs_that_differ_in_more_than_the_seed_are_separate_variants(tmp_path, compose_config):
    root = tmp_path / "sweep"
    for name, overrides in {
        "a-seed1": ["seed=1"],
        "a-seed2": ["seed=2"],
        "lr": ["seed=1", "optim.lr=1e-3"],
    }.items():
        write_run(root / name, compose_config(*overrides), test_scores=(1.0, 2.0))
    _, variants = compare.compare(root, log=lambda _: None)
    assert [(v.label, v.runs) for v in variants] == [
        ("general/gru/luong (a-seed1)", ["a-seed1", "a-seed2"]),
        ("general/gru/luong (lr)", ["lr"]),
    ]
    assert variants[1].figures["test_bleu"] == compare.Spread(1.0, None, 1)  # one run: no std
    assert variants[1].notes == ["1 run(s) without test_hyps.txt/test_refs.txt"]
    assert variants[1].significance is None
