"""Eager PyTorch beside exported ONNX folders: decoding speed, BLEU and identical outputs.

The check ``scripts/bench_export.py`` runs after ``nmt-export`` (docs/export.md): the same
sentences of a checkpoint's corpus decoded by eager PyTorch and by each exported folder
(onnxruntime fp32, int8), greedy and beam, in one process with the same thread count. It scores
the outputs (:func:`nmt.evaluation.metrics.score_corpus`), so it lives at the evaluation layer,
above :mod:`nmt.inference.onnx_export`, which writes and checks the graphs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nmt.data.pipeline import read_split
from nmt.evaluation.metrics import Headline, score_corpus
from nmt.inference.translator import Translator


def benchmark_backends(
    ckpt: str | Path,
    exported: dict[str, str | Path],
    split: str = "test",
    threads: int = 1,
    beam_size: int = 5,
    rounds: int = 2,
    max_sentences: int | None = None,
) -> dict[str, Any]:
    """Decode ``split`` of the checkpoint's corpus with eager PyTorch and each exported folder
    (``{"onnx fp32": DIR, "onnx int8": DIR}``), greedy and beam ``beam_size``, all in this
    process with ``threads`` torch and onnxruntime intra-op threads.

    Per search and system: sentences/s (the fastest of ``rounds`` passes, the systems taking
    turns within a round so that a change in machine load hits all of them), BLEU (ko-mecab,
    the validation metric), and the number of output lines identical to eager's.
    """
    torch.set_num_threads(threads)
    # eager in fp32, as the exported graphs are: whatever the checkpoint's search.precision
    eager = Translator.from_checkpoint(ckpt, "cpu", backend="torch", precision="fp32")
    systems = {"eager": eager}
    systems.update({name: Translator.from_checkpoint(d, "cpu") for name, d in exported.items()})
    sources, references, _, _ = read_split(systems["eager"].info.config, split, log=_stderr)
    sources, references = sources[:max_sentences], references[:max_sentences]
    searches = {"greedy": {"name": "greedy"}, f"beam {beam_size}": {"beam_size": beam_size}}
    report: dict[str, Any] = {"ckpt": str(ckpt), "split": split, "sentences": len(sources)}
    report.update(threads=threads, cpu_count=os.cpu_count(), rounds=rounds, searches={})
    for search, overrides in searches.items():
        translators = {name: t.with_settings(**overrides) for name, t in systems.items()}
        seconds = {name: float("inf") for name in translators}
        texts: dict[str, list[str]] = {}
        for _ in range(rounds):
            for name, translator in translators.items():
                translator.translate(sources[:2])  # warm-up
                start = time.perf_counter()
                texts[name] = translator.translate_text(sources)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
        rows = {}
        for name in translators:
            bleu = Headline.of(score_corpus(texts[name], references, ["ko-mecab"])).bleu
            rows[name] = {
                "seconds": seconds[name],
                "sentences_per_s": len(sources) / seconds[name],
                "speedup_vs_eager": seconds["eager"] / seconds[name],
                "bleu_ko-mecab": bleu,
                "identical_to_eager": sum(
                    a == b for a, b in zip(texts[name], texts["eager"], strict=True)
                ),
            }
        report["searches"][search] = rows
    return report


def format_benchmark(report: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    lines = [
        f"{report['sentences']} sentences of {report['split']}, {report['threads']} thread(s) "
        f"for torch and onnxruntime, fastest of {report['rounds']} rounds",
        "",
        "| search | system | sentences/s | × eager | BLEU (ko-mecab) | identical to eager |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for search, rows in report["searches"].items():
        for name, row in rows.items():
            lines.append(
                f"| {search} | {name} | {row['sentences_per_s']:.1f} | "
                f"{row['speedup_vs_eager']:.2f} | {row['bleu_ko-mecab']:.2f} | "
                f"{row['identical_to_eager']} / {report['sentences']} |"
            )
    return "\n".join(lines)


def _stderr(line: str) -> None:
    """Data preparation's progress lines: on stderr, where the table on stdout stays clean."""
    print(line, file=sys.stderr)
