"""``python -m nmt.translate ckpt=… [input=FILE|-] [output=FILE]``: translate English into Korean.

Input: ``input=FILE``, or stdin (``input=-``, or no ``input`` when stdin is not a terminal).
On a terminal with no ``input`` an interactive prompt translates one sentence at a time; the
prompts go to stderr, so stdout holds translations only.

Output, one line per hypothesis, tab-separated columns (``n_best`` lines per input with
``search.n_best``):

    [index]  [score]  text  [alignment]

* ``index``: the input line's number (0-based), printed when ``search.n_best > 1``;
* ``score``: the hypothesis's log-probability (sum over its subwords and ``</s>``), printed
  with ``scores=true`` or when ``search.n_best > 1``;
* ``alignment``: with ``alignment=true``, ``S-T`` pairs (Pharaoh format, as fairseq's
  ``--print-alignment``): target subword T's largest attention weight is on source subword S.

``attention_plot=DIR`` writes one heat map per sentence (``DIR/00001.png``…).

Constraints: ``glossary=FILE.tsv`` (English term<TAB>Korean term, :mod:`nmt.data.glossary`)
makes the Korean side of every term found in a sentence a phrase its translation must contain;
``input_format=jsonl`` reads ``{"text": …, "constraints": [...], "avoid": [...]}`` lines
(phrases to contain, phrases not to contain) and writes one JSON
object per translation (:mod:`nmt.inference.jsonl`). A phrase the search could not fit is
listed on stderr with its line number, and a summary line counts the phrases met.

Before translating, one line on stderr says what decodes, e.g.
``precision: fp32 (search.precision=auto: fp32 on every device, …); backend torch on cpu``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

import nmt.config.resolvers  # noqa: F401  (the resolvers configs/ uses)
from nmt.config.schema import TranslateConfig, check_command
from nmt.core.errors import NMTError, exit_on_user_error, str_list
from nmt.core.io import write_text_atomic
from nmt.core.paths import CONFIG_DIR
from nmt.data.corpus import read_text_lines
from nmt.inference.jsonl import format_jsonl, parse_jsonl
from nmt.inference.translator import Translation, Translator


def format_translations(
    translations: Sequence[Translation], n_best: int, scores: bool, alignment: bool
) -> str:
    """The output lines described in the module docstring, each ending in a newline."""
    lines = []
    for index, best in enumerate(translations):
        for hyp in best.nbest[:n_best] if n_best > 1 else [best]:
            columns = [str(index)] if n_best > 1 else []
            if scores or n_best > 1:
                columns.append(f"{hyp.score:.4f}")
            columns.append(hyp.text.replace("\n", " ").replace("\t", " "))
            if alignment:
                columns.append(" ".join(f"{s}-{t}" for s, t in hyp.alignment()))
            lines.append("\t".join(columns) + "\n")
    return "".join(lines)


def describe_decoding(translator: Translator) -> str:
    """The stderr line that says what decodes: precision (and why), backend, device."""
    precision = translator.precision
    return (
        f"precision: {precision.name} ({precision.reason}); "
        f"backend {translator.backend} on {translator.device}"
    )


def report_constraints(translations: Sequence[Translation]) -> None:
    """On stderr: each sentence whose output misses a phrase, and how many phrases were met."""
    imposed = missed = 0
    for index, t in enumerate(translations):
        imposed += len(t.constraints)
        missed += len(t.missing_constraints)
        if t.missing_constraints:
            missing = ", ".join(repr(p) for p in t.missing_constraints)
            print(f"line {index + 1}: constraint not met: {missing}", file=sys.stderr)
    if imposed:
        sentences = sum(1 for t in translations if t.constraints)
        print(
            f"constraints: {imposed - missed} of {imposed} met, in {sentences} sentences",
            file=sys.stderr,
        )


def read_input(source: str) -> list[str]:
    """Lines of ``source`` (a path, or ``-`` for stdin), split at ``\\n`` only, as UTF-8."""
    if source != "-":
        return read_text_lines(source, "input")
    raw = sys.stdin.buffer.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise NMTError(f"stdin:{line}: invalid UTF-8 (byte 0x{raw[err.start]:02x})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [line.rstrip("\r") for line in lines]


def plot_attention(folder: Path, start: int, translations: Sequence[Translation]) -> None:
    from nmt.evaluation.plotting import save_attention_png

    folder.mkdir(parents=True, exist_ok=True)
    for offset, t in enumerate(translations):
        if t.attention.numel() == 0:
            continue
        src_pieces, tgt_pieces = t.attention_labels()
        title = "".join(t.source_tokens).replace("▁", " ").strip()[:80]
        save_attention_png(
            folder / f"{start + offset:05d}.png", t.attention, src_pieces, tgt_pieces, title
        )


def interactive(translator: Translator, config: TranslateConfig, plot_dir: Path | None) -> None:
    print("Type an English sentence (Ctrl-D to quit).", file=sys.stderr)
    count = 0
    while True:
        try:
            print("en> ", end="", file=sys.stderr, flush=True)
            line = input()
        except EOFError:
            print(file=sys.stderr)
            return
        result = translator.translate([line])
        n_best = translator.settings.n_best
        text = format_translations(result, n_best, config.scores, config.alignment)
        print("ko> ", end="", file=sys.stderr, flush=True)
        sys.stdout.write(text)
        sys.stdout.flush()
        if plot_dir:
            plot_attention(plot_dir, count + 1, result)
        count += 1


@hydra.main(config_path=str(CONFIG_DIR), config_name="translate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    config: TranslateConfig = check_command("translate", cfg)
    # config.search: the keys search= sets; the checkpoint's own values for the rest
    # ckpt=[a.pt,b.pt]: an ensemble (nmt.inference.ensemble)
    paths = str_list(config.ckpt, "ckpt")
    translator = Translator.from_checkpoints(
        paths, config.device, ensemble=config.ensemble, **config.search
    ).with_markup(config.markup)
    translator = translator.with_glossary(config.glossary)
    plot_dir = Path(config.attention_plot) if config.attention_plot else None
    jsonl = config.input_format == "jsonl"
    if config.input is None and sys.stdin.isatty() and not jsonl:
        print(describe_decoding(translator), file=sys.stderr)
        interactive(translator, config, plot_dir)
        return
    lines = read_input("-" if config.input is None else config.input)
    constraints = avoid = None
    if jsonl:
        lines, constraints, avoid = parse_jsonl(lines, config.input or "stdin")
    if not lines:
        raise NMTError(f"input={config.input or '-'}: no lines to translate")
    print(describe_decoding(translator), file=sys.stderr)  # once the input is known to be good
    result = translator.translate(
        lines, progress=config.progress, constraints=constraints, avoid=avoid
    )
    report_constraints(result)
    if plot_dir:
        plot_attention(plot_dir, 1, result)
    n_best = translator.settings.n_best
    if jsonl:
        output = format_jsonl(result, n_best)
    else:
        output = format_translations(result, n_best, config.scores, config.alignment)
    if config.output:
        write_text_atomic(config.output, output)
    else:
        sys.stdout.write(output)


if __name__ == "__main__":
    main()
