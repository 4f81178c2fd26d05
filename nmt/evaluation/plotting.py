"""Attention heat maps, drawn with a font that has Hangul (no tofu boxes).

Figures are built as :class:`matplotlib.figure.Figure` objects, not through pyplot, so nothing
here selects a backend or changes matplotlib's global settings: a notebook keeps its inline
plots. The Korean font is chosen inside :func:`korean_rc`, a ``plt.rc_context``-style override.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import torch
from matplotlib.figure import Figure

# Fonts with Hangul, most common first (Debian: fonts-noto-cjk, fonts-nanum; macOS; Windows).
KOREAN_FONTS = (
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "NanumGothic",
    "NanumBarunGothic",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "Malgun Gothic",
    "UnDotum",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
)
# File-name parts of such fonts, for fonts installed after matplotlib built its font cache.
KOREAN_FONT_FILES = ("NotoSansCJK", "NotoSansKR", "Nanum", "UnDotum", "malgun", "AppleSDGothic")


@functools.cache
def korean_font() -> str | None:
    """The name of an installed font with Hangul, or None (after one warning saying what to
    install). Looks in matplotlib's font list, then among the system's font files."""
    from matplotlib import font_manager

    for attempt in ("cached", "system files"):
        known = {font.name for font in font_manager.fontManager.ttflist}
        for name in KOREAN_FONTS:
            if name in known:
                return name
        if attempt == "cached":
            for path in font_manager.findSystemFonts():
                if any(part in Path(path).name for part in KOREAN_FONT_FILES):
                    font_manager.fontManager.addfont(path)
    warnings.warn(
        "no font with Hangul found: Korean labels will show as boxes; install one "
        "(Debian/Ubuntu: apt-get install fonts-noto-cjk or fonts-nanum)",
        stacklevel=2,
    )
    return None


@contextmanager
def korean_rc() -> Iterator[None]:
    """Text created inside this block uses :func:`korean_font` (by name, so a figure drawn later,
    e.g. by TensorBoard, keeps it), falling back to sans-serif."""
    font = korean_font()
    settings = {
        "axes.unicode_minus": False,
        "font.family": [font, "sans-serif"] if font else ["sans-serif"],
    }
    with matplotlib.rc_context(settings):
        yield


def readable(pieces: Sequence[str]) -> list[str]:
    """SentencePiece's word-start mark ▁ is missing from some CJK fonts: show it as ``_``."""
    return [p.replace("\u2581", "_") for p in pieces]


def attention_figure(
    attn: torch.Tensor, src_pieces: Sequence[str], tgt_pieces: Sequence[str], title: str = ""
) -> Figure:
    """A heat map of ``attn`` (tgt_len, src_len): source subwords on x, target subwords on y."""
    attn = attn.detach().float().cpu()
    tgt_len, src_len = attn.shape
    width = min(2 + 0.35 * src_len, 24)
    height = min(1.5 + 0.35 * tgt_len, 24)
    with korean_rc():
        fig = Figure(figsize=(width, height), dpi=80)
        ax = fig.subplots()
        ax.imshow(attn.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        labels_x = readable(src_pieces)[:src_len]
        ax.set_xticks(range(src_len), labels=labels_x, rotation=90, fontsize=9)
        ax.set_yticks(range(tgt_len), labels=readable(tgt_pieces)[:tgt_len], fontsize=9)
        ax.set_xlabel("source (English subwords)")
        ax.set_ylabel("target (Korean subwords)")
        if title:
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
    return fig


def save_attention_png(path, attn, src_pieces, tgt_pieces, title: str = "") -> None:
    fig = attention_figure(attn, src_pieces, tgt_pieces, title)
    with korean_rc():
        fig.savefig(path)
