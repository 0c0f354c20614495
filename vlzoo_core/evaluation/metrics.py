"""Retrieval metrics computed the way MTEB computes them, so scores match the leaderboards.

A run maps each query id to its retrieved documents and their scores (the top `TOP_K`), qrels map each
query id to graded relevance judgments. As in MTEB's `calculate_retrieval_scores`:

* nDCG@k, MAP@k, recall@k, precision@k and success@k ("hit rate") come from trec_eval through pytrec_eval
  (the `pytrec-eval-terrier` package), with graded gains as trec_eval uses them; MRR@k is computed beside
  it over the documents ranked by (score, document id) descending, a document counting as relevant when
  its judgment is above 0;
* equal scores are ordered by document id as a string, descending: pytrec_eval's order, so ids must be
  the strings MTEB builds (see `datasets`);
* queries without any judgment are dropped first; the averages are over the queries that pytrec_eval
  scores (those in both the qrels and the run);
* `accuracy` is recall@1.

Values are kept unrounded (MTEB rounds its averages, but MRR, to 5 decimals when it reports them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

K_VALUES = (1, 3, 5, 10, 20, 100, 1000)
TOP_K = 1000
"""Documents retrieved per query, as MTEB retrieves them (its largest k)."""

DEFAULT_METRICS = ("ndcg@5", "ndcg@10", "recall@1", "recall@5", "recall@10", "mrr@10")
"""The metrics a training run reports unless its config names others."""

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

_KINDS = {"ndcg": "ndcg_cut", "map": "map_cut", "recall": "recall", "precision": "P", "hit_rate": "success"}
METRIC_KINDS = (*_KINDS, "mrr")
_METRIC = re.compile(r"^(ndcg|map|recall|precision|hit_rate|mrr)@([1-9][0-9]*)$")


def parse_metric(name: str) -> tuple[str, int]:
    """'ndcg@10' -> ('ndcg', 10); a ValueError names the accepted forms otherwise."""
    match = _METRIC.match(name)
    if match is None:
        raise ValueError(f"unknown metric {name!r}: expected ndcg@K, map@K, recall@K, precision@K, hit_rate@K "
                         "or mrr@K with K >= 1")
    return match.group(1), int(match.group(2))


def metric_key(name: str) -> str:
    """The MTEB result key of a metric name: 'ndcg@5' -> 'ndcg_at_5'."""
    kind, k = parse_metric(name)
    return f"{kind}_at_{k}"


@dataclass(frozen=True)
class RetrievalScores:
    """Averages keyed as in MTEB's results (`ndcg_at_5`, `mrr_at_10`, `accuracy`, ...), the same values per
    query, and how many queries were averaged."""

    scores: dict[str, float]
    per_query: dict[str, dict[str, float]]
    queries: int

    def select(self, names: Iterable[str]) -> dict[str, float]:
        """{'ndcg@5': value, ...} for metric names as a training config writes them."""
        return {name: self.scores[metric_key(name)] for name in names}


def with_positives(qrels: Qrels) -> dict[str, dict[str, int]]:
    """The qrels of queries with at least one judgment (MTEB drops the others before evaluating)."""
    return {qid: {doc: int(rel) for doc, rel in docs.items()} for qid, docs in qrels.items() if len(docs) > 0}


def score_run(qrels: Qrels, run: Run, k_values: Sequence[int] = K_VALUES) -> RetrievalScores:
    """MTEB's retrieval scores of `run` against `qrels` (see the module docstring)."""
    import pytrec_eval

    k_values = sorted(set(k_values))
    judged = with_positives(qrels)
    run = {qid: {doc: float(score) for doc, score in docs.items()} for qid, docs in run.items() if qid in judged}
    cut = ",".join(str(k) for k in k_values)
    measures = {f"{measure}.{cut}" for measure in _KINDS.values()}
    evaluated = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(run)
    per_query: dict[str, dict[str, float]] = {}
    for qid, values in evaluated.items():
        row = {f"{kind}_at_{k}": float(values[f"{measure}_{k}"]) for kind, measure in _KINDS.items() for k in k_values}
        per_query[qid] = row
    for qid, rr in _reciprocal_ranks(judged, run, k_values).items():
        per_query.setdefault(qid, {}).update(rr)
    scores: dict[str, float] = {}
    if evaluated:
        for kind in _KINDS:
            for k in k_values:
                key = f"{kind}_at_{k}"
                scores[key] = sum(per_query[qid][key] for qid in evaluated) / len(evaluated)
        if "recall_at_1" in scores:
            scores["accuracy"] = scores["recall_at_1"]
    ranked = [qid for qid in run]
    for k in k_values:
        key = f"mrr_at_{k}"
        scores[key] = sum(per_query[qid][key] for qid in ranked) / len(ranked) if ranked else 0.0
    return RetrievalScores(scores, per_query, len(evaluated))


def _reciprocal_ranks(qrels: Qrels, run: Run, k_values: Sequence[int]) -> dict[str, dict[str, float]]:
    out = {}
    for qid, docs in run.items():
        relevant = {doc for doc, rel in qrels[qid].items() if rel > 0}
        ranked = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)[: max(k_values)]
        first = next((rank for rank, (doc, _) in enumerate(ranked, start=1) if doc in relevant), None)
        out[qid] = {f"mrr_at_{k}": 1.0 / first if first is not None and first <= k else 0.0 for k in k_values}
    return out


def run_from_scores(scores: torch.Tensor, query_ids: Sequence[str], doc_ids: Sequence[str],
                    top_k: int = TOP_K) -> dict[str, dict[str, float]]:
    """The top-`top_k` documents of each query from a dense (n_queries, n_docs) score matrix.

    Documents tied at the cut are kept in the order of their ids as pytrec_eval ranks them (descending),
    so the cut keeps the same documents MTEB's ranking would.
    """
    import torch

    scores = torch.as_tensor(scores).detach().float().cpu()
    if scores.shape != (len(query_ids), len(doc_ids)):
        raise ValueError(f"scores of shape {tuple(scores.shape)} for {len(query_ids)} queries and {len(doc_ids)} "
                         "documents")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    run: dict[str, dict[str, float]] = {}
    if scores.shape[1] <= top_k:
        for qid, row in zip(query_ids, scores.tolist(), strict=True):
            run[qid] = dict(zip(doc_ids, row, strict=True))
        return run
    # Sort by id descending once, then a stable sort by score keeps ties in that order.
    by_id = sorted(range(len(doc_ids)), key=lambda j: doc_ids[j], reverse=True)
    permuted = scores[:, by_id]
    order = torch.sort(permuted, dim=1, descending=True, stable=True).indices[:, :top_k]
    for qid, row, picks in zip(query_ids, permuted.tolist(), order.tolist(), strict=True):
        run[qid] = {doc_ids[by_id[j]]: row[j] for j in picks}
    return run
