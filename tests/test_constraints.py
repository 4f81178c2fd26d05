"""Lexically constrained beam search (dynamic beam allocation) on real tiny models.

The models are test_search's toy models (target = the source reversed, shifted by one id). As
there, no test pins seed-dependent outputs: each checks a property every constrained output must
have (it contains its phrases, its log-prob is the teacher-forced sum), or compares two
computations that must agree (alone and in a batch; with and without constraints on a sentence
that has none).
"""

from __future__ import annotations

import pytest
import test_search
import torch
from conftest import build_model
from test_search import model_cfg, teacher_forced, train_briefly

from nmt.core.special_ids import EOS_ID, PAD_ID
from nmt.inference.constraints import (
    ConstraintState,
    PhraseTable,
    advance,
    allocate,
    find_phrase,
    missing_phrases,
    next_tokens,
    phrase_positions,
)
from nmt.inference.search import SearchSettings, beam_search, decode_ids, greedy_search

SRC_VOCAB, TGT_VOCAB = 14, 15


@pytest.fixture(scope="module", params=[("luong", "general", "gru"), ("bahdanau", "dot", "lstm")])
def model(request):
    torch.manual_seed(1234)
    net = build_model(model_cfg(*request.param), SRC_VOCAB, TGT_VOCAB)
    train_briefly(net)
    return net


batch = test_search.batch  # the fixture: test_search's eight toy sentences

# two phrases per sentence, of ids the toy task produces (5..14), one of them two tokens long
PHRASES = [[[6, 9], [12]], [[5]], [], [[13, 13]], [[7], [8, 4 + 6]], [[11, 5]], [[10]], [[14, 6]]]


def constrained(model, batch, beam: int = 4, alpha: float = 1.0, **kwargs):
    src, src_lengths = batch
    return beam_search(model, src, src_lengths, beam, alpha, 2.0, 4, constraints=PHRASES, **kwargs)


# -- the progress through phrases -------------------------------------------------------------


def test_progress_follows_a_phrase_unwinds_and_restarts():
    table = PhraseTable.build([[[5, 6, 7], [9]]], torch.device("cpu"))
    state = ConstraintState.start(table)
    seen = []
    for token in [5, 6, 8, 5, 6, 7, 9]:
        assert next_tokens(table, state).tolist()[0] in ([5, 9], [6, -1], [7, -1], [-1, 9])
        grown = advance(table, state, torch.tensor([[token]]), frozen=torch.tensor([False]))
        state = ConstraintState(grown.met[:, 0], grown.current[:, 0], grown.progress[:, 0])
        seen.append((int(state.banks(table)), bool(state.all_met())))
    # 5 6 (2 tokens met), 8 unwinds to 0, 5 6 7 completes the first (3), 9 the second (4)
    assert seen == [
        (1, False),
        (2, False),
        (0, False),
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    assert next_tokens(table, state).tolist() == [[-1, -1]]


def test_a_finished_hypothesis_keeps_its_progress():
    table = PhraseTable.build([[[5, 6]]], torch.device("cpu"))
    state = ConstraintState(torch.tensor([[False]]), torch.tensor([0]), torch.tensor([1]))
    grown = advance(table, state, torch.tensor([[PAD_ID]]), frozen=torch.tensor([True]))
    assert (grown.current.item(), grown.progress.item()) == (0, 1)


def test_allocation_is_topk_with_one_bank_and_round_robin_with_several():
    values = torch.tensor([[-1.0, -0.5, -3.0, -2.0, -float("inf")]])
    one_bank = allocate(values, torch.zeros(1, 5, dtype=torch.long), 1, 3)
    assert one_bank.tolist() == values.topk(3).indices.tolist()
    # banks 0,0,1,1,0: slot order is bank 1's best, bank 0's best, bank 1's next, bank 0's next
    banks = torch.tensor([[0, 0, 1, 1, 0]])
    assert allocate(values, banks, 2, 4).tolist() == [[3, 1, 2, 0]]
    # a non-candidate comes last, even in the highest bank
    assert allocate(values, torch.tensor([[0, 0, 0, 0, 1]]), 2, 5).tolist()[0][-1] == 4


def test_phrase_lookup():
    assert find_phrase([3, 5, 6, 5, 6], [5, 6]) == 1
    assert find_phrase([3, 5], [5, 6]) is None
    assert missing_phrases([3, 5, 6], [[5, 6], [7], [3]]) == [1]
    assert phrase_positions([3, 5, 6, 7], [[5, 6], [7], [9]]) == [1, 2, 3]


# -- the search ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_every_output_contains_its_phrases_and_is_scored_by_teacher_forcing(model, batch, alpha):
    src, src_lengths = batch
    result = constrained(model, batch, alpha=alpha, n_best=3)
    rows = [i for i, nbest in enumerate(result.hypotheses) for _ in nbest]
    hyps = [h for nbest in result.hypotheses for h in nbest]
    for i, nbest in enumerate(result.hypotheses):
        assert len(nbest) == 3
        assert nbest[0].missing_constraints == [] and not nbest[0].hit_max_len
        for hyp in nbest:  # the runners-up may miss some: they say which
            assert hyp.missing_constraints == missing_phrases(hyp.tokens, PHRASES[i])
        # those that meet every phrase first, each group by score
        met = [not h.missing_constraints for h in nbest]
        assert met == sorted(met, reverse=True)
        for group in (True, False):
            scores = [h.score for h, m in zip(nbest, met, strict=True) if m is group]
            assert scores == sorted(scores, reverse=True)
    for hyp, forced in zip(hyps, teacher_forced(model, src, src_lengths, rows, hyps), strict=True):
        assert hyp.log_prob == pytest.approx(float(forced.log_probs.sum()), abs=1e-4)


def test_a_sentence_without_constraints_decodes_as_without_the_search(model, batch):
    src, src_lengths = batch
    plain = beam_search(model, src, src_lengths, 4, 1.0, 2.0, 4, n_best=2).hypotheses
    mixed = constrained(model, batch, n_best=2).hypotheses
    assert PHRASES[2] == []
    assert [h.tokens for h in mixed[2]] == [h.tokens for h in plain[2]]
    assert [h.score for h in mixed[2]] == pytest.approx([h.score for h in plain[2]], abs=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_constraint_the_best_output_already_meets_keeps_that_output(model, batch, alpha):
    """DBA changes nothing when the unconstrained best hypothesis already contains the phrase:
    its prefixes are always the best of the highest bank, which is dealt the first slot."""
    src, src_lengths = batch
    plain = beam_search(model, src, src_lengths, 4, alpha, 2.0, 4).hypotheses
    phrases = [[nbest[0].tokens] if nbest[0].tokens else [] for nbest in plain]
    assert sum(map(bool, phrases)) >= 6  # the guard: most outputs are not empty
    result = beam_search(model, src, src_lengths, 4, alpha, 2.0, 4, constraints=phrases)
    for before, after in zip(plain, result.hypotheses, strict=True):
        assert after[0].tokens == before[0].tokens
        assert after[0].log_prob == pytest.approx(before[0].log_prob, abs=1e-5)


@pytest.mark.parametrize("beam", [1, 4])
def test_outputs_do_not_depend_on_batch_mates(model, batch, beam):
    src, src_lengths = batch
    together = constrained(model, batch, beam=beam).hypotheses
    for i in range(src.size(0)):
        n = int(src_lengths[i])
        alone = beam_search(
            model, src[i : i + 1, :n], src_lengths[i : i + 1], beam, 1.0, 2.0, 4,
            constraints=[PHRASES[i]],
        ).hypotheses[0]  # fmt: skip
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]
        assert alone[0].score == pytest.approx(together[i][0].score, abs=1e-5)


def test_a_phrase_longer_than_the_length_limit_is_reported(model, batch):
    src, src_lengths = batch
    limits = (src_lengths.double() * 2.0 + 4).floor().long().tolist()
    too_long = [[[7] * (limit + 1)] for limit in limits]
    result = beam_search(model, src, src_lengths, 4, 1.0, 2.0, 4, constraints=too_long)
    for nbest in result.hypotheses:
        assert nbest[0].missing_constraints == [0]
        assert nbest[0].hit_max_len  # </s> is never allowed before the phrases are met


def test_repeated_ngram_blocking_still_holds_outside_the_phrases(model, batch):
    result = constrained(model, batch, no_repeat_ngram_size=2)
    for i, nbest in enumerate(result.hypotheses):
        tokens = nbest[0].tokens
        bigrams = list(zip(tokens, tokens[1:], strict=False))
        assert len(bigrams) == len(set(bigrams)) or PHRASES[i] == [[13, 13]]
        assert nbest[0].missing_constraints == []


def test_decode_ids_takes_constraints_per_sentence_greedy_and_beam(model, batch):
    src, src_lengths = batch
    encoded = [src[i, : int(src_lengths[i]) - 1].tolist() for i in range(src.size(0))]
    encoded.append([])  # an empty sentence misses its own constraints
    phrases = PHRASES + [[[5]]]
    for name in ("greedy", "beam"):
        settings = SearchSettings(name=name, beam_size=4, batch_size=3, max_len_ratio=2.0)
        found = decode_ids(model, encoded, settings, "cpu", constraints=phrases)
        assert [nbest[0].missing_constraints for nbest in found] == [[]] * 8 + [[0]]
        if name == "greedy":  # one hypothesis takes every phrase as soon as it is offered
            assert found[0][0].tokens[:1] in ([6], [12])
    assert EOS_ID not in found[0][0].tokens


@pytest.mark.parametrize("name", ["greedy", "beam"])
def test_decoding_keeps_the_plain_output_when_it_already_meets_the_constraints(model, batch, name):
    """Through decode_ids (the Translator's path): a phrase the plain best output contains —
    any piece of it, not only its start — leaves the output exactly as it was; a phrase it
    lacks is met by the constrained search."""
    src, src_lengths = batch
    encoded = [src[i, : int(src_lengths[i]) - 1].tolist() for i in range(src.size(0))]
    settings = SearchSettings(name=name, beam_size=4, n_best=1, batch_size=8, max_len_ratio=2.0)
    plain = decode_ids(model, encoded, settings, "cpu")
    met_already = [[h[0].tokens[len(h[0].tokens) // 2 :][:2]] if h[0].tokens else [] for h in plain]
    again = decode_ids(model, encoded, settings, "cpu", constraints=met_already)
    for before, after in zip(plain, again, strict=True):
        assert after[0].tokens == before[0].tokens
        assert after[0].score == pytest.approx(before[0].score, abs=1e-6)
        assert after[0].missing_constraints == []
    lacking = [[[t for t in range(5, TGT_VOCAB) if t not in h[0].tokens][:1]] for h in plain]
    forced = decode_ids(model, encoded, settings, "cpu", constraints=lacking)
    for phrases, nbest in zip(lacking, forced, strict=True):
        assert nbest[0].missing_constraints == [] and phrases[0][0] in nbest[0].tokens


# -- negative constraints ----------------------------------------------------------------------


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_an_avoided_phrase_never_appears_and_the_rest_is_scored_as_ever(model, batch, search):
    """Avoid each plain output's most common bigram, and a one-token phrase: no hypothesis of
    the n-best holds them; scores stay the teacher-forced log-probabilities; a sentence with
    nothing to avoid decodes as before."""
    src, src_lengths = batch

    def run(avoid=None):
        if search == "greedy":
            return greedy_search(model, src, src_lengths, 2.0, 4, 1.0, avoid=avoid).hypotheses
        return beam_search(
            model, src, src_lengths, 4, 1.0, 2.0, 4, n_best=3, avoid=avoid
        ).hypotheses

    plain = run()
    avoid = []
    for i, nbest in enumerate(plain):
        tokens = nbest[0].tokens
        bigrams = list(zip(tokens, tokens[1:], strict=False))
        avoid.append([] if i == 2 else [list(bigrams[0])] if bigrams else [tokens[:1] or [7]])
    avoid[0].append([9])
    avoided = run(avoid)
    assert avoided[2] and [h.tokens for h in avoided[2]] == [h.tokens for h in plain[2]]
    assert any(a[0].tokens != p[0].tokens for a, p in zip(avoided, plain, strict=True))
    rows, hyps = [], []
    for i, (phrases, nbest) in enumerate(zip(avoid, avoided, strict=True)):
        for hyp in nbest:
            assert missing_phrases(hyp.tokens, phrases) == list(range(len(phrases)))
            rows.append(i)
            hyps.append(hyp)
    for hyp, forced in zip(hyps, teacher_forced(model, src, src_lengths, rows, hyps), strict=True):
        assert hyp.log_prob == pytest.approx(float(forced.log_probs.sum()), abs=1e-4)
