"""Attention heat maps with a font that has Hangul (no tofu boxes)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import koreanize_matplotlib  # noqa: E402,F401  (registers and selects NanumGothic)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

plt.rcParams["axes.unicode_minus"] = False


def readable(pieces: Sequence[str]) -> list[str]:
    """SentencePiece's word-start mark ▁ is not in NanumGothic: show it as an underscore."""
    return [p.replace("\u2581", "_") for p in pieces]


def attention_figure(
    attn: torch.Tensor, src_pieces: Sequence[str], tgt_pieces: Sequence[str], title: str = ""
):
    """A heat map of ``attn`` (tgt_len, src_len): source subwords on x, target subwords on y."""
    attn = attn.detach().float().cpu()
    tgt_len, src_len = attn.shape
    width = min(2 + 0.35 * src_len, 24)
    height = min(1.5 + 0.35 * tgt_len, 24)
    fig, ax = plt.subplots(figsize=(width, height), dpi=80)
    ax.imshow(attn.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(src_len), labels=readable(src_pieces)[:src_len], rotation=90, fontsize=9)
    ax.set_yticks(range(tgt_len), labels=readable(tgt_pieces)[:tgt_len], fontsize=9)
    ax.set_xlabel("source (English subwords)")
    ax.set_ylabel("target (Korean subwords)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_attention_png(path, attn, src_pieces, tgt_pieces, title: str = "") -> None:
    fig = attention_figure(attn, src_pieces, tgt_pieces, title)
    fig.savefig(path)
    plt.close(fig)
