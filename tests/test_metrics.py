"""Retrieval metrics as MTEB computes them: pytrec_eval itself, a brute force of trec_eval's definitions with
its tie order, hand-computed values, and the top-k cut of dense score matrices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytrec_eval
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlzoo_core.evaluation.metrics import (
    DEFAULT_METRICS,
    K_VALUES,
    metric_key,
    parse_metric,
    run_from_scores,
    score_run,
    with_positives,
)
from vlzoo_core.training.run_config import EvalSection

TOL = 1e-9
MEASURES = {"ndcg": "ndcg_cut", "map": "map_cut", "recall": "recall", "precision": "P", "hit_rate": "success"}


# ---- a brute force of trec_eval's definitions ------------------------------------------------------------------


def ranking(docs: dict[str, float]) -> list[str]:
    """trec_eval's order: score descending, equal scores by document id descending (as strings)."""
    return [doc for doc, _ in sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def brute_force(judged: dict[str, int], docs: dict[str, float], k: int) -> dict[str, float]:
    ranked = ranking(docs)[:k]
    relevant = {doc for doc, rel in judged.items() if rel > 0}
    gain = {doc: max(rel, 0) for doc, rel in judged.items()}
    dcg = sum(gain.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked, start=1))
    ideal = sorted((g for g in gain.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    hits = [rank for rank, doc in enumerate(ranked, start=1) if doc in relevant]
    precisions = [(i + 1) / rank for i, rank in enumerate(hits)]
    return {
        f"ndcg_at_{k}": dcg / idcg if idcg else 0.0,
        f"map_at_{k}": sum(precisions) / len(relevant) if relevant else 0.0,
        f"recall_at_{k}": len(hits) / len(relevant) if relevant else 0.0,
        f"precision_at_{k}": len(hits) / k,
        f"hit_rate_at_{k}": 1.0 if hits else 0.0,
        f"mrr_at_{k}": 1.0 / hits[0] if hits else 0.0,
    }


@st.composite
def runs(draw):
    n_docs = draw(st.integers(1, 14))
    n_queries = draw(st.integers(1, 4))
    # ids whose string order differs from their numeric order, and few distinct scores: ties are common
    docs = [f"corpus-test-{i}" for i in draw(st.lists(st.integers(0, 30), min_size=n_docs, max_size=n_docs,
                                                      unique=True))]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"query-test-{q}"
        judged = draw(st.dictionaries(st.sampled_from(docs), st.integers(0, 3), min_size=1, max_size=n_docs))
        if not any(rel > 0 for rel in judged.values()):
            judged[docs[0]] = 1
        qrels[qid] = judged
        run[qid] = {doc: float(draw(st.integers(-2, 2))) / 2 for doc in docs}
    return qrels, run


@settings(max_examples=150, deadline=None)
@given(case=runs())
def test_score_run_equals_pytrec_eval_and_a_brute_force_of_trec_eval(case):
    qrels, run = case
    got = score_run(qrels, run)
    assert got.queries == len(qrels)
    cut = ",".join(str(k) for k in K_VALUES)
    direct = pytrec_eval.RelevanceEvaluator(qrels, {f"{m}.{cut}" for m in MEASURES.values()}).evaluate(run)
    for kind, measure in MEASURES.items():
        for k in K_VALUES:
            expected = sum(direct[q][f"{measure}_{k}"] for q in qrels) / len(qrels)
            assert got.scores[f"{kind}_at_{k}"] == pytest.approx(expected, abs=TOL), (kind, k)
    for k in (1, 3, 5, 10):
        per_query = [brute_force(qrels[q], run[q], k) for q in qrels]
        for key in per_query[0]:
            assert got.scores[key] == pytest.approx(sum(p[key] for p in per_query) / len(per_query), abs=TOL), key
    assert got.scores["accuracy"] == got.scores["recall_at_1"]
    assert set(got.per_query) == set(qrels)


# ---- hand-computed values ------------------------------------------------------------------------------------


def test_ties_go_to_the_larger_id_string():
    # "d9" > "d10" as strings: d9 is ranked first among the tied documents, so the relevant d10 is second
    got = score_run({"q": {"d10": 1}}, {"q": {"d10": 0.5, "d9": 0.5, "d1": 0.1}})
    assert got.scores["mrr_at_10"] == pytest.approx(0.5, abs=TOL)
    assert got.scores["ndcg_at_1"] == 0.0
    assert got.scores["ndcg_at_5"] == pytest.approx(1 / math.log2(3), abs=TOL)


def test_graded_relevance_and_several_relevant_pages():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    got = score_run(qrels, {"q": {"b": 0.9, "a": 0.8, "c": 0.7, "d": 0.6}})
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert got.scores["ndcg_at_5"] == pytest.approx(dcg / idcg, abs=TOL)
    assert got.scores["recall_at_1"] == pytest.approx(0.5, abs=TOL)
    assert got.scores["precision_at_3"] == pytest.approx(2 / 3, abs=TOL)
    assert got.scores["map_at_5"] == pytest.approx(1.0, abs=TOL)


def test_queries_without_judgments_are_dropped_and_zero_judgments_count():
    qrels = {"judged": {"a": 1}, "empty": {}, "only-zero": {"a": 0}}
    run = {"judged": {"a": 1.0, "b": 0.0}, "empty": {"a": 1.0}, "only-zero": {"a": 1.0}, "unjudged": {"a": 1.0}}
    assert with_positives(qrels) == {"judged": {"a": 1}, "only-zero": {"a": 0}}
    got = score_run(qrels, run)
    assert got.queries == 2  # "empty" and "unjudged" are not averaged; "only-zero" scores 0
    assert got.scores["ndcg_at_5"] == pytest.approx(0.5, abs=TOL)
    assert got.scores["mrr_at_10"] == pytest.approx(0.5, abs=TOL)


def test_a_query_id_equal_to_a_document_id_is_not_ignored():
    got = score_run({"x": {"x": 1}}, {"x": {"x": 1.0, "y": 0.5}})
    assert got.scores["ndcg_at_1"] == 1.0


# ---- dense scores to runs --------------------------------------------------------------------------------------


def test_run_from_scores_keeps_every_document_up_to_top_k():
    scores = torch.tensor([[0.1, 0.3, 0.2], [1.0, 1.0, 0.0]])
    run = run_from_scores(scores, ["q0", "q1"], ["d0", "d1", "d2"])
    assert run == {"q0": pytest.approx({"d0": 0.1, "d1": 0.3, "d2": 0.2}),
                   "q1": pytest.approx({"d0": 1.0, "d1": 1.0, "d2": 0.0})}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=30), st.integers(1, 12))
def test_run_from_scores_cuts_at_top_k_in_trec_evals_order(values, top_k):
    ids = [f"corpus-test-{i}" for i in range(len(values))]
    run = run_from_scores(torch.tensor([values], dtype=torch.float32), ["q"], ids, top_k=top_k)
    full = dict(zip(ids, map(float, values), strict=True))
    assert list(run["q"]) == ranking(full)[:top_k] if len(values) > top_k else set(run["q"]) == set(ids)
    assert len(run["q"]) == min(top_k, len(values))


@pytest.mark.parametrize(("scores", "message"), [
    (torch.zeros(2, 3), r"shape \(2, 3\) for 1 queries and 3 documents"),
    (torch.tensor([[0.0, float("nan"), 1.0]]), "NaN"),
])
def test_run_from_scores_errors(scores, message):
    with pytest.raises(ValueError, match=message):
        run_from_scores(scores, ["q"], ["a", "b", "c"])


# ---- names ---------------------------------------------------------------------------------------------------


def test_metric_names():
    assert parse_metric("hit_rate@20") == ("hit_rate", 20)
    assert metric_key("ndcg@5") == "ndcg_at_5"
    assert list(DEFAULT_METRICS) == EvalSection().metrics
    for bad in ("ndcg@0", "ndcg", "bleu@5", "ndcg@5 "):
        with pytest.raises(ValueError, match="unknown metric"):
            parse_metric(bad)
    scored = score_run({"q": {"a": 1}}, {"q": {"a": 1.0}})
    assert scored.select(["ndcg@5", "mrr@10", "map@100"]) == {"ndcg@5": 1.0, "mrr@10": 1.0, "map@100": 1.0}


# ---- MTEB itself (tools/make_mteb_fixtures.py ran MTEB 2.26.24 on these cases) ------------------------------------

MTEB_FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "mteb" / "retrieval_metrics.json").read_text())
ROUNDED = ("ndcg_at_", "map_at_", "recall_at_", "precision_at_", "hit_rate_at_", "accuracy")


@pytest.mark.parametrize("case", MTEB_FIXTURE["cases"], ids=lambda case: case["name"])
def test_scores_equal_mteb(case):
    got = score_run(case["qrels"], case["run"])
    if case["scores"] is None:  # MTEB raises on a run query without qrels; here it is left out
        assert "KeyError" in case["mteb_error"]
        assert set(got.per_query) <= set(case["qrels"])
        return
    compared = 0
    for key, expected in case["scores"].items():
        if key.startswith(ROUNDED):  # MTEB rounds these averages to 5 decimals
            assert round(got.scores[key], 5) == expected, key
            compared += 1
        elif key.startswith("mrr_at_"):
            assert got.scores[key] == pytest.approx(expected, abs=1e-12), key
            compared += 1
    assert compared == 6 * len(K_VALUES) + 1
    for qid, values in case["pytrec_eval_per_query"].items():
        for measure, value in values.items():
            name, k = measure.rsplit("_", 1)
            kind = {m: kind for kind, m in MEASURES.items()}[name]
            assert got.per_query[qid][f"{kind}_at_{k}"] == pytest.approx(value, abs=1e-12), (qid, measure)
