"""``python -m nmt.translate ckpt=… input=FILE|- output=FILE``: translate English into Korean.

With ``input=-`` lines are read from stdin; with no ``input`` an interactive prompt translates one
sentence at a time. ``attention_plot=DIR`` writes one heat map per sentence (``DIR/00001.png``…).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nmt import REPO_ROOT
from nmt.checkpoint import load_for_inference
from nmt.data.corpus import normalize, read_lines
from nmt.data.vocab import Vocab
from nmt.errors import NMTError, exit_on_user_error
from nmt.metrics import write_text_atomic
from nmt.runtime import pick_device
from nmt.search import Hypothesis, decode_lines


class Translator:
    """A checkpoint ready to translate: model, vocabularies and search settings."""

    def __init__(self, ckpt: str | Path, search_cfg: DictConfig, device: str = "cpu"):
        self.device = pick_device(device)
        self.model, self.src_vocab, self.tgt_vocab, self.train_cfg = load_for_inference(
            ckpt, self.device
        )
        self.search_cfg = search_cfg

    def translate(self, lines: Sequence[str]) -> tuple[list[str], list[Hypothesis]]:
        """Detokenised best translations and their hypotheses (tokens, score, attention)."""
        lines = [normalize(line) for line in lines]
        nbest = decode_lines(self.model, self.src_vocab, lines, self.search_cfg, self.device)
        best = [hyps[0] for hyps in nbest]
        return self.tgt_vocab.decode([h.tokens for h in best]), best

    def plot(
        self, folder: Path, start: int, lines: Sequence[str], best: Sequence[Hypothesis]
    ) -> None:
        from nmt.plotting import save_attention_png

        folder.mkdir(parents=True, exist_ok=True)
        for offset, (line, hyp) in enumerate(zip(lines, best, strict=True)):
            if hyp.attn_weights.numel() == 0:
                continue
            src_pieces = pieces_with_eos(self.src_vocab, normalize(line))
            tgt_pieces = self.tgt_vocab.pieces(hyp.tokens) + ["</s>"]
            save_attention_png(
                folder / f"{start + offset:05d}.png",
                hyp.attn_weights,
                src_pieces,
                tgt_pieces,
                line[:80],
            )


def pieces_with_eos(vocab: Vocab, line: str) -> list[str]:
    return vocab.pieces(vocab.encode([line])[0]) + ["</s>"]


def interactive(translator: Translator, plot_dir: Path | None) -> None:
    print("Type an English sentence (Ctrl-D to quit).", file=sys.stderr)
    count = 0
    while True:
        try:
            line = input("en> ")
        except EOFError:
            print(file=sys.stderr)
            return
        texts, best = translator.translate([line])
        print(f"ko> {texts[0]}")
        if plot_dir:
            translator.plot(plot_dir, count + 1, [line], best)
        count += 1


@hydra.main(config_path=str(REPO_ROOT / "configs"), config_name="translate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    translator = Translator(cfg.ckpt, cfg.search, cfg.device)
    plot_dir = Path(cfg.attention_plot) if cfg.attention_plot else None
    if cfg.input is None:
        interactive(translator, plot_dir)
        return
    if cfg.input == "-":
        lines = [line.rstrip("\r\n") for line in sys.stdin]
    else:
        lines = [text for _, text in read_lines(Path(cfg.input))]
    if not lines:
        raise NMTError(f"input={cfg.input}: no lines to translate")
    texts, best = translator.translate(lines)
    if plot_dir:
        translator.plot(plot_dir, 1, lines, best)
    output = "".join(t + "\n" for t in texts)
    if cfg.output:
        write_text_atomic(cfg.output, output)
    else:
        sys.stdout.write(output)


if __name__ == "__main__":
    main()
