"""Greedy and beam search on real tiny models: equalities that must hold whatever the weights.

Each model is briefly trained on a toy task (target = the source reversed, shifted by one id) so
that it ends its outputs with </s> at varying lengths; wrappers that forbid </s> or favour <pad>
exercise the length limit and the forbidden ids, and one that loops on a bigram exercises the
n-gram blocking. No test pins seed-dependent outputs: each compares two computations that must
agree (beam 1 and greedy, batched and alone, search and teacher forcing, the batched beam and a
plain one-hypothesis-at-a-time reference) or checks a property that must hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
from conftest import best, build_model
from omegaconf import OmegaConf

from nmt.core.errors import NMTError
from nmt.core.special_ids import BOS_ID, EOS_ID, PAD_ID
from nmt.data.vocab import Vocab, train_sentencepiece
from nmt.inference.search import (
    FORBIDDEN_IDS,
    Hypothesis,
    SearchSettings,
    beam_search,
    block_repeated_ngrams,
    decode_ids,
    gnmt_length_penalty,
    greedy_search,
    max_lengths,
)
from nmt.inference.translator import Translator

SRC_VOCAB, TGT_VOCAB = 14, 15
SETUPS = [
    ("luong", "concat", "gru"),
    ("luong", "general", "lstm"),
    ("bahdanau", "dot", "gru"),
    ("bahdanau", "location", "lstm"),
    # local attention (window D = 2 on sources of 2-7 tokens): beam search, n-best, batch
    # independence and teacher-forced rescoring hold as for global attention
    ("luong", "general", "gru", "local_p"),
    ("bahdanau", "dot", "lstm", "local_m"),
    # the Transformer (its own attention: the score is not read), and the mixed pairs
    ("transformer", "general", "transformer"),
    ("luong", "general", "transformer"),  # Transformer encoder, GRU decoder
    ("transformer", "general", "gru"),  # biGRU encoder, Transformer decoder
    # multi-head attention over a score function (model.attention.heads)
    ("luong", "concat", "gru", "global", 4),
    ("bahdanau", "general", "lstm", "local_p", 2),
    ("rnmt", "concat", "lstm"),  # RNMT+'s decoder style (one layer here: the bottom one)
]
TRANSFORMER = {"embed_dim": 16, "hidden_size": 16, "num_layers": 2, "heads": 4, "ff_size": 32}
SETUP_IDS = ["-".join(map(str, s)) for s in SETUPS]
FORBIDDEN_MASK = torch.isin(torch.arange(TGT_VOCAB), torch.tensor(FORBIDDEN_IDS))
ATTENTION_EXTRA = {"concat": {"hidden_size": 16}, "location": {"max_src_len": 12}}


def model_cfg(
    style: str, score: str, rnn_type: str, attention_type: str = "global", heads: int = 1
):
    """``rnn_type`` "transformer": a Transformer encoder (a recurrent decoder beside it: GRU)."""
    attention = {"score": score, "type": attention_type, "window": 2, "heads": heads}
    if rnn_type == "transformer":
        encoder = {"type": "transformer", **TRANSFORMER, "dropout": 0.0}
    else:
        encoder = {
            "rnn_type": rnn_type,
            "embed_dim": 16,
            "hidden_size": 16,
            "num_layers": 1,
            "bidirectional": True,
            "dropout": 0.0,
        }
    if style == "transformer":
        decoder = {"style": style, **TRANSFORMER, "dropout": 0.0}
    else:
        decoder = {
            "style": style,
            "rnn_type": "gru" if rnn_type == "transformer" else rnn_type,
            "embed_dim": 16,
            "hidden_size": 16,
            "num_layers": 1,
            "dropout": 0.0,
            "input_feeding": style == "luong",
            "bridge": True,
        }
    return OmegaConf.create(
        {
            "encoder": encoder,
            "attention": {**attention, **ATTENTION_EXTRA.get(score, {})},
            "decoder": decoder,
            "tie_embeddings": False,
        }
    )


def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    src = torch.full((len(seqs), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        src[i, : len(s)] = torch.tensor(s)
    return src, lengths


def toy_pairs(n: int, generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
    """Source: 1-6 ids in 4..SRC_VOCAB-1 then </s>; target: the ids reversed, plus one."""
    pairs = []
    for _ in range(n):
        length = int(torch.randint(1, 7, (1,), generator=generator))
        ids = torch.randint(4, SRC_VOCAB, (length,), generator=generator).tolist()
        pairs.append((ids + [EOS_ID], [i + 1 for i in reversed(ids)]))
    return pairs


def train_briefly(model: torch.nn.Module, steps: int = 15) -> None:
    """A few Adam steps: enough for </s> to be predicted sometimes, not always."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(steps):
        pairs = toy_pairs(32, generator)
        src, src_lengths = pad([s for s, _ in pairs])
        tgt, _ = pad([[BOS_ID] + t + [EOS_ID] for _, t in pairs])
        tgt_in = tgt[:, :-1].masked_fill(tgt[:, :-1] == EOS_ID, PAD_ID)
        logits = model(src, src_lengths, tgt_in).logits  # (batch, tgt_len, V)
        loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), tgt[:, 1:], ignore_index=PAD_ID
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module", params=SETUPS, ids=SETUP_IDS)
def model(request):
    torch.manual_seed(1234)
    net = build_model(model_cfg(*request.param), SRC_VOCAB, TGT_VOCAB)
    train_briefly(net)
    return net


@pytest.fixture(scope="module")
def batch():
    """Eight sentences of lengths 2-7 (</s> included), padded together."""
    src, src_lengths = pad([s for s, _ in toy_pairs(8, torch.Generator().manual_seed(7))])
    return src, src_lengths


class Forced(NamedTuple):
    """One hypothesis re-scored by teacher forcing, at its target positions (tokens + </s>)."""

    log_probs: torch.Tensor  # (targets,) log-probability of each target
    logits: torch.Tensor  # (targets, V)
    attn_weights: torch.Tensor  # (targets, src_len of its sentence)


def teacher_forced(
    model, src, src_lengths, rows: list[int], hyps: list[Hypothesis]
) -> list[Forced]:
    """Re-score ``hyps[j]``, a hypothesis for sentence ``rows[j]``, in one teacher-forced pass."""
    targets = [h.tokens + ([] if h.hit_max_len else [EOS_ID]) for h in hyps]
    tgt_in, _ = pad([[BOS_ID] + t[:-1] for t in targets])
    idx = torch.tensor(rows)
    with torch.no_grad():
        out = model(src[idx], src_lengths[idx], tgt_in)
    logits = out.logits.float()  # (n, tgt_len, V)
    log_probs = torch.log_softmax(logits, dim=-1)
    return [
        Forced(
            log_probs[j, torch.arange(len(t)), torch.tensor(t, dtype=torch.long)],
            logits[j, : len(t)],
            out.attn_weights[j, : len(t), : int(src_lengths[rows[j]])],
        )
        for j, t in enumerate(targets)
    ]


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("no_repeat", [0, 2])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_size_one_equals_greedy(model, batch, alpha, no_repeat):
    src, src_lengths = batch
    greedy = best(
        greedy_search(
            model, src, src_lengths, 1.5, 3, length_penalty=alpha, no_repeat_ngram_size=no_repeat
        )
    )
    beam = best(
        beam_search(model, src, src_lengths, 1, alpha, 1.5, 3, no_repeat_ngram_size=no_repeat)
    )
    for g, b in zip(greedy, beam, strict=True):
        assert g.tokens == b.tokens
        assert g.hit_max_len == b.hit_max_len
        assert g.score == pytest.approx(b.score, abs=1e-6)
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-6)
        torch.testing.assert_close(g.attn_weights, b.attn_weights)


def test_outputs_are_not_trivial(model, batch):
    """Guard for the other tests: the trained toy models end some hypotheses with </s>."""
    src, src_lengths = batch
    hyps = best(greedy_search(model, src, src_lengths, 1.5, 3))
    assert any(not h.hit_max_len for h in hyps)
    assert any(len(h.tokens) > 0 for h in hyps)


def test_greedy_is_argmax_of_teacher_forced_logits(model, batch):
    src, src_lengths = batch
    hyps = best(greedy_search(model, src, src_lengths, 1.5, 3))
    rows = list(range(len(hyps)))
    for hyp, forced in zip(hyps, teacher_forced(model, src, src_lengths, rows, hyps), strict=True):
        logits = forced.logits.masked_fill(FORBIDDEN_MASK, -math.inf)  # (targets, V)
        assert logits.argmax(dim=-1).tolist() == hyp.tokens + ([] if hyp.hit_max_len else [EOS_ID])


@pytest.mark.parametrize("no_repeat", [0, 2])
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_output_does_not_depend_on_batch_mates(model, batch, search, no_repeat):
    """Decoded alone or padded among shorter/longer sentences: the same hypotheses."""
    src, src_lengths = batch

    def run(s, lengths):
        if search == "greedy":
            return greedy_search(
                model, s, lengths, 1.5, 3, length_penalty=1.0, no_repeat_ngram_size=no_repeat
            ).hypotheses
        return beam_search(
            model, s, lengths, 4, 1.0, 1.5, 3, n_best=2, no_repeat_ngram_size=no_repeat
        ).hypotheses

    together = run(src, src_lengths)
    for i in range(src.size(0)):
        n = int(src_lengths[i])
        alone = run(src[i : i + 1, :n], src_lengths[i : i + 1])[0]
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]
        for a, t in zip(alone, together[i], strict=True):
            assert a.score == pytest.approx(t.score, abs=1e-5)
            assert a.hit_max_len == t.hit_max_len
            torch.testing.assert_close(a.attn_weights, t.attn_weights, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_nbest_sorted_distinct_and_scored_by_teacher_forcing(model, batch, alpha):
    src, src_lengths = batch
    beam_size = 4
    result = beam_search(model, src, src_lengths, beam_size, alpha, 1.5, 3, n_best=beam_size)
    for nbest in result.hypotheses:
        assert len(nbest) == beam_size
        assert len({tuple(h.tokens) for h in nbest}) == beam_size
        scores = [h.score for h in nbest]
        assert scores == sorted(scores, reverse=True)
    rows = [i for i, nbest in enumerate(result.hypotheses) for _ in nbest]
    hyps = [h for nbest in result.hypotheses for h in nbest]
    for hyp, forced in zip(hyps, teacher_forced(model, src, src_lengths, rows, hyps), strict=True):
        assert hyp.log_prob == pytest.approx(float(forced.log_probs.sum()), abs=1e-4)
        length = torch.tensor(len(forced.log_probs))
        penalty = float(gnmt_length_penalty(length, alpha))
        assert hyp.score == pytest.approx(hyp.log_prob / penalty, abs=1e-5)
        torch.testing.assert_close(hyp.attn_weights, forced.attn_weights, atol=1e-5, rtol=1e-4)


@dataclass
class RefHyp:
    tokens: list[int]
    log_prob: float
    state: object  # the decoder state after the hypothesis's last token
    finished: bool = False
    hit_max_len: bool = False

    def score(self, alpha: float) -> float:
        return self.log_prob / ((5 + len(self.tokens)) / 6) ** alpha


def ngram_followers(tokens: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram ``tokens`` already holds (n > 0)."""
    tail = tokens[len(tokens) - n + 1 :]  # the last n - 1 tokens ([] for n = 1)
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i : i + n - 1] == tail}


def reference_beam_search(
    model, src, src_length, beam_size, alpha, max_len, n_best, no_repeat_ngram_size=0
):
    """The same algorithm written plainly: one sentence, one hypothesis at a time, lists.

    tokens here include the final </s>. Each step: every live hypothesis proposes every
    predictable token (none that repeats an n-gram of it, with ``no_repeat_ngram_size = n``);
    a finished one proposes itself; keep the best ``beam_size`` by score; stop when the
    ``n_best`` best are all finished or the length limit is reached.
    """
    memory = model.encode(src[None, :src_length], torch.tensor([src_length]))
    beam = [RefHyp([], 0.0, model.init_state(memory))]
    for step in range(max_len):
        if all(h.finished for h in beam[:n_best]):
            break
        candidates = []
        for hyp in beam:
            if hyp.finished:
                candidates.append(hyp)
                continue
            prev = torch.tensor([hyp.tokens[-1] if hyp.tokens else BOS_ID])
            logits, _, state = model.step(prev, hyp.state, memory)
            log_probs = torch.log_softmax(logits[0].float(), dim=-1).masked_fill(
                FORBIDDEN_MASK, -math.inf
            )
            n = no_repeat_ngram_size
            blocked = ngram_followers(hyp.tokens, n) if n else set()
            for token, token_log_prob in enumerate(log_probs.tolist()):
                if token_log_prob > -math.inf and token not in blocked:
                    ended = token == EOS_ID
                    at_limit = not ended and step + 1 >= max_len
                    new = RefHyp(
                        hyp.tokens + [token],
                        hyp.log_prob + token_log_prob,
                        state,
                        ended or at_limit,
                        at_limit,
                    )
                    candidates.append(new)
        beam = sorted(candidates, key=lambda h: h.score(alpha), reverse=True)[:beam_size]
    return beam[:n_best]


@pytest.mark.parametrize(
    ("looping", "no_repeat"),
    [(False, 0), (True, 2), (True, 3)],
    ids=["plain", "looping-no-repeat-2", "looping-no-repeat-3"],
)
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_matches_plain_reference(model, batch, alpha, looping, no_repeat):
    """Batched, masked, two-stage top-k search == the one-hypothesis-at-a-time definition."""
    src, src_lengths = batch
    net = PrefersBigram(model) if looping else model
    beam_size, n_best, ratio, offset = 3, 2, 1.0, 2
    result = beam_search(
        net,
        src,
        src_lengths,
        beam_size,
        alpha,
        ratio,
        offset,
        n_best,
        no_repeat_ngram_size=no_repeat,
    )
    limits = max_lengths(src_lengths, ratio, offset).tolist()
    with torch.no_grad():
        for i, nbest in enumerate(result.hypotheses):
            expected = reference_beam_search(
                net, src[i], int(src_lengths[i]), beam_size, alpha, limits[i], n_best, no_repeat
            )
            assert [h.tokens for h in nbest] == [
                e.tokens[:-1] if e.tokens and not e.hit_max_len else e.tokens for e in expected
            ]
            assert [h.hit_max_len for h in nbest] == [e.hit_max_len for e in expected]
            for h, e in zip(nbest, expected, strict=True):
                assert h.score == pytest.approx(e.score(alpha), abs=1e-5)


class LogitBias(torch.nn.Module):
    """Wraps a model and adds ``bias`` (V,) to its step logits; subclasses may make the bias
    depend on the previous token (:meth:`bias_after`)."""

    def __init__(self, inner, bias: torch.Tensor | None = None):
        super().__init__()
        self.inner = inner
        self.bias = bias

    def bias_after(self, prev: torch.Tensor) -> torch.Tensor:
        return self.bias

    def encode(self, src, src_lengths):
        return self.inner.encode(src, src_lengths)

    def init_state(self, memory):
        return self.inner.init_state(memory)

    def step(self, prev, state, memory):
        logits, attn_weights, state = self.inner.step(prev, state, memory)
        return logits + self.bias_after(prev), attn_weights, state


def never_ends(model):
    """</s> is never predicted: every hypothesis runs to its limit."""
    return LogitBias(model, torch.zeros(TGT_VOCAB).index_fill(0, torch.tensor([EOS_ID]), -math.inf))


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_pad_and_bos_are_never_predicted(model, batch, search):
    src, src_lengths = batch
    bias = torch.zeros(TGT_VOCAB).masked_fill(FORBIDDEN_MASK, 20.0)  # the model's favourites
    if search == "greedy":
        result = greedy_search(LogitBias(model, bias), src, src_lengths, 1.5, 3)
    else:
        result = beam_search(LogitBias(model, bias), src, src_lengths, 3, 1.0, 1.5, 3, n_best=3)
    for nbest in result.hypotheses:
        assert nbest
        for hyp in nbest:
            assert not set(hyp.tokens) & set(FORBIDDEN_IDS)
            assert hyp.log_prob < -10  # their probability mass is not renormalised away


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_max_length_is_per_sentence(model, batch, search):
    src, src_lengths = batch
    ratio, offset = 0.5, 1
    limits = max_lengths(src_lengths, ratio, offset).tolist()
    assert limits == [math.floor(ratio * n + offset) for n in src_lengths.tolist()]
    if search == "greedy":
        hyps = best(greedy_search(never_ends(model), src, src_lengths, ratio, offset))
    else:
        hyps = best(beam_search(never_ends(model), src, src_lengths, 3, 1.0, ratio, offset))
    for hyp, limit in zip(hyps, limits, strict=True):
        assert hyp.hit_max_len
        assert len(hyp.tokens) == limit

    # With </s> allowed no hypothesis is longer than its limit, </s> included.
    for hyp, limit in zip(
        best(beam_search(model, src, src_lengths, 3, 1.0, ratio, offset)), limits, strict=True
    ):
        assert len(hyp.tokens) + (0 if hyp.hit_max_len else 1) <= limit


def test_zero_length_limit_gives_empty_hypothesis(model, batch):
    src, src_lengths = batch
    for hyps in (
        greedy_search(model, src, src_lengths, 0.0, 0),
        beam_search(model, src, src_lengths, 3, 1.0, 0.0, 0),
    ):
        for hyp in best(hyps):
            assert hyp.tokens == [] and hyp.hit_max_len and hyp.log_prob == 0.0
            assert hyp.attn_weights.shape[0] == 0


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_attention_matrix_per_hypothesis(model, batch, search):
    src, src_lengths = batch
    attention = getattr(model.decoder, "attention", None)  # the Transformer has its own
    local = attention.local if attention is not None else None
    local_p = local is not None and local.attention_type == "local_p"
    if search == "greedy":
        result = greedy_search(model, src, src_lengths, 1.5, 3)
    else:
        result = beam_search(model, src, src_lengths, 3, 1.0, 1.5, 3, n_best=3)
    for i, nbest in enumerate(result.hypotheses):
        for hyp in nbest:
            rows = len(hyp.tokens) + (0 if hyp.hit_max_len else 1)
            assert hyp.attn_weights.shape == (rows, int(src_lengths[i]))
            sums = hyp.attn_weights.sum(dim=-1)
            if local_p:  # the softmax times a Gaussian ≤ 1, not renormalised (Luong eq. 11)
                assert torch.all((sums > 0) & (sums <= 1 + 1e-6))
            else:
                torch.testing.assert_close(sums, torch.ones(rows))


def test_nbest_larger_than_beam_is_rejected(model, batch):
    src, src_lengths = batch
    with pytest.raises(NMTError, match="n_best"):
        beam_search(model, src, src_lengths, 2, 1.0, 1.5, 3, n_best=3)


# --------------------------------------------------------------------------------------------
# Repeated n-grams


def blocked_ids(history: list[list[int]], n: int) -> list[set[int]]:
    """The ids block_repeated_ngrams sets to -inf in each row, the forbidden ids aside."""
    history_t = torch.tensor(history, dtype=torch.long).view(len(history), -1)
    log_probs = torch.zeros(len(history), TGT_VOCAB)
    block_repeated_ngrams(log_probs, history_t, n)
    return [set(row.isinf().nonzero().view(-1).tolist()) - set(FORBIDDEN_IDS) for row in log_probs]


def test_block_repeated_ngrams_known_answers():
    history = [[5, 6, 7, 5, 6], [5, 6, 5, 7, 5]]
    assert blocked_ids(history, 3) == [{7}, set()]  # (5, 6) was followed by 7; (7, 5) is new
    assert blocked_ids(history, 2) == [{7}, {6, 7}]  # 5 was followed by 6 and by 7
    assert blocked_ids(history, 1) == [{5, 6, 7}, {5, 6, 7}]  # no token twice
    assert blocked_ids(history, 0) == [set(), set()]  # off
    assert blocked_ids(history, 6) == [set(), set()]  # the tail is the only window
    assert blocked_ids(history, 7) == [set(), set()]  # no complete window yet
    assert blocked_ids([[], []], 1) == blocked_ids([[], []], 2) == [set(), set()]  # first step


class PrefersBigram(LogitBias):
    """Wraps a model and adds 20 to the logit of A after any token but A, and of B after A:
    left alone it produces A B A B A B ... For search (``step``) and teacher forcing."""

    A, B = 5, 6

    def bias_after(self, prev: torch.Tensor) -> torch.Tensor:
        favourite = torch.where(prev == self.A, self.B, self.A)  # prev's shape
        return 20.0 * torch.nn.functional.one_hot(favourite, TGT_VOCAB)  # (*prev, V)

    def forward(self, src, src_lengths, tgt_in):
        out = self.inner(src, src_lengths, tgt_in)
        return out._replace(logits=out.logits + self.bias_after(tgt_in))


def repeats_an_ngram(tokens: list[int], n: int) -> bool:
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(ngrams)) < len(ngrams)


def run_search(model, batch, search: str, no_repeat: int):
    src, src_lengths = batch
    if search == "greedy":
        return greedy_search(
            model, src, src_lengths, 1.5, 3, length_penalty=1.0, no_repeat_ngram_size=no_repeat
        )
    return beam_search(
        model, src, src_lengths, 4, 1.0, 1.5, 3, n_best=4, no_repeat_ngram_size=no_repeat
    )


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_no_hypothesis_repeats_an_ngram(model, batch, search, n):
    looping = PrefersBigram(model)
    a, b = PrefersBigram.A, PrefersBigram.B
    for hyp in best(run_search(looping, batch, search, 0)):  # the loop, unblocked
        assert repeats_an_ngram(hyp.tokens, n)
        assert hyp.tokens[:4] == [a, b, a, b]
    for nbest in run_search(looping, batch, search, n).hypotheses:
        assert nbest
        for hyp in nbest:
            assert not repeats_an_ngram(hyp.tokens, n)
        if search == "greedy":  # the favourites until the next one would repeat an n-gram
            assert nbest[0].tokens[: n + 1] == [a, b, a, b][: n + 1]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_blocked_search_reports_teacher_forced_log_probs(model, batch, search, n):
    """Blocking only removes candidates: a hypothesis's log_prob and score are still the
    model's own (not renormalised), and greedy still takes the best token it may take."""
    src, src_lengths = batch
    looping = PrefersBigram(model)
    result = run_search(looping, batch, search, n)
    rows = [i for i, nbest in enumerate(result.hypotheses) for _ in nbest]
    hyps = [h for nbest in result.hypotheses for h in nbest]
    for hyp, forced in zip(
        hyps, teacher_forced(looping, src, src_lengths, rows, hyps), strict=True
    ):
        assert hyp.log_prob == pytest.approx(float(forced.log_probs.sum()), abs=1e-4)
        penalty = float(gnmt_length_penalty(torch.tensor(len(forced.log_probs)), 1.0))
        assert hyp.score == pytest.approx(hyp.log_prob / penalty, abs=1e-5)
        if search == "greedy":  # each choice is the argmax over the tokens not blocked
            targets = hyp.tokens + ([] if hyp.hit_max_len else [EOS_ID])
            for t, logits in enumerate(forced.logits):
                allowed = logits.masked_fill(FORBIDDEN_MASK, -math.inf)[None]  # (1, V)
                block_repeated_ngrams(allowed, torch.tensor([targets[:t]]).view(1, t), n)
                assert int(allowed.argmax()) == targets[t]


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
def test_bad_no_repeat_ngram_size_lists_what_is_expected(model, batch, bad):
    src, src_lengths = batch
    expected = "search.no_repeat_ngram_size: expected an integer >= 0"
    with pytest.raises(NMTError, match=expected):
        greedy_search(model, src, src_lengths, 1.5, 3, no_repeat_ngram_size=bad)
    with pytest.raises(NMTError, match=expected):
        beam_search(model, src, src_lengths, 2, 1.0, 1.5, 3, no_repeat_ngram_size=bad)


# --------------------------------------------------------------------------------------------
# Lines of text


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory):
    """Tiny SentencePiece vocabularies whose sizes match the toy models'."""
    out = tmp_path_factory.mktemp("spm")
    words = ["a", "b", "c", "ab", "ba", "cab"]
    text = [" ".join(words[(i + j) % len(words)] for j in range(i % 5 + 1)) for i in range(60)]
    src = Vocab(train_sentencepiece(text, out / "src", SRC_VOCAB, model_type="bpe"))
    tgt = Vocab(train_sentencepiece(text, out / "tgt", TGT_VOCAB, model_type="bpe"))
    return src, tgt


def search_cfg(name: str, batch_size: int = 2, n_best: int = 1, no_repeat: int | None = None):
    """``no_repeat=None`` leaves out ``no_repeat_ngram_size``, as configs saved before it did."""
    extra = {} if no_repeat is None else {"no_repeat_ngram_size": no_repeat}
    return OmegaConf.create(
        {
            "name": name,
            "beam_size": 3 if name == "beam" else 1,
            "length_penalty": 1.0,
            "max_len_ratio": 1.5,
            "max_len_offset": 3,
            "n_best": n_best,
            "batch_size": batch_size,
            **extra,
        }
    )


LINES = ["a b c", "", "cab ba ab a b", "b", "   ", "ba ba"]


def translator(model, vocabs, cfg) -> Translator:
    return Translator(model, vocabs[0], vocabs[1], SearchSettings.from_config(cfg))


@pytest.mark.parametrize("name", ["greedy", "beam"])
def test_translate_keeps_input_order(model, vocabs, name):
    t = translator(model, vocabs, search_cfg(name))
    together = t.translate_text(LINES)
    alone = [t.translate_text([line])[0] for line in LINES]
    assert together == alone
    assert together[1] == "" and together[4] == ""
    assert model.training is False


@pytest.mark.parametrize("no_repeat", [None, 0, 2])
def test_translations_match_beam_search(model, vocabs, no_repeat):
    src_vocab, tgt_vocab = vocabs
    cfg = search_cfg("beam", batch_size=4, n_best=2, no_repeat=no_repeat)
    results = translator(model, vocabs, cfg).translate(LINES)
    for line, result in zip(LINES, results, strict=True):
        ids = src_vocab.encode([line])[0]
        if not ids:
            assert [h.token_ids for h in result.nbest] == [[]]
            assert result.text == "" and result.attention.numel() == 0
            continue
        src, src_lengths = pad([ids + [EOS_ID]])
        direct = beam_search(
            model, src, src_lengths, 3, 1.0, 1.5, 3, n_best=2, no_repeat_ngram_size=no_repeat or 0
        ).hypotheses[0]
        assert [h.token_ids for h in result.nbest] == [h.tokens for h in direct]
        assert [h.score for h in result.nbest] == pytest.approx(
            [h.log_prob for h in direct], abs=1e-5
        )
        assert result.text == tgt_vocab.decode([direct[0].tokens])[0]
        assert result.source_tokens == src_vocab.pieces(ids)
        assert result.tokens == tgt_vocab.pieces(direct[0].tokens)


def test_batch_tokens_cut_the_batches_and_keep_the_hypotheses(model, vocabs):
    """search.batch_tokens limits a decoder call to that many source subwords over its
    hypotheses (sentences × beam_size × the longest, </s> included); what each sentence gets
    does not change."""
    lines = [line for line in LINES if line.strip()] * 2
    encoded = vocabs[0].encode(lines)
    settings = SearchSettings.from_config(search_cfg("beam", batch_size=8, n_best=2))  # beam 3
    assert settings.replace(batch_tokens=36).padded_budget("cpu") == 12  # sentences × longest
    greedy = SearchSettings(name="greedy", beam_size=5, batch_tokens=36)  # beam_size unused
    assert greedy.hypotheses == 1 and greedy.padded_budget("cpu") == 36
    assert settings.replace(batch_tokens=0).padded_budget("cpu") is None
    assert settings.replace(batch_tokens=36).padded_budget("cuda") is None  # GPUs: batch_size

    def decode(batch_tokens: int) -> tuple[list[list[list[int]]], list[int]]:
        sizes: list[int] = []
        found = decode_ids(
            model, encoded, settings.replace(batch_tokens=batch_tokens), on_batch=sizes.append
        )
        return [[h.tokens for h in nbest] for nbest in found], sizes

    whole, whole_sizes = decode(0)  # 0: no limit
    cut, cut_sizes = decode(36)
    longest = max(len(ids) + 1 for ids in encoded)
    assert whole_sizes == [8] and 8 * longest > 12
    assert len(cut_sizes) > 1 and sum(cut_sizes) == 8
    assert cut == whole


def test_translate_restores_training_mode(model, vocabs):
    model.train()
    try:
        translator(model, vocabs, search_cfg("greedy")).translate(["a b"])
        assert model.training
    finally:
        model.eval()


def test_unknown_search_name_lists_the_valid_ones():
    with pytest.raises(NMTError, match="greedy, beam"):
        SearchSettings.from_config(search_cfg("sampling"))


def test_bad_no_repeat_ngram_size_in_the_config_is_rejected_first():
    with pytest.raises(NMTError, match="no_repeat_ngram_size: expected an integer >= 0"):
        SearchSettings.from_config(search_cfg("beam", no_repeat=-1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"beam_size": 0}, "search.beam_size: expected an integer >= 1; got 0"),
        ({"beam_size": "5"}, "search.beam_size: expected an integer >= 1; got '5'"),
        ({"n_best": 4}, r"search.n_best: expected 1 <= n_best <= 3"),
        ({"name": "greedy", "n_best": 2}, "greedy search keeps one hypothesis"),
        ({"batch_size": 0}, "search.batch_size: expected an integer >= 1"),
        ({"batch_tokens": -1}, "search.batch_tokens: expected an integer >= 0"),
        ({"length_penalty": -1.0}, "search.length_penalty: expected a number >= 0"),
        ({"beam_width": 3}, "search.beam_width: unknown setting; expected one of name, "),
    ],
)
def test_bad_search_settings_name_the_field(overrides, message):
    with pytest.raises(NMTError, match=message):
        SearchSettings.from_config(search_cfg("beam"), **overrides)


def test_beam_size_alone_picks_the_search():
    base = SearchSettings.from_config(search_cfg("greedy"))
    assert base.replace(beam_size=4).name == "beam"
    assert base.replace(beam_size=4).replace(beam_size=1).name == "greedy"
    assert SearchSettings.from_config(search_cfg("beam"), name="greedy").beam_size == 1
    # a config saved before no_repeat_ngram_size existed decodes without blocking
    assert SearchSettings.from_config(search_cfg("beam")).no_repeat_ngram_size == 0
