"""Retrieval metrics (binary relevance): hand-computed values, perfect rankings, ties, brute force."""

from __future__ import annotations

import math
import typing

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlzoo_core.evaluation.metrics import DEFAULT_METRICS, parse_metric, rankings, retrieval_metrics
from vlzoo_core.training.run_config import EvalSection, Metric

TOL = 1e-9


def ranked_scores(n_docs: int) -> torch.Tensor:
    """One query whose ranking is document 0, 1, 2, ... (scores strictly decreasing with the index)."""
    return -torch.arange(n_docs, dtype=torch.float32)[None]


# ---- hand-computed values -------------------------------------------------------------------------------

ALL = ("ndcg@5", "ndcg@10", "ndcg@11", "recall@1", "recall@5", "recall@10", "mrr@10", "mrr@11")


def test_relevant_document_at_rank_1():
    got = retrieval_metrics(ranked_scores(12), [0], ALL)
    assert got == pytest.approx(dict.fromkeys(ALL, 1.0), abs=TOL)


def test_relevant_document_at_rank_3():
    got = retrieval_metrics(ranked_scores(12), [2], ALL)
    expected = {
        "ndcg@5": 1 / math.log2(4), "ndcg@10": 0.5, "ndcg@11": 0.5,  # DCG 1/log2(3+1) = 0.5, IDCG 1
        "recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0,
        "mrr@10": 1 / 3, "mrr@11": 1 / 3,
    }
    assert got == pytest.approx(expected, abs=TOL)


def test_relevant_document_at_rank_11():
    got = retrieval_metrics(ranked_scores(12), [10], ALL)
    expected = dict.fromkeys(ALL, 0.0)
    expected.update({"ndcg@11": 1 / math.log2(12), "mrr@11": 1 / 11})
    assert got == pytest.approx(expected, abs=TOL)


def test_several_relevant_documents():
    # Ranking 0, 1, 2, 3; relevant {0, 2}.
    got = retrieval_metrics(ranked_scores(4), [{0, 2}], ["ndcg@1", "ndcg@2", "ndcg@3", "recall@1", "recall@2",
                                                         "recall@3", "mrr@10"])
    assert got == pytest.approx({
        "ndcg@1": 1.0,
        "ndcg@2": 1 / (1 + 1 / math.log2(3)),  # DCG 1, IDCG 1 + 1/log2(3)
        "ndcg@3": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)),
        "recall@1": 0.5, "recall@2": 0.5, "recall@3": 1.0,
        "mrr@10": 1.0,
    }, abs=TOL)
    # Relevant {1, 3}: first hit at rank 2; ideal DCG@1 is 1 but nothing relevant is ranked first.
    got = retrieval_metrics(ranked_scores(4), [[1, 3]], ["ndcg@1", "ndcg@4", "recall@2", "mrr@10"])
    assert got == pytest.approx({
        "ndcg@1": 0.0,
        "ndcg@4": (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)),
        "recall@2": 0.5,
        "mrr@10": 0.5,
    }, abs=TOL)


def test_mean_over_queries():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    # query 0: ranking 0, 2, 1, relevant 0 -> rank 1; query 1: ranking 1, 0, 2, relevant {0, 2} -> ranks 2, 3.
    got = retrieval_metrics(scores, [0, {0, 2}], ["ndcg@2", "recall@1", "recall@3", "mrr@10"])
    assert got == pytest.approx({
        "ndcg@2": (1 + (1 / math.log2(3)) / (1 + 1 / math.log2(3))) / 2,
        "recall@1": 0.5,
        "recall@3": 1.0,
        "mrr@10": (1 + 1 / 2) / 2,
    }, abs=TOL)


def test_perfect_ranking_scores_one():
    gen = torch.Generator().manual_seed(0)
    n_queries, n_docs = 5, 20
    relevant = [set(torch.randperm(n_docs, generator=gen)[: i + 1].tolist()) for i in range(n_queries)]
    scores = torch.rand(n_queries, n_docs, generator=gen) - 2  # every relevant document above every other
    for i, docs in enumerate(relevant):
        scores[i, list(docs)] += 10
    got = retrieval_metrics(scores, relevant, ["ndcg@1", "ndcg@5", "ndcg@10", "mrr@10", "recall@5"])
    # recall@5 is only 1 when there are at most 5 relevant documents (queries 0..4 have 1..5).
    assert got == pytest.approx(dict.fromkeys(got, 1.0), abs=TOL)


def test_ties_are_broken_by_document_index():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 2.0, 2.0]])
    assert rankings(scores).tolist() == [[0, 1, 2, 3], [1, 2, 3, 0]]
    got = retrieval_metrics(scores, [1, 3], ["mrr@10", "recall@2"])
    # query 0: doc 1 is second among the tied three; query 1: doc 3 is third among the tied three.
    assert got == pytest.approx({"mrr@10": (1 / 2 + 1 / 3) / 2, "recall@2": 0.5}, abs=TOL)


def test_ties_in_a_large_corpus_are_still_broken_by_index():
    # Large enough that an unstable sort would reorder equal scores.
    scores = torch.zeros(1, 1000)
    scores[0, ::3] = 1.0
    expected = sorted(range(1000), key=lambda j: (-float(scores[0, j]), j))
    assert rankings(scores)[0].tolist() == expected
    got = retrieval_metrics(scores, [{999, 500}], ["mrr@1000"])  # doc 999 (score 1) is ranked 334th
    assert got["mrr@1000"] == pytest.approx(1 / 334, abs=TOL)


def test_k_larger_than_the_corpus():
    got = retrieval_metrics(ranked_scores(3), [2], ["ndcg@10", "recall@10", "mrr@10"])
    assert got == pytest.approx({"ndcg@10": 0.5, "recall@10": 1.0, "mrr@10": 1 / 3}, abs=TOL)


def test_relevant_given_as_int_set_list_or_tensor():
    scores = ranked_scores(5).repeat(4, 1)
    got = retrieval_metrics(scores, [3, {3}, [3], torch.tensor([3])], ["mrr@10"])
    assert got == pytest.approx({"mrr@10": 1 / 4}, abs=TOL)


def test_default_metrics_are_the_eval_section_defaults_and_every_allowed_name_parses():
    assert list(DEFAULT_METRICS) == EvalSection().metrics
    for name in typing.get_args(Metric):
        parse_metric(name)
    got = retrieval_metrics(ranked_scores(12), [0])
    assert list(got) == list(DEFAULT_METRICS)


@pytest.mark.parametrize(
    ("scores", "relevant", "metrics", "message"),
    [
        (ranked_scores(3), [0], ["map@10"], "unknown metric 'map@10'"),
        (ranked_scores(3), [0], ["ndcg@0"], "unknown metric"),
        (ranked_scores(3), [0], ["ndcg"], "unknown metric"),
        (ranked_scores(3), [set()], ["ndcg@5"], "query 0 has no relevant document"),
        (ranked_scores(3), [3], ["ndcg@5"], "index 3 out of range for 3 documents"),
        (ranked_scores(3), [0, 1], ["ndcg@5"], "2 entries for 1 queries"),
        (torch.zeros(3), [0], ["ndcg@5"], "must be \\(n_queries, n_documents\\)"),
        (torch.tensor([[0.0, float("nan")]]), [0], ["ndcg@5"], "NaN"),
    ],
)
def test_errors(scores, relevant, metrics, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(scores, relevant, metrics)


# ---- brute force ----------------------------------------------------------------------------------------


def brute_force(scores: list[float], relevant: set[int], k: int) -> dict[str, float]:
    """Rank of each document = 1 + #documents scoring higher + #equal-scoring documents with a lower index."""
    rank = {
        j: 1 + sum(1 for i, s in enumerate(scores) if s > scores[j] or (s == scores[j] and i < j))
        for j in range(len(scores))
    }
    gains = [0.0] * len(scores)  # gains[r - 1] = relevance of the document ranked r
    for j, r in rank.items():
        gains[r - 1] = 1.0 if j in relevant else 0.0
    dcg = sum(g / math.log2(r + 1) for r, g in enumerate(gains[:k], start=1))
    ideal = sorted(gains, reverse=True)
    idcg = sum(g / math.log2(r + 1) for r, g in enumerate(ideal[:k], start=1))
    first = min(rank[j] for j in relevant)
    return {
        f"ndcg@{k}": dcg / idcg,
        f"recall@{k}": sum(1 for j in relevant if rank[j] <= k) / len(relevant),
        f"mrr@{k}": 1 / first if first <= k else 0.0,
    }


@st.composite
def retrieval_cases(draw):
    n_docs = draw(st.integers(1, 15))
    n_queries = draw(st.integers(1, 4))
    # few distinct values, so that ties are common
    scores = draw(st.lists(st.lists(st.integers(-3, 3), min_size=n_docs, max_size=n_docs),
                           min_size=n_queries, max_size=n_queries))
    relevant = [
        draw(st.sets(st.integers(0, n_docs - 1), min_size=1, max_size=n_docs)) for _ in range(n_queries)
    ]
    k = draw(st.integers(1, 20))
    return scores, relevant, k


@settings(max_examples=200, deadline=None)
@given(case=retrieval_cases(), as_float=st.booleans())
def test_metrics_equal_brute_force(case, as_float):
    scores, relevant, k = case
    tensor = torch.tensor(scores, dtype=torch.float32 if as_float else torch.int64)
    names = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"]
    got = retrieval_metrics(tensor, relevant, names)
    per_query = [brute_force([float(s) for s in row], docs, k) for row, docs in zip(scores, relevant, strict=True)]
    expected = {name: sum(q[name] for q in per_query) / len(per_query) for name in names}
    assert got == pytest.approx(expected, abs=1e-9)
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in got.values())
