"""Retrieval evaluation during training: embed the eval queries and pages, score them, and compute metrics with
the function `vlzoo eval` uses, on the same reading of the data, so a run's metrics.json and `vlzoo eval` of
the saved model on the same table agree.

The eval rows are read as a ViDoRe v1 table without an image id (`vidore_v1_layout`): each row's image is
a page with id f"corpus-test-{row}", and a query text that occurs more than once counts once with all its
pages relevant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlzoo_core.evaluation.datasets import QuerySet, vidore_v1_layout
from vlzoo_core.evaluation.metrics import run_from_scores, score_run
from vlzoo_core.model.retriever import Retriever

EVAL_SPLIT = "test"
"""The split label in the eval set's ids: `vlzoo eval`'s default, so tied scores rank alike in both."""


@dataclass(frozen=True)
class EvalSet:
    """The distinct pages (with their ids) and the query set of the eval rows."""

    doc_ids: list[str]
    pages: Sequence[Any]
    queries: QuerySet

    @classmethod
    def from_rows(cls, queries: Sequence[str], pages: Sequence[Any]) -> EvalSet:
        doc_ids, _, query_set = vidore_v1_layout(queries, [str(row) for row in range(len(pages))], EVAL_SPLIT)
        return cls(doc_ids, pages, query_set)  # one page per row: the ids follow the rows


def evaluate_retriever(
    retriever: Retriever, eval_set: EvalSet, metrics: Sequence[str], *, batch_size: int = 16, progress: bool = True
) -> dict[str, float]:
    with torch.no_grad():
        pages = retriever.embed_images(eval_set.pages, batch_size=batch_size, progress=progress)
        queries = retriever.embed_queries(eval_set.queries.texts, batch_size=batch_size, progress=progress)
    run = run_from_scores(retriever.score(queries, pages), eval_set.queries.ids, eval_set.doc_ids)
    return score_run(eval_set.queries.qrels, run).select(metrics)
