"""Retrieval metrics with binary relevance: nDCG@k, recall@k and MRR@k, averaged over queries.

Ranking: documents are sorted by score, highest first; equal scores are ordered by document index, lowest
first (a stable sort), so results are deterministic and a tie never favours a relevant document by luck.
Ranks start at 1.

* ndcg@k   = DCG@k / IDCG@k, DCG@k = sum over relevant documents ranked r <= k of 1 / log2(r + 1), and
  IDCG@k the DCG@k of a perfect ranking (all min(k, |relevant|) relevant documents first);
* recall@k = |relevant documents in the top k| / |relevant documents|;
* mrr@k    = 1 / (rank of the first relevant document) if that rank is <= k, else 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch

DEFAULT_METRICS = ("ndcg@5", "ndcg@10", "recall@1", "recall@5", "recall@10", "mrr@10")

_METRIC = re.compile(r"^(ndcg|recall|mrr)@([1-9][0-9]*)$")


def parse_metric(name: str) -> tuple[str, int]:
    """'ndcg@10' -> ('ndcg', 10); a ValueError names the accepted forms otherwise."""
    match = _METRIC.match(name)
    if match is None:
        raise ValueError(f"unknown metric {name!r}: expected ndcg@K, recall@K or mrr@K with K >= 1")
    return match.group(1), int(match.group(2))


def _relevant_sets(relevant: Sequence[int | Iterable[int]], n_queries: int, n_docs: int) -> list[frozenset[int]]:
    if len(relevant) != n_queries:
        raise ValueError(f"relevant has {len(relevant)} entries for {n_queries} queries")
    sets = []
    for i, entry in enumerate(relevant):
        if isinstance(entry, torch.Tensor):
            entry = entry.flatten().tolist()
        docs = frozenset((int(d) for d in entry) if isinstance(entry, Iterable) else (int(entry),))
        if not docs:
            raise ValueError(f"query {i} has no relevant document")
        bad = sorted(d for d in docs if not 0 <= d < n_docs)
        if bad:
            raise ValueError(f"query {i}: relevant document index {bad[0]} out of range for {n_docs} documents")
        sets.append(docs)
    return sets


def rankings(scores: torch.Tensor) -> torch.Tensor:
    """(Nq, Nd) document indices, best first; ties broken by document index (lowest first)."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def retrieval_metrics(
    scores: torch.Tensor,
    relevant: Sequence[int | Iterable[int]],
    metrics: Iterable[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Mean of each metric over the queries, keyed by metric name (in the order given).

    `scores` is (Nq, Nd), higher is better; `relevant[i]` is the index, or a set of indices, of the
    documents relevant to query i (each query needs at least one).
    """
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.dim() != 2:
        raise ValueError(f"scores must be (n_queries, n_documents), got shape {tuple(scores.shape)}")
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    names = list(dict.fromkeys(metrics))
    parsed = [parse_metric(name) for name in names]
    n_queries, n_docs = scores.shape
    if n_queries == 0:
        raise ValueError("no queries to evaluate")
    sets = _relevant_sets(relevant, n_queries, n_docs)
    max_k = min(max((k for _, k in parsed), default=1), n_docs)
    top = rankings(scores)[:, :max_k].tolist()
    discounts = [1.0 / math.log2(rank + 1) for rank in range(1, max_k + 1)]

    totals = dict.fromkeys(names, 0.0)
    for ranked, docs in zip(top, sets, strict=True):
        hits = [doc in docs for doc in ranked]
        first_hit = next((rank for rank, hit in enumerate(hits, start=1) if hit), None)
        for name, (kind, k) in zip(names, parsed, strict=True):
            window = hits[:k]
            if kind == "ndcg":
                dcg = sum(d for d, hit in zip(discounts, window, strict=False) if hit)
                ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(docs)) + 1))
                totals[name] += dcg / ideal
            elif kind == "recall":
                totals[name] += sum(window) / len(docs)
            else:  # mrr
                totals[name] += 1.0 / first_hit if first_hit is not None and first_hit <= k else 0.0
    return {name: total / n_queries for name, total in totals.items()}
