"""Evaluating a retriever on a retrieval dataset, through the index.

The corpus is encoded into an index folder, cached under a key made of the model's identity, the
dataset's identity and the index settings; a second evaluation of the same model on the same data finds
every page there and encodes only the queries. Each query set is searched for its top `TOP_K` pages, and
the run is scored with MTEB's metrics (`metrics.score_run`). The result is a dict in MTEB's result layout,
with what vlzoo adds (pages indexed and skipped, the index, the settings) under "vlzoo".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlzoo_core.errors import VlzooError
from vlzoo_core.evaluation.datasets import EvalColumns, Format, QuerySet, RetrievalDataset, load_dataset
from vlzoo_core.evaluation.metrics import K_VALUES, METRIC_KINDS, TOP_K, score_run, with_positives

if TYPE_CHECKING:
    from vlzoo_core.index.index import Index
    from vlzoo_core.index.manifest import ModelIdentity
    from vlzoo_core.model.retriever import Retriever

SOURCE_FILE = "eval-source.json"
SCORE_KEYS = frozenset({f"{kind}_at_{k}" for kind in METRIC_KINDS for k in K_VALUES} | {"accuracy"})
"""Written into a cached index folder once its corpus is complete: which data it holds and what was skipped."""


def default_cache_dir() -> Path:
    """$VLZOO_CACHE/eval, else ~/.cache/vlzoo/eval."""
    root = os.environ.get("VLZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vlzoo")
    return Path(root) / "eval"


@dataclass(frozen=True)
class IndexSettings:
    """How the corpus is stored and searched; part of the cache key."""

    pool_factor: int = 1
    vector_dtype: str = "float32"  # the model's own scores; float16 / int8 measure what storage costs
    backend: str = "local"
    approximate: str | None = None  # a local candidate method ("tokens", "muvera"), or with qdrant any value
    candidates: int | None = None

    def backend_config(self) -> dict[str, Any]:
        if self.backend == "local" and self.approximate:
            return {"approximate": {"method": self.approximate}}
        return {}


def evaluate(
    model: Retriever | None,
    dataset: str | Path | RetrievalDataset,
    *,
    split: str = "test",
    format: Format = "auto",
    columns: EvalColumns | None = None,
    subsets: Sequence[str] | None = None,
    revision: str | None = None,
    task_name: str | None = None,
    main_score: str = "ndcg_at_5",
    settings: IndexSettings = IndexSettings(),
    index: str | Path | None = None,
    identity: ModelIdentity | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 4,
    query_batch_size: int = 16,
    per_query: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate `model` (a `Retriever`) on `dataset`; the result dict in MTEB's layout (see the module docstring).

    `index`: an index folder to use (and fill) instead of the cache; with `model=None`, the model its
    manifest names is loaded. `identity`: the model's `ModelIdentity` when it was loaded from a name or a
    folder (see `index.models.load_model`), so the index can load it again.
    """
    from vlzoo_core.index.index import Index
    from vlzoo_core.index.models import identify

    if main_score not in SCORE_KEYS:
        raise VlzooError(f"unknown main score {main_score!r}: expected KIND_at_K with KIND one of "
                         f"{', '.join(METRIC_KINDS)} and K one of {', '.join(map(str, K_VALUES))}, or accuracy")
    started = time.perf_counter()
    data = dataset if isinstance(dataset, RetrievalDataset) else load_dataset(
        dataset, split=split, format=format, columns=columns, subsets=subsets, revision=revision)
    if model is None and index is None:
        raise VlzooError("evaluate needs a model, an index whose manifest names one, or both")
    if model is not None:
        identity = identity or identify(model)
        root = Path(index) if index is not None else _cache_folder(cache_dir, identity, data, settings)
        opened = Index.create(root, model, identity=identity, pool_factor=settings.pool_factor,
                              dtype=settings.vector_dtype, backend=settings.backend,
                              backend_config=settings.backend_config())
    else:
        opened = Index.open(index)
    corpus = _fill(opened, data, cached=index is None, batch_size=batch_size, progress=progress)

    entries, per_query_out = [], {}
    for query_set in data.query_sets:
        entry, details = _score_query_set(opened, query_set, settings, main_score, query_batch_size,
                                          per_query)
        entries.append(entry)
        if per_query:
            per_query_out[query_set.subset] = details
    result: dict[str, Any] = {
        "dataset_revision": revision,
        "task_name": task_name or _task_name(data),
        "mteb_version": None,
        "scores": {data.split: entries},
        "evaluation_time": time.perf_counter() - started,
        "kg_co2_emissions": None,
        "vlzoo": {
            "model": opened.manifest.model.describe(),
            "dataset": data.name,
            "format": data.format,
            "main_score": main_score,
            "index": str(opened.root),
            **vars(settings),
            **corpus,
        },
    }
    if per_query:
        result["per_query"] = per_query_out
    return result


def task_score(result: dict[str, Any]) -> float:
    """One number for a task: the mean of `main_score` over its subsets and splits, as MTEB averages them."""
    values = [entry["main_score"] for entries in result["scores"].values() for entry in entries]
    return sum(values) / len(values)


# ---- the corpus ------------------------------------------------------------------------------------------


def _cache_folder(cache_dir: str | Path | None, identity: ModelIdentity, data: RetrievalDataset,
                  settings: IndexSettings) -> Path:
    key = {"model": [identity.recipe, identity.fingerprint, identity.processor], "corpus": data.corpus_key(),
           "settings": vars(settings) | {"candidates": None}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(data.name)).name or str(data.name))[-48:]
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{identity.recipe}--{slug}--{data.split}--{digest}"


def _fill(index: Index, data: RetrievalDataset, *, cached: bool, batch_size: int, progress: bool) -> dict[str, Any]:
    """Make the index hold exactly the corpus (a cache folder drops pages the data no longer has; a folder of
    the user's must not hold other pages); what was encoded and skipped."""
    from vlzoo_core.index.sources import cell_pages

    if not cached:
        corpus_ids = set(data.corpus_ids)
        extra = sum(1 for _, record in index.snapshot().records() if record.id not in corpus_ids)
        if extra:
            raise VlzooError(f"{index.root}: the index holds {extra} pages that are not in the corpus of "
                             f"{data.name}; evaluate with an index of this corpus only, or without --index")
    fingerprint = data.fingerprint()
    recorded = _read_source(index.root)
    if recorded.get("fingerprint") == fingerprint and len(index) == recorded.get("indexed_pages"):
        return {**{k: recorded[k] for k in ("corpus_pages", "indexed_pages", "skipped_pages", "skipped")},
                "encoded_pages": 0}
    report = index.add_pages(
        lambda skipped: cell_pages(data.corpus_cells(), source=data.source, folder=data.folder, skipped=skipped),
        delete_missing=cached, batch_size=batch_size, progress=progress)
    corpus = {"corpus_pages": len(data.corpus_ids), "indexed_pages": len(index),
              "skipped_pages": report.skipped.total, "skipped": report.skipped.as_dict()}
    if corpus["indexed_pages"] == 0:
        raise VlzooError(f"{data.name}: none of the {len(data.corpus_ids)} corpus pages could be read "
                         f"({report.skipped.summary()})")
    _write_source(index.root, {"fingerprint": fingerprint, **corpus})
    return {**corpus, "encoded_pages": report.encoded}


def _read_source(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_source(root: Path, record: dict[str, Any]) -> None:
    from vlzoo_core.index.store import atomic_write_text

    atomic_write_text(root / SOURCE_FILE, json.dumps(record, indent=1) + "\n")


# ---- the queries -----------------------------------------------------------------------------------------


def _score_query_set(index: Index, query_set: QuerySet, settings: IndexSettings, main_score: str,
                     batch_size: int, per_query: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    judged = with_positives(query_set.qrels)
    pairs = [(qid, text) for qid, text in zip(query_set.ids, query_set.texts, strict=True) if qid in judged]
    if not pairs:
        raise VlzooError(f"subset {query_set.subset!r}: no query has a relevance judgment")
    k = min(TOP_K, len(index))
    if settings.approximate is not None and settings.candidates is not None:
        k = min(k, settings.candidates)  # an approximate search returns at most its candidates
    hits = index.search([text for _, text in pairs], k=k, approximate=settings.approximate is not None,
                        candidates=settings.candidates, batch_size=batch_size)
    run = {qid: {hit.id: hit.score for hit in found} for (qid, _), found in zip(pairs, hits, strict=True)}
    scored = score_run(judged, run)
    entry = {"hf_subset": query_set.subset, "languages": [], "main_score": scored.scores[main_score],
             **scored.scores, "queries": scored.queries,
             "queries_without_judgments": len(query_set.ids) - len(pairs)}
    details: dict[str, Any] = {}
    if per_query:
        for (qid, text), found in zip(pairs, hits, strict=True):
            details[qid] = {"query": text, "relevant": judged[qid], **scored.per_query.get(qid, {}),
                            "top10": [[hit.id, hit.score] for hit in found[:10]]}
    return entry, details


def _task_name(data: RetrievalDataset) -> str:
    return Path(str(data.name)).stem or str(data.name)
