"""Training losses: values equal colpali-engine's formulas, masking, gradients, validation, registration.

The colpali-engine formulas are those of `colpali_engine/loss/late_interaction_losses.py` (ColbertLoss,
ColbertPairwiseCELoss, ColbertNegativeCELoss, ColbertPairwiseNegativeCELoss) and
`colpali_engine/loss/bi_encoder_losses.py` (BiEncoderLoss, BiPairwiseCELoss, BiNegativeCELoss,
BiPairwiseNegativeCELoss), `ColbertModule` / `BiEncoderModule` generation. `colpali_reference` below
re-derives them with explicit Python loops over plain floats, WITHOUT padding masks, as colpali-engine does.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vlzoo_core.errors import ConfigError
from vlzoo_core.training.loss_config import (
    BiCEConfig,
    BiNegativeCEConfig,
    ColbertCEConfig,
    ColbertNegativeCEConfig,
    ColbertNegativePairwiseConfig,
    ColbertPairwiseConfig,
)
from vlzoo_core.training.losses import (
    LOSSES,
    BiCELoss,
    BiNegativeCELoss,
    BiNegativePairwiseLoss,
    BiPairwiseLoss,
    ColbertCELoss,
    ColbertNegativeCELoss,
    ColbertNegativePairwiseLoss,
    ColbertPairwiseLoss,
    maxsim_matrix,
    maxsim_pairs,
)
from vlzoo_core.registry import Registry
from vlzoo_core.training.run_config import LossSection
from vlzoo_core.model.scoring import maxsim

TOL = 1e-5
HYPOTHESIS = settings(max_examples=40, deadline=None)

ALL_NAMES = sorted(LOSSES)
MULTI = [n for n in ALL_NAMES if LOSSES[n].multi_vector]
SINGLE = [n for n in ALL_NAMES if not LOSSES[n].multi_vector]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ---- colpali-engine formulas, as explicit loops --------------------------------------------------------


def colpali_colbert_score(q: list, d: list, normalize: bool, tau: float | None) -> float:
    """colpali-engine: sum over ALL query rows of max (or tau*logsumexp) over ALL document rows, no mask;
    normalised by the number of query rows whose first component is non-zero."""
    total = 0.0
    for q_tok in q:
        sims = [sum(a * b for a, b in zip(q_tok, d_tok, strict=True)) for d_tok in d]
        total += max(sims) if tau is None else tau * math.log(sum(math.exp(s / tau) for s in sims))
    if normalize:
        total /= sum(1 for q_tok in q if q_tok[0] != 0)
    return total


def colpali_filter(scores: list[list[float]], threshold: float, factor: float) -> list[list[float]]:
    """colpali-engine `_filter_high_negatives`: off-diagonal scores > threshold * positive are multiplied."""
    return [
        [s * factor if (j != i and s > threshold * row[i]) else s for j, s in enumerate(row)]
        for i, row in enumerate(scores)
    ]


def colpali_ce(scores: list[list[float]], temperature: float) -> float:
    """CrossEntropyLoss(scores / T, arange(B)), mean over rows."""
    total = 0.0
    for i, row in enumerate(scores):
        total += math.log(sum(math.exp(s / temperature) for s in row)) - row[i] / temperature
    return total / len(scores)


def colpali_pairwise(scores: list[list[float]], temperature: float) -> float:
    """mean softplus((max off-diagonal - diagonal) / T)."""
    total = 0.0
    for i, row in enumerate(scores):
        hardest = max(s for j, s in enumerate(row) if j != i)
        total += softplus((hardest - row[i]) / temperature)
    return total / len(scores)


def colpali_reference(name: str, config, q: torch.Tensor, d: torch.Tensor, n: torch.Tensor | None) -> float:
    q, d = q.double().tolist(), d.double().tolist()
    n = n.double().tolist() if n is not None else None
    batch = len(q)
    if LOSSES[name].multi_vector:
        tau = config.smooth_max_tau if config.use_smooth_max else None

        def score(query, doc):
            return colpali_colbert_score(query, doc, config.normalize_scores, tau)
    else:

        def score(query, doc):
            return sum(a * b for a, b in zip(query, doc, strict=True))

    in_batch = [[score(q[i], d[j]) for j in range(batch)] for i in range(batch)]
    if getattr(config, "pos_aware_negative_filtering", False):
        in_batch = colpali_filter(in_batch, config.filter_threshold, config.filter_factor)
    t = config.temperature
    if name.endswith("negative_ce") or name.endswith("negative_pairwise"):
        hard = sum(softplus((score(q[i], n[i]) - score(q[i], d[i])) / t) for i in range(batch)) / batch
        w = config.in_batch_term_weight
        term = colpali_ce(in_batch, t) if name.endswith("_ce") else colpali_pairwise(in_batch, t)
        return (1 - w) * hard + w * term if w > 0 else hard
    if name.endswith("_ce"):
        return colpali_ce(in_batch, t)
    return colpali_pairwise(in_batch, t)


# ---- helpers -----------------------------------------------------------------------------------------


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def random_multi(batch: int, length: int, dim: int, gen: torch.Generator, positive: bool = False,
                 lengths: list[int] | None = None) -> torch.Tensor:
    """(batch, length, dim) unit rows (all components > 0 if `positive`); rows past lengths[i] are zero."""
    x = torch.randn(batch, length, dim, generator=gen, dtype=torch.float64)
    if positive:
        x = x.abs() + 0.05
    x = unit(x)
    if lengths is not None:
        for i, n in enumerate(lengths):
            x[i, n:] = 0
    return x


def pad_to(x: torch.Tensor, length: int) -> torch.Tensor:
    out = x.new_zeros(x.shape[0], length, x.shape[2])
    out[:, : x.shape[1]] = x
    return out


def call(loss, q, d, n=None):
    return loss(q, d, n) if loss.uses_negatives else loss(q, d)


def inputs_for(name: str, batch: int = 3, gen: torch.Generator | None = None):
    gen = gen or torch.Generator().manual_seed(0)
    if LOSSES[name].multi_vector:
        q = random_multi(batch, 3, 4, gen, lengths=[3, 2, 1][:batch] + [3] * max(0, batch - 3))
        d = random_multi(batch, 5, 4, gen)
        n = random_multi(batch, 4, 4, gen)
    else:
        q, d, n = (unit(torch.randn(batch, 4, generator=gen, dtype=torch.float64)) for _ in range(3))
    return q, d, (n if LOSSES[name].uses_negatives else None)


# ---- hand-computed values ------------------------------------------------------------------------------

# Multi-vector: q0 = {e1, e2}, q1 = {e1, pad}; d0 = {e1, e2}, d1 = {e1, pad}.
# MaxSim S = [[2, 1], [1, 1]]; query lengths [2, 1]; normalised S = [[1, 0.5], [1, 1]].
Q_HAND = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
D_HAND = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
# Hard negatives: n0 = {e2, pad} -> MaxSim 0 + 1 = 1 (normalised 0.5); n1 = {(0.6, 0.8), pad} -> 0.6 (0.6).
N_HAND = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.6, 0.8], [0.0, 0.0]]])


def test_maxsim_hand_values():
    expected = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(maxsim_matrix(Q_HAND, D_HAND), expected)
    assert torch.allclose(maxsim_pairs(Q_HAND, N_HAND), torch.tensor([1.0, 0.6]))


def test_colbert_ce_hand_value():
    # ColbertLoss: CE(normalised S / T). T = 0.5: logits [[2, 1], [2, 2]]
    # row 0: -log(e^2 / (e^2 + e^1)) = log(1 + e^-1); row 1: log 2.
    expected = (math.log1p(math.exp(-1)) + math.log(2)) / 2
    loss = ColbertCELoss(ColbertCEConfig(temperature=0.5))
    assert loss(Q_HAND, D_HAND).item() == pytest.approx(expected, abs=TOL)
    # Without normalisation, S / 1 gives the same logits [[2, 1], [1, 1]] -> the same row losses.
    loss = ColbertCELoss(ColbertCEConfig(temperature=1.0, normalize_scores=False))
    assert loss(Q_HAND, D_HAND).item() == pytest.approx(expected, abs=TOL)
    # Default temperature 0.02: row 0 = log(1 + e^-25), row 1 = log 2.
    assert ColbertCELoss()(Q_HAND, D_HAND).item() == pytest.approx(
        (math.log1p(math.exp(-25)) + math.log(2)) / 2, abs=TOL
    )


def test_colbert_pairwise_hand_value():
    # ColbertPairwiseCELoss (default T = 1, normalised): row 0 softplus(0.5 - 1), row 1 softplus(1 - 1).
    expected = (softplus(-0.5) + math.log(2)) / 2
    assert ColbertPairwiseLoss()(Q_HAND, D_HAND).item() == pytest.approx(expected, abs=TOL)


def test_colbert_negative_hand_values():
    # Normalised positives [1, 1], hard negatives [0.5, 0.6]; T = 0.5.
    hard = (softplus((0.5 - 1) / 0.5) + softplus((0.6 - 1) / 0.5)) / 2
    in_batch_ce = (math.log1p(math.exp(-1)) + math.log(2)) / 2
    in_batch_pairwise = (softplus(-1) + softplus(0)) / 2
    for weight in (0.0, 0.25, 0.5, 1.0):
        ce = ColbertNegativeCELoss(ColbertNegativeCEConfig(temperature=0.5, in_batch_term_weight=weight))
        pw = ColbertNegativePairwiseLoss(
            ColbertNegativePairwiseConfig(temperature=0.5, in_batch_term_weight=weight)
        )
        assert ce(Q_HAND, D_HAND, N_HAND).item() == pytest.approx(
            (1 - weight) * hard + weight * in_batch_ce, abs=TOL
        )
        assert pw(Q_HAND, D_HAND, N_HAND).item() == pytest.approx(
            (1 - weight) * hard + weight * in_batch_pairwise, abs=TOL
        )


# Single vector: q_i = e_i, so S[i][j] = d_j[i]: columns of S are the documents.
S_BI = [[0.9, 0.1, 0.5], [0.3, 0.7, 0.2], [0.4, 0.8, 0.6]]
Q_BI = torch.eye(3, dtype=torch.float64)
D_BI = torch.tensor(S_BI, dtype=torch.float64).T.contiguous()


def test_bi_ce_and_pairwise_hand_values():
    # BiEncoderLoss with T = 1: row i = log(sum_j e^S_ij) - S_ii.
    ce = sum(math.log(sum(math.exp(s) for s in row)) - row[i] for i, row in enumerate(S_BI)) / 3
    assert BiCELoss(BiCEConfig(temperature=1.0))(Q_BI, D_BI).item() == pytest.approx(ce, abs=TOL)
    # BiPairwiseCELoss with T = 1: hardest negatives 0.5, 0.3, 0.8.
    pairwise = (softplus(0.5 - 0.9) + softplus(0.3 - 0.7) + softplus(0.8 - 0.6)) / 3
    assert BiPairwiseLoss({"temperature": 1.0})(Q_BI, D_BI).item() == pytest.approx(pairwise, abs=TOL)


def test_pos_aware_negative_filtering_hand_values():
    # threshold 0.95: only S[2][1] = 0.8 > 0.95 * 0.6 = 0.57 is flagged, and becomes 0.4 (factor 0.5).
    options = {"temperature": 1.0, "pos_aware_negative_filtering": True}
    ce = (
        math.log(math.exp(0.9) + math.exp(0.1) + math.exp(0.5)) - 0.9
        + math.log(math.exp(0.3) + math.exp(0.7) + math.exp(0.2)) - 0.7
        + math.log(math.exp(0.4) + math.exp(0.4) + math.exp(0.6)) - 0.6
    ) / 3
    assert BiCELoss(options)(Q_BI, D_BI).item() == pytest.approx(ce, abs=TOL)
    pairwise = (softplus(0.5 - 0.9) + softplus(0.3 - 0.7) + softplus(0.4 - 0.6)) / 3
    assert BiPairwiseLoss(options)(Q_BI, D_BI).item() == pytest.approx(pairwise, abs=TOL)


def test_bi_negative_hand_values():
    # Hard negatives n_i = e_((i+1) mod 3): scores S... of q_i with them are 0.
    negatives = Q_BI.roll(1, dims=0)
    t = 0.1
    hard = (softplus((0 - 0.9) / t) + softplus((0 - 0.7) / t) + softplus((0 - 0.6) / t)) / 3
    ce = sum(math.log(sum(math.exp(s / t) for s in row)) - row[i] / t for i, row in enumerate(S_BI)) / 3
    pairwise = (softplus((0.5 - 0.9) / t) + softplus((0.3 - 0.7) / t) + softplus((0.8 - 0.6) / t)) / 3
    got = BiNegativeCELoss({"temperature": t})(Q_BI, D_BI, negatives).item()
    assert got == pytest.approx(0.5 * hard + 0.5 * ce, abs=TOL)
    got = BiNegativePairwiseLoss({"temperature": t, "in_batch_term_weight": 0.2})(Q_BI, D_BI, negatives).item()
    assert got == pytest.approx(0.8 * hard + 0.2 * pairwise, abs=TOL)


# ---- equal to colpali-engine's formulas on random inputs -----------------------------------------------

OPTION_SETS = {
    "defaults": {},
    "no_normalize": {"normalize_scores": False, "temperature": 0.3},
    "smooth_max": {"use_smooth_max": True, "smooth_max_tau": 0.2, "temperature": 0.1},
    "filtering": {"pos_aware_negative_filtering": True, "filter_threshold": 0.5, "filter_factor": 0.3},
    "weight_0": {"in_batch_term_weight": 0.0},
    "weight_1": {"in_batch_term_weight": 1.0, "temperature": 0.05},
}


def applicable(name: str, options: dict) -> bool:
    fields = LOSSES[name].config_class.model_fields
    return all(key in fields for key in options)


CASES = [(name, key) for name in ALL_NAMES for key in OPTION_SETS if applicable(name, OPTION_SETS[key])]


@pytest.mark.parametrize(("name", "options"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_colpali_formula_without_padding(name, options, seed):
    """No padding at all: masked and unmasked MaxSim agree, for any signs of the similarities."""
    gen = torch.Generator().manual_seed(seed)
    cls = LOSSES[name]
    config = cls.config_class(**OPTION_SETS[options])
    if cls.multi_vector:
        q, d, n = random_multi(3, 3, 4, gen), random_multi(3, 5, 4, gen), random_multi(3, 2, 4, gen)
    else:
        q, d, n = (unit(torch.randn(3, 4, generator=gen, dtype=torch.float64)) for _ in range(3))
    n = n if cls.uses_negatives else None
    got = call(cls(config), q, d, n).item()
    assert got == pytest.approx(colpali_reference(name, config, q, d, n), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", MULTI)
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_colpali_formula_with_padding_and_positive_similarities(name, seed):
    """With padding but every similarity > 0, a padding row (similarity 0) never wins colpali's max either."""
    gen = torch.Generator().manual_seed(seed)
    cls = LOSSES[name]
    config = cls.config_class(temperature=0.1)
    q = random_multi(3, 4, 5, gen, positive=True, lengths=[4, 2, 1])
    d = random_multi(3, 6, 5, gen, positive=True, lengths=[6, 3, 1])
    n = random_multi(3, 5, 5, gen, positive=True, lengths=[2, 5, 4]) if cls.uses_negatives else None
    got = call(cls(config), q, d, n).item()
    assert got == pytest.approx(colpali_reference(name, config, q, d, n), rel=1e-9, abs=1e-9)


# ---- masking: where we deliberately differ from colpali-engine -----------------------------------------


def test_padding_never_wins_the_max_when_similarities_are_negative():
    # q = {e1}; d0 = {-e1, pad}: the real similarity is -1; colpali-engine's unmasked max would pick the
    # padding row (0). Ours keeps -1, like `vlzoo_core.model.scoring.maxsim`.
    q = torch.tensor([[[1.0, 0.0]]])
    d = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]]])
    assert maxsim_matrix(q, d).item() == pytest.approx(-1.0)
    assert maxsim_pairs(q, d).item() == pytest.approx(-1.0)
    assert colpali_colbert_score(q[0].tolist(), d[0].tolist(), False, None) == 0.0  # the colpali value

    # In a loss: query 0's positive has a real similarity of -0.6 and padding; its in-batch negative -0.8.
    queries = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    documents = torch.tensor([[[-0.6, 0.8], [0.0, 0.0]], [[-0.8, 0.6], [0.0, 0.0]]])
    # Masked S = [[-0.6, -0.8], [0.8, 0.6]] (T = 1, one query token each).
    expected = (
        math.log(math.exp(-0.6) + math.exp(-0.8)) + 0.6 + math.log(math.exp(0.8) + math.exp(0.6)) - 0.6
    ) / 2
    loss = ColbertCELoss({"temperature": 1.0})
    assert loss(queries, documents).item() == pytest.approx(expected, abs=TOL)
    # (normalize_scores off for the colpali formula: it would count query 1, e2, as having 0 tokens)
    config = ColbertCEConfig(temperature=1.0, normalize_scores=False)
    assert colpali_reference("colbert_ce", config, queries, documents, None) != pytest.approx(expected, abs=1e-3)


def test_smooth_max_ignores_padding():
    q = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # one real token, one padding token
    d = torch.tensor([[[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]]])  # two real tokens, one padding token
    tau = 0.2
    expected = tau * math.log(math.exp(0.6 / tau) + math.exp(0.0 / tau))
    assert maxsim_matrix(q, d, smooth_max_tau=tau).item() == pytest.approx(expected, abs=TOL)
    # colpali-engine's unmasked version adds exp(0) for the padding document row, and a padding query
    # token adds tau * log(3):
    colpali = colpali_colbert_score(q[0].tolist(), d[0].tolist(), False, tau)
    assert colpali == pytest.approx(
        tau * math.log(math.exp(3.0) + 2) + tau * math.log(3), abs=TOL
    )
    assert colpali != pytest.approx(expected, abs=1e-3)


def test_query_length_counts_non_zero_rows():
    # colpali-engine counts the rows whose FIRST component is non-zero, so the real token e2 would not count
    # (and a query made of it would divide by zero). Here the length of {e1, e2, pad} is 2 and of {e2} is 1.
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    documents = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    # MaxSim = [[1, 1], [0, 1]] -> normalised [[0.5, 0.5], [0, 1]]; T = 1.
    expected = (math.log(2) + math.log(1 + math.exp(1)) - 1) / 2
    assert ColbertCELoss({"temperature": 1.0})(queries, documents).item() == pytest.approx(expected, abs=TOL)
    with pytest.raises(ZeroDivisionError):
        colpali_colbert_score(queries[1].tolist(), documents[1].tolist(), True, None)


def test_document_without_tokens_scores_zero():
    q = unit(torch.tensor([[[1.0, 2.0], [2.0, -1.0]]]))
    empty = torch.zeros(1, 3, 2)
    for tau in (None, 0.1):
        assert maxsim_matrix(q, empty, smooth_max_tau=tau).item() == 0.0
        assert maxsim_pairs(q, empty, smooth_max_tau=tau).item() == 0.0


def test_maxsim_matrix_equals_scoring_maxsim_with_gradients():
    gen = torch.Generator().manual_seed(3)
    q = random_multi(4, 5, 6, gen, lengths=[5, 3, 1, 2]).float()
    d = random_multi(3, 7, 6, gen, lengths=[7, 2, 4]).float()
    q.requires_grad_(True)
    scores = maxsim_matrix(q, d)
    assert scores.requires_grad
    assert torch.allclose(scores.detach(), maxsim(q.detach(), d), atol=1e-6)
    pairs = maxsim_pairs(q[:3], d)
    assert torch.allclose(pairs, scores[:3].diagonal(), atol=1e-6)


# ---- properties ----------------------------------------------------------------------------------------


@st.composite
def multi_batches(draw, min_batch: int = 1):
    batch = draw(st.integers(min_batch, 4))
    dim = draw(st.integers(1, 5))
    q_lengths = draw(st.lists(st.integers(1, 4), min_size=batch, max_size=batch))
    d_lengths = draw(st.lists(st.integers(1, 5), min_size=batch, max_size=batch))
    n_lengths = draw(st.lists(st.integers(1, 5), min_size=batch, max_size=batch))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = random_multi(batch, max(q_lengths), dim, gen, lengths=q_lengths)
    d = random_multi(batch, max(d_lengths), dim, gen, lengths=d_lengths)
    n = random_multi(batch, max(n_lengths), dim, gen, lengths=n_lengths)
    return q, d, n


@HYPOTHESIS
@given(data=multi_batches(), temperature=st.floats(0.01, 5.0), normalize=st.booleans())
def test_colbert_ce_of_a_single_pair_is_zero(data, temperature, normalize):
    q, d, _ = data
    loss = ColbertCELoss({"temperature": temperature, "normalize_scores": normalize})
    assert abs(loss(q[:1], d[:1]).item()) < 1e-9


@HYPOTHESIS
@given(
    data=multi_batches(),
    name=st.sampled_from(MULTI),
    extra=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    smooth=st.booleans(),
)
def test_multi_vector_losses_ignore_extra_padding_rows(data, name, extra, smooth):
    q, d, n = data
    cls = LOSSES[name]
    loss = cls(cls.config_class(temperature=0.1, use_smooth_max=smooth))
    n = n if cls.uses_negatives else None
    base = call(loss, q, d, n)
    padded_n = pad_to(n, n.shape[1] + extra[2]) if n is not None else None
    padded = call(loss, pad_to(q, q.shape[1] + extra[0]), pad_to(d, d.shape[1] + extra[1]), padded_n)
    assert padded.item() == pytest.approx(base.item(), rel=1e-9, abs=1e-9)


PAIRS = [("colbert_ce", "bi_ce"), ("colbert_pairwise", "bi_pairwise"),
         ("colbert_negative_ce", "bi_negative_ce"), ("colbert_negative_pairwise", "bi_negative_pairwise")]


@HYPOTHESIS
@given(
    pair=st.sampled_from(PAIRS),
    batch=st.integers(1, 5),
    dim=st.integers(1, 6),
    temperature=st.floats(0.01, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_single_token_colbert_equals_bi_encoder(pair, batch, dim, temperature, seed):
    gen = torch.Generator().manual_seed(seed)
    q, d, n = (unit(torch.randn(batch, dim, generator=gen, dtype=torch.float64)) for _ in range(3))
    multi_cls, single_cls = LOSSES[pair[0]], LOSSES[pair[1]]
    multi = multi_cls({"temperature": temperature})
    single = single_cls({"temperature": temperature})
    neg = n if multi.uses_negatives else None
    got = call(multi, q[:, None], d[:, None], neg[:, None] if neg is not None else None)
    assert got.item() == pytest.approx(call(single, q, d, neg).item(), rel=1e-9, abs=1e-9)


# ---- gradients, temperature, options -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "smooth"), [(n, False) for n in ALL_NAMES] + [(n, True) for n in MULTI])
def test_gradients_are_finite_and_reach_every_input(name, smooth):
    cls = LOSSES[name]
    options = {"use_smooth_max": True} if smooth else {}
    q, d, n = inputs_for(name)
    if cls.multi_vector:
        d[2] = 0  # a document with no tokens at all must not produce NaN gradients
    tensors = [t.float().requires_grad_(True) for t in (q, d) + ((n,) if n is not None else ())]
    loss = call(cls(options), *tensors)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for t in tensors:
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert tensors[0].grad.abs().sum() > 0


def test_half_precision_inputs_give_a_float32_loss_and_grads():
    q, d, _ = inputs_for("colbert_ce")
    q = q.to(torch.bfloat16).requires_grad_(True)
    loss = ColbertCELoss()(q, d.to(torch.bfloat16))
    assert loss.dtype == torch.float32
    loss.backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_pairwise_single_pair_is_zero_with_finite_gradients():
    q = unit(torch.randn(1, 3, 4)).requires_grad_(True)
    d = unit(torch.randn(1, 2, 4))
    loss = ColbertPairwiseLoss()(q, d)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_temperature_scales_the_logits():
    gen = torch.Generator().manual_seed(5)
    q, d = (unit(torch.randn(4, 6, generator=gen, dtype=torch.float64)) for _ in range(2))
    # Bi-encoder scores are plain dot products: doubling the queries is halving the temperature.
    for cls in (BiCELoss, BiPairwiseLoss):
        assert cls({"temperature": 0.2})(2 * q, d).item() == pytest.approx(cls({"temperature": 0.1})(q, d).item())
    # When every positive wins, a lower temperature gives a lower loss; when they lose, a higher one.
    eye = torch.eye(4, dtype=torch.float64)
    good = [BiCELoss({"temperature": t})(eye, eye).item() for t in (1.0, 0.1, 0.02)]
    assert good[0] > good[1] > good[2]
    bad = [BiCELoss({"temperature": t})(eye, eye.roll(1, dims=0)).item() for t in (1.0, 0.1, 0.02)]
    assert bad[0] < bad[1] < bad[2]


def test_in_batch_weight_one_equals_the_in_batch_loss():
    q, d, n = inputs_for("colbert_negative_ce")
    assert ColbertNegativeCELoss({"in_batch_term_weight": 1.0})(q, d, n).item() == pytest.approx(
        ColbertCELoss()(q, d).item()
    )
    assert ColbertNegativePairwiseLoss({"in_batch_term_weight": 1.0, "temperature": 1.0})(q, d, n).item() == (
        pytest.approx(ColbertPairwiseLoss()(q, d).item())
    )


def test_normalize_scores_divides_by_query_length():
    q, d, _ = inputs_for("colbert_ce")
    raw = ColbertCELoss({"normalize_scores": False, "temperature": 1.0})
    norm = ColbertCELoss({"temperature": 1.0})
    # query lengths are 3, 2, 1: scaling the per-query temperature by the length is the same thing
    lengths = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    scores = maxsim_matrix(q, d) / lengths[:, None]
    expected = torch.nn.functional.cross_entropy(scores, torch.arange(3)).item()
    assert norm(q, d).item() == pytest.approx(expected)
    assert raw(q, d).item() != pytest.approx(expected)


# ---- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MULTI)
def test_multi_vector_losses_reject_single_vectors(name):
    q, d, n = inputs_for(name)
    with pytest.raises(ValueError, match=r"\(B, L, D\).*bi_\*"):
        call(LOSSES[name](), q[:, 0], d[:, 0], n[:, 0] if n is not None else None)


@pytest.mark.parametrize("name", SINGLE)
def test_single_vector_losses_reject_multi_vectors(name):
    q, d, n = inputs_for(name)
    with pytest.raises(ValueError, match=r"\(B, D\).*colbert_\*"):
        call(LOSSES[name](), q[:, None], d[:, None], n[:, None] if n is not None else None)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_mismatched_batch_and_dim_are_errors(name):
    q, d, n = inputs_for(name)
    loss = LOSSES[name]()
    with pytest.raises(ValueError, match="documents has 2 rows but there are 3 queries"):
        call(loss, q, d[:2], n)
    with pytest.raises(ValueError, match="documents dim 3 != query dim 4"):
        call(loss, q, d[..., :3], n)
    if n is not None:
        with pytest.raises(ValueError, match="negatives has 1 rows"):
            loss(q, d, n[:1])
    with pytest.raises(ValueError, match="empty batch"):
        call(loss, q[:0], d[:0], n[:0] if n is not None else None)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_negatives_required_exactly_when_used(name):
    cls = LOSSES[name]
    q, d, _ = inputs_for(name)
    loss = cls()
    if cls.uses_negatives:
        with pytest.raises(ValueError, match="needs hard negatives"):
            loss(q, d)
    else:
        assert torch.isfinite(loss(q, d))
        with pytest.raises(ValueError, match="takes no hard negatives"):
            loss(q, d, d)


def test_uses_negatives_and_multi_vector_flags():
    assert {n for n, c in LOSSES.items() if c.uses_negatives} == {
        "colbert_negative_ce", "colbert_negative_pairwise", "bi_negative_ce", "bi_negative_pairwise"
    }
    assert set(MULTI) == {n for n in LOSSES if n.startswith("colbert_")}
    assert all(isinstance(c.multi_vector, bool) and isinstance(c.uses_negatives, bool) for c in LOSSES.values())


def test_config_validation():
    with pytest.raises(ValidationError):
        ColbertCEConfig(temperature=0)
    with pytest.raises(ValidationError):
        ColbertCEConfig(margin=1.0)  # unknown option
    with pytest.raises(ValidationError):
        ColbertNegativeCEConfig(in_batch_term_weight=1.5)
    with pytest.raises(ValidationError):
        BiCEConfig(normalize_scores=True)  # a multi-vector option
    with pytest.raises(TypeError, match="ColbertCEConfig"):
        ColbertCELoss(BiCEConfig())
    assert ColbertCEConfig().temperature == 0.02 and ColbertCEConfig().normalize_scores is True
    assert ColbertPairwiseConfig().temperature == 1.0  # colpali-engine's default for ColbertPairwiseCELoss
    assert BiNegativeCEConfig().in_batch_term_weight == 0.5


# ---- registry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_loss_is_registered_and_builds(name):
    spec = Registry(autoload=False).component("loss", name)
    assert spec.plugin == "vlzoo_core" and spec.description
    cls = spec.load()
    assert cls is LOSSES[name] and cls.name == name
    config = spec.parse_config({}, f"loss {name}")
    assert type(config) is cls.config_class is spec.config
    loss = cls(config)
    q, d, n = inputs_for(name)
    assert torch.isfinite(call(loss, q, d, n))
    with pytest.raises(ConfigError):
        spec.parse_config({"temprature": 0.1}, f"loss {name}")


def test_registered_losses_match_the_module_and_default_loss_exists():
    registry = Registry(autoload=False)
    assert {n for k, n in registry.components if k == "loss"} == set(LOSSES)
    assert registry.component("loss", LossSection().name).load() is ColbertCELoss


def test_builtin_registration_does_not_import_torch():
    code = (
        "import sys; from vlzoo_core.registry import Registry; Registry(autoload=False); "
        "import vlzoo_core.training.loss_config; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
