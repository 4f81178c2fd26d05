"""Attention: five score functions behind one interface, one shared masked softmax and context.

Each score function is one :class:`Score` subclass registered in :data:`SCORES` under its
config name; it declares the ``model.attention`` keys it needs and its FLOPs, and
:func:`build_attention` and ``nmt-benchmark`` ask it (:mod:`nmt.models.registry`).  A new score
function is one such class here plus one ``configs/model/attention/<name>.yaml``.

Notation (one name per thing across the code base):

- ``query``   the decoder state that asks, q ∈ R^{query_size}          (batch, tgt_len, query_size)
- ``values``  the encoder states h_1..h_S that are averaged            (batch, src_len, value_size)
- ``keys``    what the score compares the query with: the values, or a projection of them
              computed once per batch by :meth:`Attention.project_keys` (batch, src_len, key_size)
- ``scores``  e_j = score(q, h_j), one per source position              (batch, tgt_len, src_len)
- ``attn_weights``  α_j = exp(e_j) / Σ_{real j'} exp(e_j'), 0 on padding (batch, tgt_len, src_len)
- ``context`` c = Σ_j α_j h_j                                            (batch, tgt_len, value_size)
- ``src_mask`` bool (batch, src_len), **True = real token**, False = padding.

Each score function only returns raw scores; :func:`attend` masks, normalises and forms the
context for all of them (Bahdanau et al. 2015, eqs. 5-6; Luong et al. 2015, eqs. 7-8).

Queries carry a ``tgt_len`` axis so that one call can score every decoder step at once (the
Luong decoder without input feeding) or a single step (``tgt_len == 1``).

Query and key sizes: with a bidirectional encoder the values are 2·hidden wide while the query
is the decoder's hidden size.  ``general`` and ``concat`` have a learned matrix on the key side
that maps any value size to the size they need.  ``dot`` and ``scaled_dot`` have no parameters
when the sizes agree; when they differ, the keys are a learned linear projection of the values
to the query size (no bias), k_j = W_k h_j, computed once per batch; ``dot`` is then the same
function family as ``general`` (qᵀ W_k h_j), and stays parameter-free only where the decoder
hidden size equals the encoder output size.  ``location`` does not look at the keys' contents
(only at their number, src_len).

Global or local (``model.attention.type``, Luong et al. 2015, §3.1-3.2): global attention
normalises over every real source position.  Local attention first picks a window centre p_t
per target step t and normalises only over the real positions s with |s − p_t| ≤ D
(``model.attention.window``); all other positions get weight exactly 0 (:class:`LocalWindow`).
It combines with every score function and keeps the weights' shape (batch, tgt_len, src_len).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from nmt.core.errors import NMTError
from nmt.core.settings import setting
from nmt.models.registry import Declared, Registry

ATTENTION_TYPES = ("global", "local_m", "local_p")


@dataclass(frozen=True, kw_only=True)
class AttentionSettings:
    """``score``, ``type`` and ``window``, plus the keys the score's class declares
    (``hidden_size`` for concat, ``max_src_len`` for location: ``config_keys`` in
    nmt/models/attention.py) in ``options``. ``type`` and ``window`` may be absent from configs
    saved before local attention: global attention."""

    REGISTRY: ClassVar[Callable[[], Mapping[str, Any]]] = staticmethod(lambda: SCORES)
    PART_FIELD: ClassVar[str] = "score"

    score: str = setting(choices=lambda: SCORES)
    type: str = setting(choices=ATTENTION_TYPES, default="global")
    window: int | None = setting(ge=1, default=None)  # local attention's D
    heads: int = setting(ge=1, default=1)  # H > 1: MultiHeadScoreAttention; 1: Attention
    options: dict[str, Any] = field(default_factory=dict)  # the score's declared keys


class AttentionOutput(NamedTuple):
    context: Tensor  # (batch, tgt_len, value_size)
    attn_weights: Tensor  # (batch, tgt_len, src_len), exactly 0.0 on padding


def masked_softmax(scores: Tensor, src_mask: Tensor) -> Tensor:
    """α_j = exp(e_j) / Σ_{j' real} exp(e_j'); padded positions get exactly 0.0.

    The scores are filled with -inf at padding and normalised in fp32 (half-precision safe),
    then cast back to the scores' dtype.  Every row must contain at least one real position.

    scores: (batch, tgt_len, src_len); src_mask: bool (batch, src_len), True = real token, or
    (batch, tgt_len, src_len), one mask per target step (local attention's windows).
    """
    mask = src_mask.unsqueeze(1) if src_mask.dim() == 2 else src_mask
    scores32 = scores.float().masked_fill(~mask, float("-inf"))
    return torch.softmax(scores32, dim=-1).to(scores.dtype)  # (batch, tgt_len, src_len)


def weighted_sum(attn_weights: Tensor, values: Tensor) -> Tensor:
    """context = Σ_j α_j · value_j.

    attn_weights: (batch, tgt_len, src_len); values: (batch, src_len, value_size)
    returns (batch, tgt_len, value_size).
    """
    return torch.bmm(attn_weights, values)


def attend(
    scores: Tensor,
    values: Tensor,
    src_mask: Tensor,
    context: Callable[[Tensor, Tensor], Tensor] = weighted_sum,
) -> AttentionOutput:
    """The path shared by every score function: masked softmax over the source, then context
    (``context(attn_weights, values)``; :class:`Attention` passes its own, which may defer the
    values' gradient)."""
    attn_weights = masked_softmax(scores, src_mask)  # (batch, tgt_len, src_len)
    return AttentionOutput(context(attn_weights, values), attn_weights)


class DeferredValueGrads:
    """∂L/∂values of a decoder loop formed once, after the loop's backward, not once per step.

    A loop that attends one step at a time makes autograd form ∂L/∂V = α_tᵀ ∂L/∂c_t at every
    step t, an outer product (batch, src_len, 1) × (batch, 1, value_size), and add it into a
    (batch, src_len, value_size) sum: two passes over that tensor per step. Here each step's
    backward only keeps (α_t, ∂L/∂c_t), and one product over all steps forms the sum,
    ∂L/∂V = Aᵀ G with A (batch, steps, src_len) and G (batch, steps, value_size). A loop of
    softmax and context alone at the reference model's shapes (batch 49, source 82, 80 steps,
    value size 512, fp32, 2-core EPYC): 253 → 67 ms forward and backward; the whole training
    step of ``+experiment=joeynmt_ref``: 2,200 / 2,352 → 2,497 / 2,380 target tokens/s
    (alternating benchmark runs; docs/benchmarks.md).
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[Tensor, Tensor]] = []  # (α_t, ∂L/∂c_t), filled in backward


class _CollectValueGrads(torch.autograd.Function):
    """values → the same values; its backward adds Aᵀ G from the steps' pairs. Autograd runs it
    after every step's backward, because each step's context is computed from its output."""

    @staticmethod
    def forward(ctx, values: Tensor, deferred: DeferredValueGrads) -> Tensor:
        ctx.deferred = deferred
        ctx.set_materialize_grads(False)  # the steps pass no gradient here themselves
        return values.view_as(values)

    @staticmethod
    def backward(ctx, grad_values: Tensor | None):
        pairs, ctx.deferred.pairs = ctx.deferred.pairs, []  # a retained graph collects anew
        if pairs:
            weights = torch.cat([w for w, _ in pairs], dim=1)  # (batch, steps, src_len)
            grads = torch.cat([g for _, g in pairs], dim=1)  # (batch, steps, value_size)
            grad = torch.bmm(weights.transpose(1, 2), grads)  # (batch, src_len, value_size)
            grad_values = grad if grad_values is None else grad_values + grad
        return grad_values, None


class _StepContext(torch.autograd.Function):
    """context = α V for one step; the backward passes ∂L/∂α on and keeps (α, ∂L/∂c)."""

    @staticmethod
    def forward(ctx, attn_weights: Tensor, values: Tensor, deferred: DeferredValueGrads):
        ctx.save_for_backward(attn_weights, values)
        ctx.deferred = deferred
        return torch.bmm(attn_weights, values)  # (batch, tgt_len, value_size)

    @staticmethod
    def backward(ctx, grad_context: Tensor):
        attn_weights, values = ctx.saved_tensors
        ctx.deferred.pairs.append((attn_weights, grad_context))
        return torch.bmm(grad_context, values.transpose(1, 2)), None, None


class ScoreFlops(NamedTuple):
    """Matmul FLOPs of a score function (a multiply-add counts 2)."""

    keys: float  # per source token, once per batch: project_keys
    scores: float  # per target token: the scores e_j over all src_len positions


class Score(nn.Module, Declared, metaclass=ABCMeta):
    """A score function: raw scores e_j = score(q, k_j), one per source position.

    A subclass registered with ``@SCORES.register(name)`` is ``model.attention.score: name``.
    It is built as ``cls(query_size, value_size, **options)``, ``options`` being the keys of
    ``model.attention`` it declares in ``config_keys`` (beyond ``score``, ``type`` and
    ``window``), and it declares its FLOPs in :meth:`flops`.  Masking, the softmax and the
    context are :func:`attend`'s, the same for every score.
    """

    # the keys of ``config_keys`` that are widths: H heads split them as they split the query and
    # the values, each head 1/H (so that H heads cost about what one does)
    per_head_widths: ClassVar[tuple[str, ...]] = ()

    def project_keys(self, values: Tensor) -> Tensor:
        """values (batch, src_len, value_size) → keys (batch, src_len, key_size), once per batch.

        Default: the values themselves (returned as the same tensor, not a copy).
        """
        return values

    @abstractmethod
    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        """query (batch, tgt_len, query_size), keys from :meth:`project_keys` →
        scores (batch, tgt_len, src_len), up to a constant per query (the softmax removes it;
        ``concat`` uses this)."""

    @classmethod
    @abstractmethod
    def flops(cls, query_size: int, value_size: int, src_len: float, **options: Any) -> ScoreFlops:
        """Matmul FLOPs for a mean attended source length ``src_len`` (see :class:`ScoreFlops`)."""


SCORES: Registry[type[Score]] = Registry("model.attention.score")


@SCORES.register("dot")
class DotScore(Score):
    """score(q, k_j) = qᵀ k_j  (Luong et al. 2015, eq. 8, "dot").

    k_j = h_j when the value size equals the query size, else k_j = W_k h_j (learned, no bias).
    """

    def __init__(self, query_size: int, value_size: int):
        super().__init__()
        self.key_proj = (
            None if query_size == value_size else nn.Linear(value_size, query_size, bias=False)
        )

    def project_keys(self, values: Tensor) -> Tensor:
        if self.key_proj is None:
            return values  # (batch, src_len, query_size)
        return self.key_proj(values)  # (batch, src_len, query_size)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        # (batch, tgt_len, query_size) @ (batch, query_size, src_len)
        return torch.bmm(query, keys.transpose(1, 2))  # (batch, tgt_len, src_len)

    @classmethod
    def flops(cls, query_size: int, value_size: int, src_len: float, **options: Any) -> ScoreFlops:
        """keys: 2·V·H when V ≠ H (W_k), else 0; scores: qᵀ k_j, 2·H·S."""
        keys = 2 * value_size * query_size if value_size != query_size else 0
        return ScoreFlops(keys, 2 * query_size * src_len)


@SCORES.register("general")
class GeneralScore(Score):
    """score(q, h_j) = qᵀ W h_j, W ∈ R^{query_size × value_size} learned  (Luong et al. 2015, eq. 8).

    Computed as a dot product with the keys k_j = W h_j, projected once per batch.
    """

    def __init__(self, query_size: int, value_size: int):
        super().__init__()
        self.key_proj = nn.Linear(value_size, query_size, bias=False)  # W

    def project_keys(self, values: Tensor) -> Tensor:
        return self.key_proj(values)  # (batch, src_len, query_size)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (batch, tgt_len, src_len)

    @classmethod
    def flops(cls, query_size: int, value_size: int, src_len: float, **options: Any) -> ScoreFlops:
        """keys: W h_j, 2·V·H; scores: qᵀ k_j, 2·H·S."""
        return ScoreFlops(2 * value_size * query_size, 2 * query_size * src_len)


@SCORES.register("scaled_dot")
class ScaledDotScore(DotScore):
    """score(q, k_j) = qᵀ k_j / √d, d = query size  (Vaswani et al. 2017, eq. 1).

    Keys, and FLOPs (the scaling is element-wise), as in :class:`DotScore`.
    """

    def __init__(self, query_size: int, value_size: int):
        super().__init__(query_size, value_size)
        self.scale = 1.0 / math.sqrt(query_size)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        # (batch, tgt_len, query_size) @ (batch, query_size, src_len)
        return torch.bmm(query * self.scale, keys.transpose(1, 2))  # (batch, tgt_len, src_len)


# Trained on a whole target at once (the Luong decoder without input feeding), the additive
# score's hidden layer is a (batch, tgt_len, src_len, hidden_size) tensor that autograd would keep
# for the backward pass: 4 heads of width 256 over a 4k-token batch take GiBs. Above this many
# cells it is made a few target positions at a time, and made again in the backward pass.
ADDITIVE_CHUNK_ELEMENTS = 1 << 22  # 16 MiB in fp32


def _additive_hidden(q: Tensor, keys: Tensor) -> Tensor:
    """σ(2 (q_t + k_j)) for every target t and source j: q (batch, T, A), keys (batch, S, A) →
    (batch, T, S, A).  σ(2q + 2k) = (tanh(q + k) + 1) / 2: one pass to add, one in place."""
    return torch.add(2 * q.unsqueeze(2), keys.unsqueeze(1), alpha=2).sigmoid_()


def _additive_scores(q: Tensor, keys: Tensor, v: Tensor) -> Tensor:
    """2 vᵀ σ(2 (q_t + k_j)): q (batch, T, A), keys (batch, S, A), v (1, A) → (batch, T, S)."""
    return 2 * nn.functional.linear(_additive_hidden(q, keys), v).squeeze(-1)


class _ChunkedAdditiveScores(torch.autograd.Function):
    """:func:`_additive_scores` with the memory of one chunk of target positions: the forward pass
    keeps only q, keys and v, the backward pass makes each chunk's hidden layer h = σ(2 (q + k))
    again.  With G = ∂L/∂scores and s_tj = 2 Σ_a v_a h_tja:

        ∂L/∂x_tja = 2 G_tj v_a h_tja (1 − h_tja)            (x = 2 (q_t + k_j), σ' = h (1 − h))
        ∂L/∂q_t = 2 Σ_j ∂L/∂x_tj,   ∂L/∂k_j = 2 Σ_t ∂L/∂x_tj,   ∂L/∂v = 2 Σ_tj G_tj h_tj

    The forward pass runs under the caller's autocast (the product with v as ``nn.Linear``
    would); the backward pass is elementwise work and sums in the saved tensors' dtypes.
    """

    @staticmethod
    def forward(ctx, q: Tensor, keys: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(q, keys, v)
        return torch.cat([_additive_scores(part, keys, v) for part in _target_chunks(q, keys)], 1)

    @staticmethod
    def backward(ctx, grad_scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, keys, v = ctx.saved_tensors
        # the sums over chunks accumulate in at least fp32: bf16 would round once per chunk
        wide = torch.promote_types(keys.dtype, torch.float32)
        grad_q = torch.empty_like(q)
        grad_keys = torch.zeros_like(keys, dtype=wide)
        grad_v = torch.zeros_like(v, dtype=torch.promote_types(v.dtype, torch.float32))
        start = 0
        for part in _target_chunks(q, keys):
            end = start + part.size(1)
            hidden = _additive_hidden(part, keys)  # (batch, c, S, A)
            grad = grad_scores[:, start:end].unsqueeze(-1).to(hidden.dtype)  # (batch, c, S, 1)
            grad_v += 2 * (grad * hidden).sum((0, 1, 2), dtype=grad_v.dtype)
            grad_x = (2 * grad * v.to(hidden.dtype)) * hidden * (1 - hidden)  # (batch, c, S, A)
            grad_q[:, start:end] = 2 * grad_x.sum(2)
            grad_keys += 2 * grad_x.sum(1, dtype=wide)
            start = end
        return grad_q, grad_keys.to(keys.dtype), grad_v.to(v.dtype)


def _target_chunks(q: Tensor, keys: Tensor) -> tuple[Tensor, ...]:
    """q split along its target axis into pieces of at most ADDITIVE_CHUNK_ELEMENTS hidden cells."""
    per_position = q.size(0) * keys.size(1) * q.size(2)
    return q.split(max(1, ADDITIVE_CHUNK_ELEMENTS // per_position), dim=1)


@SCORES.register("concat")
class ConcatScore(Score):
    """score(q, h_j) = vᵀ tanh(W [q; h_j] + b) = vᵀ tanh(W_q q + W_k h_j + b)  (additive attention).

    Bahdanau et al. 2015, appendix A.1.2 (e_ij = vᵀ tanh(W s_{i-1} + U h_j)); Luong et al. 2015,
    eq. 8 ("concat").  W = [W_q W_k] is split so that the key half k_j = W_k h_j + b is
    computed once per batch.  v ∈ R^{hidden_size} (``model.attention.hidden_size``).

    Computed as  2 vᵀ σ(2 (W_q q + k_j)),  which is the score above plus Σ_i v_i, the same for
    every source position j, which the softmax over j removes: the same weights (to rounding)
    and gradients.  tanh(x) = 2 σ(2x) − 1, and ``torch.sigmoid`` runs 3.7× faster than
    ``torch.tanh`` on an AVX2 CPU (torch 2.13: 0.61 vs 2.28 ms for the (49, 1, 82, 256) tensor
    of one decoder step, 2 threads); with input feeding this tensor is made at every target
    step, the widest elementwise operation of the decoder.
    """

    config_keys = {"hidden_size": int}
    per_head_widths = ("hidden_size",)

    def __init__(self, query_size: int, value_size: int, hidden_size: int):
        super().__init__()
        self.query_proj = nn.Linear(query_size, hidden_size, bias=False)  # W_q
        self.key_proj = nn.Linear(value_size, hidden_size, bias=True)  # W_k (+ b)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def project_keys(self, values: Tensor) -> Tensor:
        return self.key_proj(values)  # (batch, src_len, hidden_size)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        q = self.query_proj(query)  # (batch, tgt_len, hidden_size)
        batch, tgt_len, width = q.shape
        saved_elements = batch * tgt_len * keys.size(1) * width
        if torch.is_grad_enabled() and saved_elements > ADDITIVE_CHUNK_ELEMENTS:
            return _ChunkedAdditiveScores.apply(q, keys, self.v.weight)
        return _additive_scores(q, keys, self.v.weight)

    @classmethod
    def flops(
        cls, query_size: int, value_size: int, src_len: float, *, hidden_size: int, **options: Any
    ) -> ScoreFlops:
        """keys: W_k h_j, 2·V·A; scores: W_q q, 2·H·A, then vᵀ tanh(·) at every position, 2·A·S."""
        a = hidden_size
        return ScoreFlops(2 * value_size * a, 2 * query_size * a + 2 * a * src_len)


@SCORES.register("location")
class LocationScore(Score):
    """scores = W_a q, one learned row of W_a per source position  (Luong et al. 2015, eq. 9).

    The weights depend on the query alone: the keys are the values, unprojected, and only
    their number (src_len) is used.  W_a has ``max_src_len`` rows (``model.attention.max_src_len``);
    a source longer than that gives its positions ``j >= max_src_len`` the score 0 (the
    scores are ``W_a q`` followed by zeros), so they still take part in the softmax with
    weight exp(0)/Z, and padding is masked to exactly 0 afterwards as for every other score.
    """

    config_keys = {"max_src_len": int}

    def __init__(self, query_size: int, value_size: int, max_src_len: int):
        super().__init__()
        self.max_src_len = max_src_len
        self.position_proj = nn.Linear(query_size, max_src_len, bias=False)  # W_a

    def project_keys(self, values: Tensor) -> Tensor:
        return values  # only src_len = values.size(1) is used

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        src_len = keys.size(1)
        scores = self.position_proj(query)  # (batch, tgt_len, max_src_len)
        # [W_a q ; 0 … 0] cut to src_len: one expression for src_len below and above max_src_len,
        # with no Python branch on a shape, so an exported graph keeps src_len dynamic
        zeros = (
            torch.zeros_like(keys[:, :, 0], dtype=scores.dtype)
            .unsqueeze(1)
            .expand(-1, scores.size(1), -1)
        )
        return torch.cat([scores, zeros], dim=-1)[:, :, :src_len]  # (batch, tgt_len, src_len)

    @classmethod
    def flops(
        cls, query_size: int, value_size: int, src_len: float, *, max_src_len: int, **options: Any
    ) -> ScoreFlops:
        """keys: none (the values' contents are not read); scores: W_a q, all max_src_len rows."""
        return ScoreFlops(0, 2 * query_size * max_src_len)


class LocalWindow(nn.Module):
    """Luong et al. 2015, §3.2: the window of local attention, and local-p's Gaussian.

    Window centre p_t for the query of target step t (0-based, as the source positions s):

        local_m   p_t = min(t, S − 1)                                  (monotonic alignment)
        local_p   p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))               (eq. 10, predictive)

    with S the sentence's source length (its real tokens, from ``src_mask``), W_p ∈
    R^{query_size × query_size} and v_p ∈ R^{query_size} learned.  The scores are normalised
    over the real positions in [p_t − D, p_t + D] only (every other position: weight exactly
    0), and local_p multiplies the result by a Gaussian centred at p_t  (eq. 11):

        a_t(s) = align(h_t, h̄_s) · exp(−(s − p_t)² / (2σ²)),   σ = D / 2

    as the paper does, without normalising again, so local_p's weights sum to at most 1.  The
    window is never empty: the real position nearest p_t (p_t ∈ [0, S]) is at most 1 ≤ D away.  The
    window is a mask, so W_p and v_p learn through the Gaussian alone.
    """

    def __init__(self, attention_type: str, window: int, query_size: int):
        super().__init__()
        self.attention_type = attention_type
        self.window = window  # D
        self.sigma = window / 2
        if attention_type == "local_p":
            self.position_hidden = nn.Linear(query_size, query_size, bias=False)  # W_p
            self.position_out = nn.Linear(query_size, 1, bias=False)  # v_pᵀ

    def centres(self, query: Tensor, src_mask: Tensor, positions: Tensor | None) -> Tensor:
        """p_t in fp32, (batch, tgt_len).  query (batch, tgt_len, query_size); positions
        (batch, tgt_len) long, the target step t of each query (needed by local_m)."""
        src_len = src_mask.sum(-1, keepdim=True).float()  # (batch, 1): S per sentence
        if self.attention_type == "local_m":
            if positions is None:
                raise ValueError("local_m attention needs the target positions of the queries")
            return torch.minimum(positions.float(), src_len - 1)  # (batch, tgt_len)
        hidden = torch.tanh(self.position_hidden(query))  # (batch, tgt_len, query_size)
        return src_len * torch.sigmoid(self.position_out(hidden).squeeze(-1).float())

    def forward(
        self, scores: Tensor, src_mask: Tensor, query: Tensor, positions: Tensor | None
    ) -> Tensor:
        """scores (batch, tgt_len, src_len) → attn_weights (batch, tgt_len, src_len)."""
        centres = self.centres(query, src_mask, positions).unsqueeze(-1)  # (batch, tgt_len, 1)
        source = torch.arange(scores.size(-1), device=scores.device, dtype=torch.float32)
        distance = source - centres  # (batch, tgt_len, src_len): s − p_t
        in_window = (distance.abs() <= self.window) & src_mask.unsqueeze(1)
        attn_weights = masked_softmax(scores, in_window)  # (batch, tgt_len, src_len)
        if self.attention_type == "local_m":
            return attn_weights
        gaussian = torch.exp(-distance.square() / (2 * self.sigma**2))
        return (attn_weights.float() * gaussian).to(attn_weights.dtype)


class Attention(nn.Module):
    """context, attn_weights = Attention(query, keys, values, src_mask, positions).

    α = softmax over real source positions of score(query, keys); context = Σ_j α_j value_j.
    The score function is chosen by ``model.attention.score``; keys come from
    :meth:`project_keys`, called once per batch on the encoder states.  With a
    :class:`LocalWindow` (``model.attention.type`` local_m or local_p) the softmax runs over a
    window of the source instead, and the weights are 0 outside it.
    """

    def __init__(self, score: Score, local: LocalWindow | None = None):
        super().__init__()
        self.score = score
        self.local = local
        self._deferred: tuple[Tensor, DeferredValueGrads] | None = None

    @contextlib.contextmanager
    def deferred_value_grads(self, values: Tensor) -> Iterator[Tensor]:
        """For a loop that attends one step at a time: yields the values to attend over inside
        the block, whose gradient is formed once after the loop's backward
        (:class:`DeferredValueGrads`). Only where autograd records and autocast is off (fp32);
        else it yields ``values`` themselves."""
        recording = torch.is_grad_enabled() and values.requires_grad
        if not recording or torch.is_autocast_enabled(values.device.type):
            yield values
            return
        deferred = DeferredValueGrads()
        collected = _CollectValueGrads.apply(values, deferred)
        self._deferred = (collected, deferred)
        try:
            yield collected
        finally:
            self._deferred = None

    def _context(self, attn_weights: Tensor, values: Tensor) -> Tensor:
        if self._deferred is not None and values is self._deferred[0]:
            return _StepContext.apply(attn_weights, values, self._deferred[1])
        return weighted_sum(attn_weights, values)

    def project_keys(self, values: Tensor) -> Tensor:
        """Keys for this score function from the encoder states, once per batch.

        values: (batch, src_len, value_size) → keys (batch, src_len, key_size).
        """
        return self.score.project_keys(values)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor,
        src_mask: Tensor,
        positions: Tensor | None = None,
    ) -> AttentionOutput:
        """query (batch, tgt_len, query_size); keys from :meth:`project_keys`;
        values (batch, src_len, value_size); src_mask bool (batch, src_len), True = real;
        positions (batch, tgt_len) long, the target step t (0-based) of each query: used by
        local_m only, so a decoder stepping one query at a time gives the same weights as one
        call over all steps.

        Returns context (batch, tgt_len, value_size) and attn_weights (batch, tgt_len, src_len).
        """
        scores = self.score(query, keys)  # (batch, tgt_len, src_len)
        if self.local is None:
            return attend(scores, values, src_mask, self._context)
        attn_weights = self.local(scores, src_mask, query, positions)
        return AttentionOutput(self._context(attn_weights, values), attn_weights)


class MultiHeadScoreAttention(Attention):
    """H heads of one score function (``model.attention.heads``; cf. Vaswani et al. 2017, §3.2.2,
    with any registered score in place of the scaled dot product; RNMT+ uses additive heads):

        q_h = W_q^h q,   v_{h,j} = W_v^h h_j               (query_size / H, value_size / H)
        α_h = softmax_j(score_h(q_h, k_{h,j})),  k_{h,j} = score_h.project_keys(v_{h,j})
        c   = W_o [Σ_j α_{1,j} v_{1,j} ; … ; Σ_j α_{H,j} v_{H,j}]          (value_size)

    Each head is its own instance of the score (its own W, v …); the score's widths
    (:attr:`Score.per_head_widths`: concat's ``hidden_size``) are split between the heads as the
    query and the values are, so H additive heads of width A/H cost about one of width A.  The
    projected values and every head's keys are computed once per batch (:meth:`project_keys`, (batch, S, value_size + Σ key
    sizes)).  A local window (``type`` local_m / local_p) is placed once from the whole query and
    applied to every head.  The weights it reports are the mean over heads, so each row still
    sums to 1.  ``heads: 1`` builds the plain :class:`Attention`, today's exactly.
    """

    def __init__(
        self,
        score: str,
        query_size: int,
        value_size: int,
        heads: int,
        local: LocalWindow | None,
        **options: Any,
    ):
        for name, size in (("query", query_size), ("value", value_size)):
            if size % heads:
                raise NMTError(
                    f"model.attention.heads: {heads} does not divide the {name} size {size}"
                )
        head_query, head_value = query_size // heads, value_size // heads
        options = per_head_options(SCORES.lookup(score), options, heads)
        scores = [build_score(score, head_query, head_value, **options) for _ in range(heads)]
        nn.Module.__init__(self)  # not Attention's: its one score is here one per head
        self.local = local
        self._deferred = None
        self.heads = heads
        self.head_value = head_value
        self.head_scores = nn.ModuleList(scores)
        self.query_proj = nn.Linear(query_size, query_size, bias=False)  # [W_q^1 ; … ; W_q^H]
        self.value_proj = nn.Linear(value_size, value_size, bias=False)  # [W_v^1 ; … ; W_v^H]
        self.out_proj = nn.Linear(value_size, value_size, bias=False)  # W_o
        with torch.no_grad():  # each head's key width, from its score
            probe = torch.zeros(1, 1, head_value)
            self.key_sizes = [s.project_keys(probe).size(-1) for s in scores]

    @staticmethod
    def flops(
        score: type[Score], query_size: int, value_size: int, src_len: float, heads: int,
        **options: Any,
    ) -> ScoreFlops:  # fmt: skip
        """keys: W_v 2·V² and every head's keys; scores: W_q 2·Q², every head's scores and W_o
        2·V² (the context over the heads is the single-head 2·S·V, counted by the caller)."""
        options = per_head_options(score, options, heads)
        head = score.flops(query_size // heads, value_size // heads, src_len, **options)
        return ScoreFlops(
            2 * value_size * value_size + heads * head.keys,
            2 * query_size * query_size + heads * head.scores + 2 * value_size * value_size,
        )

    @contextlib.contextmanager
    def deferred_value_grads(self, values: Tensor) -> Iterator[Tensor]:
        """The heads attend over projected values: nothing to defer."""
        yield values

    def project_keys(self, values: Tensor) -> Tensor:
        """values (batch, S, value_size) → [v_1 … v_H ; k_1 … k_H] (batch, S, value_size + Σ key)."""
        projected = self.value_proj(values)  # (batch, S, value_size)
        per_head = projected.split(self.head_value, dim=-1)
        keys = [s.project_keys(v) for s, v in zip(self.head_scores, per_head, strict=True)]
        return torch.cat([projected, *keys], dim=-1)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor,
        src_mask: Tensor,
        positions: Tensor | None = None,
    ) -> AttentionOutput:
        """As :meth:`Attention.forward`; ``keys`` from :meth:`project_keys` (``values``, the
        unprojected encoder states, are not read)."""
        batch, heads = query.size(0), self.heads
        attn_weights = self.head_weights(query, keys, src_mask, positions)  # (batch, H, tgt, src)
        projected = keys[..., : heads * self.head_value]  # (batch, src_len, value_size)
        head_values = projected.unflatten(-1, (heads, self.head_value)).transpose(1, 2)
        context = attn_weights.flatten(0, 1) @ head_values.flatten(0, 1)  # (batch·H, tgt, V/H)
        context = context.unflatten(0, (batch, heads)).transpose(1, 2).flatten(-2)
        return AttentionOutput(self.out_proj(context), attn_weights.mean(1))

    def head_weights(
        self, query: Tensor, keys: Tensor, src_mask: Tensor, positions: Tensor | None = None
    ) -> Tensor:
        """Every head's weights α_h: (batch, H, tgt_len, src_len), each row summing to 1 (the
        explorer shows them one by one; :meth:`forward` reports their mean)."""
        heads = self.heads
        _, *head_keys = keys.split([heads * self.head_value, *self.key_sizes], -1)
        queries = self.query_proj(query).chunk(heads, dim=-1)  # H × (batch, tgt_len, Q/H)
        scores = torch.stack(
            [s(q, k) for s, q, k in zip(self.head_scores, queries, head_keys, strict=True)], 1
        )  # (batch, H, tgt_len, src_len)
        flat = scores.flatten(0, 1)  # the heads as more rows of the batch: (batch·H, tgt, src)
        mask = src_mask.repeat_interleave(heads, dim=0)
        if self.local is None:
            weights = masked_softmax(flat, mask)
        else:  # one window per query, from the whole query, for every head
            repeat = lambda t: None if t is None else t.repeat_interleave(heads, dim=0)  # noqa: E731
            weights = self.local(flat, mask, repeat(query), repeat(positions))
        return weights.unflatten(0, (query.size(0), heads))


def per_head_options(score: type[Score], options: Mapping[str, Any], heads: int) -> dict[str, Any]:
    """``options`` for one of H heads: each of the score's :attr:`~Score.per_head_widths` / H."""
    head_options = dict(options)
    for key in score.per_head_widths:
        width = options.get(key)
        if width is None:  # build_score names the missing key
            continue
        if width % heads:
            raise NMTError(f"model.attention.heads: {heads} does not divide the {key} {width}")
        head_options[key] = width // heads
    return head_options


def build_attention(
    score: str,
    query_size: int,
    value_size: int,
    attention_type: str = "global",
    window: int | None = None,
    heads: int = 1,
    **options: Any,
) -> Attention:
    """The attention module for ``model.attention.score``, ``.type`` and ``.heads``.

    ``options`` are the score's own keys (``hidden_size`` for ``concat``, ``max_src_len`` for
    ``location``: its class's ``config_keys``); keys the score does not declare are ignored.
    ``window`` (D ≥ 1) is used by the local types only.  ``heads`` > 1: a
    :class:`MultiHeadScoreAttention`; 1: the plain :class:`Attention`.
    """
    local = build_local_window(attention_type, window, query_size)
    if heads > 1:
        return MultiHeadScoreAttention(score, query_size, value_size, heads, local, **options)
    return Attention(build_score(score, query_size, value_size, **options), local)


def build_score(score: str, query_size: int, value_size: int, **options: Any) -> Score:
    """The score function registered as ``model.attention.score``, with its declared keys."""
    cls = SCORES.lookup(score)
    for key in cls.config_keys:
        if options.get(key) is None:
            raise NMTError(f"model.attention.{key}: required by score {score!r}")
    return cls(query_size, value_size, **cls.options(options))


def build_local_window(
    attention_type: str, window: int | None, query_size: int
) -> LocalWindow | None:
    """None for ``global``; the window of ``local_m`` / ``local_p`` (half-width D = window)."""
    if attention_type not in ATTENTION_TYPES:
        raise NMTError(
            f"model.attention.type: expected one of {', '.join(ATTENTION_TYPES)}; "
            f"got {attention_type!r}"
        )
    if attention_type == "global":
        return None
    if window is None:
        raise NMTError(f"model.attention.window: required by type {attention_type!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise NMTError(
            "model.attention.window: expected a positive integer, the half-width D of the "
            f"local window; got {window!r}"
        )
    return LocalWindow(attention_type, window, query_size)
