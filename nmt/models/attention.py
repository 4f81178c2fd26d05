"""Attention: five score functions behind one interface, one shared masked softmax and context.

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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from nmt.errors import NMTError

SCORES = ("dot", "general", "scaled_dot", "concat", "location")


class AttentionOutput(NamedTuple):
    context: Tensor  # (batch, tgt_len, value_size)
    attn_weights: Tensor  # (batch, tgt_len, src_len), exactly 0.0 on padding


def masked_softmax(scores: Tensor, src_mask: Tensor) -> Tensor:
    """α_j = exp(e_j) / Σ_{j' real} exp(e_j'); padded positions get exactly 0.0.

    The scores are filled with -inf at padding and normalised in fp32 (half-precision safe),
    then cast back to the scores' dtype.  Every row must contain at least one real position.

    scores: (batch, tgt_len, src_len); src_mask: bool (batch, src_len), True = real token.
    """
    scores32 = scores.float().masked_fill(~src_mask.unsqueeze(1), float("-inf"))
    return torch.softmax(scores32, dim=-1).to(scores.dtype)  # (batch, tgt_len, src_len)


def weighted_sum(attn_weights: Tensor, values: Tensor) -> Tensor:
    """context = Σ_j α_j · value_j.

    attn_weights: (batch, tgt_len, src_len); values: (batch, src_len, value_size)
    returns (batch, tgt_len, value_size).
    """
    return torch.bmm(attn_weights, values)


def attend(scores: Tensor, values: Tensor, src_mask: Tensor) -> AttentionOutput:
    """The path shared by every score function: masked softmax over the source, then context."""
    attn_weights = masked_softmax(scores, src_mask)  # (batch, tgt_len, src_len)
    return AttentionOutput(weighted_sum(attn_weights, values), attn_weights)


class DotScore(nn.Module):
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


class ScaledDotScore(DotScore):
    """score(q, k_j) = qᵀ k_j / √d, d = query size  (Vaswani et al. 2017, eq. 1).

    Keys as in :class:`DotScore`.
    """

    def __init__(self, query_size: int, value_size: int):
        super().__init__(query_size, value_size)
        self.scale = 1.0 / math.sqrt(query_size)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        # (batch, tgt_len, query_size) @ (batch, query_size, src_len)
        return torch.bmm(query * self.scale, keys.transpose(1, 2))  # (batch, tgt_len, src_len)


class GeneralScore(nn.Module):
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


class ConcatScore(nn.Module):
    """score(q, h_j) = vᵀ tanh(W [q; h_j] + b) = vᵀ tanh(W_q q + W_k h_j + b)  (additive attention).

    Bahdanau et al. 2015, appendix A.1.2 (e_ij = vᵀ tanh(W s_{i-1} + U h_j)); Luong et al. 2015,
    eq. 8 ("concat").  W = [W_q W_k] is split so that the key half k_j = W_k h_j + b is
    computed once per batch.  v ∈ R^{hidden_size}.
    """

    def __init__(self, query_size: int, value_size: int, hidden_size: int):
        super().__init__()
        self.query_proj = nn.Linear(query_size, hidden_size, bias=False)  # W_q
        self.key_proj = nn.Linear(value_size, hidden_size, bias=True)  # W_k (+ b)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def project_keys(self, values: Tensor) -> Tensor:
        return self.key_proj(values)  # (batch, src_len, hidden_size)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        q = self.query_proj(query).unsqueeze(2)  # (batch, tgt_len, 1, hidden_size)
        hidden = torch.tanh(q + keys.unsqueeze(1))  # (batch, tgt_len, src_len, hidden_size)
        return self.v(hidden).squeeze(-1)  # (batch, tgt_len, src_len)


class LocationScore(nn.Module):
    """scores = W_a q, one learned row of W_a per source position  (Luong et al. 2015, eq. 9).

    The weights depend on the query alone: the keys are the values, unprojected, and only
    their number (src_len) is used.  W_a has ``max_src_len`` rows;
    a source longer than that gives its positions ``j >= max_src_len`` the score 0 (the
    scores are ``W_a q`` followed by zeros), so they still take part in the softmax with
    weight exp(0)/Z, and padding is masked to exactly 0 afterwards as for every other score.
    """

    def __init__(self, query_size: int, max_src_len: int):
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


class Attention(nn.Module):
    """context, attn_weights = Attention(query, keys, values, src_mask).

    α = softmax over real source positions of score(query, keys); context = Σ_j α_j value_j.
    The score function is chosen by ``model.attention.score``; keys come from
    :meth:`project_keys`, called once per batch on the encoder states.
    """

    def __init__(self, score: nn.Module):
        super().__init__()
        self.score = score

    def project_keys(self, values: Tensor) -> Tensor:
        """Keys for this score function from the encoder states, once per batch.

        values: (batch, src_len, value_size) → keys (batch, src_len, key_size).
        """
        return self.score.project_keys(values)

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor, src_mask: Tensor
    ) -> AttentionOutput:
        """query (batch, tgt_len, query_size); keys from :meth:`project_keys`;
        values (batch, src_len, value_size); src_mask bool (batch, src_len), True = real.

        Returns context (batch, tgt_len, value_size) and attn_weights (batch, tgt_len, src_len).
        """
        scores = self.score(query, keys)  # (batch, tgt_len, src_len)
        return attend(scores, values, src_mask)


def build_attention(
    score: str,
    query_size: int,
    value_size: int,
    hidden_size: int | None = None,
    max_src_len: int | None = None,
) -> Attention:
    """The attention module for ``model.attention.score``.

    ``hidden_size`` is used by ``concat`` only, ``max_src_len`` by ``location`` only.
    """
    if score == "dot":
        return Attention(DotScore(query_size, value_size))
    if score == "scaled_dot":
        return Attention(ScaledDotScore(query_size, value_size))
    if score == "general":
        return Attention(GeneralScore(query_size, value_size))
    if score == "concat":
        if hidden_size is None:
            raise NMTError("model.attention.hidden_size: required by score 'concat'")
        return Attention(ConcatScore(query_size, value_size, hidden_size))
    if score == "location":
        if max_src_len is None:
            raise NMTError("model.attention.max_src_len: required by score 'location'")
        return Attention(LocationScore(query_size, max_src_len))
    raise NMTError(f"model.attention.score: expected one of {', '.join(SCORES)}; got {score!r}")
