"""Retrieval evaluation: embed the eval queries and pages, rank by the model's score, compute metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlzoo_core.evaluation.metrics import retrieval_metrics
from vlzoo_core.model.retriever import Retriever


@dataclass(frozen=True)
class EvalSet:
    queries: list[str]
    pages: list[Any]
    relevant: list[set[int]]  # relevant page indices for each query


def evaluate_retriever(
    retriever: Retriever, eval_set: EvalSet, metrics: Sequence[str], *, batch_size: int = 16, progress: bool = True
) -> dict[str, float]:
    with torch.no_grad():
        pages = retriever.embed_images(eval_set.pages, batch_size=batch_size, progress=progress)
        queries = retriever.embed_queries(eval_set.queries, batch_size=batch_size, progress=progress)
    scores = retriever.score(queries, pages)
    return retrieval_metrics(scores, eval_set.relevant, metrics)
