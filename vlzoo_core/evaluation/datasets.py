"""Retrieval evaluation data: a corpus of page images, query sets and graded qrels, from a Hub dataset or local
files, in the two layouts ViDoRe uses.

* ViDoRe v1 QA (`vidore-v1`): one table with `query`, `image` and `image_filename` columns. The corpus is
  the distinct pages (by `image_filename`, else one page per row); a query that occurs more than once counts
  once, with all its pages relevant, as the ViDoRe tools do.
* BEIR (`beir`), as in ViDoRe v2/v3 and MTEB's `*_beir` copies of v1: `corpus`, `queries` and `qrels`
  tables (Hub configs, or sub-folders / files of those names), graded relevance, integer or string ids.
  A `language` column in the queries splits them into subsets that share the corpus, as MTEB does for v2.

Ids are the strings MTEB uses, because pytrec_eval breaks score ties by document id: MTEB's v1 and v2 tasks
build f"corpus-{split}-{id}" and f"query-{split}-{id}" (`ids="split-prefixed"`, the default; a v1 query's id
is its position among the distinct queries), its generic loader (ViDoRe v3) keeps the dataset's own
(`ids="as-is"`). ViDoRe v3 also names its configs per language ("french-corpus", ...): `config_prefix`.
Column names are detected from the usual ones or given in `EvalColumns`. Nothing here decodes an image:
pages are read as cells when the corpus is indexed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlzoo_core.config import StrictModel
from vlzoo_core.data.tables import TABLE_SUFFIXES, TableReader, open_hub, open_table_files
from vlzoo_core.errors import VlzooError

Format = Literal["auto", "vidore-v1", "beir"]
IdScheme = Literal["split-prefixed", "as-is"]
BEIR_PARTS = ("corpus", "queries", "qrels")
KNOWN_SPLITS = ("train", "test", "validation", "dev", "eval")

QUERY_COLUMNS = ("query", "question", "text")
IMAGE_COLUMNS = ("image", "page", "page_image", "img")
IMAGE_ID_COLUMNS = ("image_filename", "image_id", "page_id", "doc_id", "corpus-id")
CORPUS_ID_COLUMNS = ("corpus-id", "corpus_id", "_id", "id", "doc-id", "doc_id", "docid")
QUERY_ID_COLUMNS = ("query-id", "query_id", "_id", "id", "qid")
SCORE_COLUMNS = ("score", "relevance", "label")
LANGUAGE_COLUMNS = ("language", "lang")


class EvalColumns(StrictModel):
    """Column names, where the dataset does not use the usual ones (None: detected)."""

    query: str | None = None
    image: str | None = None
    image_id: str | None = None  # vidore-v1: a page's identity (image_filename)
    corpus_id: str | None = None  # beir: in corpus and qrels
    query_id: str | None = None  # beir: in queries and qrels
    score: str | None = None  # beir qrels
    language: str | None = None  # beir queries: splits them into subsets


@dataclass(frozen=True)
class QuerySet:
    """The queries of one subset ("default", or a language) and their judgments."""

    subset: str
    ids: list[str]
    texts: list[str]
    qrels: dict[str, dict[str, int]]


@dataclass
class RetrievalDataset:
    """A corpus (read lazily), its query sets and what identifies the data (the cache key's part)."""

    name: str
    split: str
    format: str
    corpus_ids: list[str]
    query_sets: list[QuerySet]
    identity: dict[str, Any]
    _corpus: TableReader | None = field(default=None, repr=False)
    _image_column: str = "image"
    _keep_rows: list[int] | None = None  # v1: the first row of each distinct page

    @property
    def source(self) -> str:
        return self._corpus.source if self._corpus is not None else self.name

    @property
    def folder(self) -> Path | None:
        return self._corpus.folder if self._corpus is not None else None

    def fingerprint(self) -> str:
        """What the data is: the same for the same source, settings and files."""
        return _digest(self.identity)

    def corpus_key(self) -> str:
        """Where the corpus comes from, whatever the files hold now or the query subsets: one index serves the
        data as it changes (pages are re-encoded only where they changed) and every subset of a dataset
        (ViDoRe v3 repeats its corpus in each language's config)."""
        return _digest({k: v for k, v in self.identity.items() if k not in ("subsets", "config_prefix", "files")})

    def corpus_cells(self) -> Iterator[tuple[str, Any]]:
        """(document id, undecoded image cell) of every corpus page, in corpus order."""
        assert self._corpus is not None
        keep = set(self._keep_rows) if self._keep_rows is not None else None
        ids = iter(self.corpus_ids)
        row = 0
        for batch in self._corpus.batches([self._image_column]):
            for cell in batch[self._image_column]:
                if keep is None or row in keep:
                    yield next(ids), cell
                row += 1


# ---- opening ---------------------------------------------------------------------------------------------


def load_dataset(
    dataset: str | Path,
    *,
    split: str = "test",
    format: Format = "auto",
    columns: EvalColumns | None = None,
    subsets: Sequence[str] | None = None,
    revision: str | None = None,
    ids: IdScheme = "split-prefixed",
    config_prefix: str = "",
    language_subsets: bool = True,
) -> RetrievalDataset:
    """The evaluation data of `dataset`: a local file or folder, else a Hub id (from the cache when offline).

    `subsets` picks query subsets by the queries' language column (all of them by default; with
    `language_subsets=False` the column is ignored and all queries form the subset "default").
    """
    columns = columns or EvalColumns()
    path = Path(dataset).expanduser()
    local = path.exists()
    if not local and (str(dataset).startswith((".", "/", "~")) or str(dataset).endswith(TABLE_SUFFIXES)):
        raise VlzooError(f"dataset not found: {str(dataset)!r}")
    tables = _LocalTables(path, split, config_prefix) if local else \
        _HubTables(str(dataset), split, revision, config_prefix)
    chosen = tables.layout() if format == "auto" else format
    identity = {"dataset": str(path.resolve()) if local else str(dataset), "revision": revision, "split": split,
                "format": chosen, "columns": columns.model_dump(), "subsets": list(subsets or []), "ids": ids,
                "config_prefix": config_prefix, "language_subsets": language_subsets}
    if local:
        identity["files"] = tables.stamp()
    if chosen == "vidore-v1":
        return _vidore_v1(str(dataset), tables.single(), split, columns, identity)
    return _beir(str(dataset), tables, _Ids(split, ids), columns, subsets if language_subsets else None,
                 language_subsets, identity)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class _Ids:
    """The id strings of a split: MTEB's prefixed ones, or the dataset's own."""

    split: str
    scheme: str

    def corpus(self, value: Any) -> str:
        return f"corpus-{self.split}-{value}" if self.scheme == "split-prefixed" else str(value)

    def query(self, value: Any) -> str:
        return f"query-{self.split}-{value}" if self.scheme == "split-prefixed" else str(value)


class _LocalTables:
    """Tables of a local file or folder; a folder's files of one split are picked by their names."""

    def __init__(self, path: Path, split: str, prefix: str = "") -> None:
        self.path, self.split, self.prefix = path, split, prefix

    def layout(self) -> str:
        if self.path.is_dir() and any(self._part_files(part) for part in BEIR_PARTS):
            return "beir"
        return "vidore-v1"

    def stamp(self) -> list[tuple[str, int, int]]:
        files = [self.path] if self.path.is_file() else _table_files(self.path)
        return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]

    def single(self) -> TableReader:
        if self.path.is_file():
            return open_table_files([self.path])
        return open_table_files(_of_split(_table_files(self.path), self.path, self.split), self.path.name)

    def part(self, part: str) -> TableReader:
        name = self.prefix + part
        files = self._part_files(part)
        if not files:
            found = ", ".join(sorted(p.name for p in self.path.iterdir() if not p.name.startswith("."))) or "nothing"
            raise VlzooError(f"{self.path}: no {name!r} table for the BEIR layout (found: {found})")
        return open_table_files(_of_split(files, self.path / name, self.split), f"{self.path.name}/{name}")

    def _part_files(self, part: str) -> list[Path]:
        if not self.path.is_dir():
            return []
        name = self.prefix + part
        folder = self.path / name
        if folder.is_dir():
            return _table_files(folder)
        return [self.path / f"{name}{suffix}" for suffix in TABLE_SUFFIXES if (self.path / f"{name}{suffix}").is_file()]


class _HubTables:
    """A Hub dataset's tables: the default config (v1) or the corpus / queries / qrels configs (BEIR)."""

    def __init__(self, name: str, split: str, revision: str | None, prefix: str = "") -> None:
        self.name, self.split, self.revision, self.prefix = name, split, revision, prefix

    def layout(self) -> str:
        import datasets

        try:
            configs = datasets.get_dataset_config_names(self.name, revision=self.revision)
        except Exception as exc:  # noqa: BLE001 - offline, missing, gated, ...
            message = " ".join(str(exc).split())
            raise VlzooError(f"cannot load Hub dataset {self.name!r}: {message}") from exc
        return "beir" if {self.prefix + part for part in BEIR_PARTS} <= set(configs) else "vidore-v1"

    def single(self) -> TableReader:
        return open_hub(self.name, split=self.split, revision=self.revision)

    def part(self, part: str) -> TableReader:
        config = self.prefix + part
        return open_hub(self.name, config=config, split=self.split, revision=self.revision,
                        source=f"{self.name}/{config}")


def _table_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                  and not p.name.startswith(("cache-", "."))
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _split_of(path: Path, folder: Path) -> str | None:
    """The split a data file belongs to by the Hub's naming (`test-00000-of-00001.parquet`, `test.parquet`,
    `test/...`), or None."""
    parts = path.relative_to(folder).parts
    for name in (*parts[:-1], path.stem, path.stem.split("-")[0]):
        if name in KNOWN_SPLITS:
            return name
    return None


def _of_split(files: list[Path], folder: Path, split: str) -> list[Path]:
    named = {f: _split_of(f, folder) for f in files}
    if not any(named.values()):
        return files  # one split, not named
    chosen = [f for f, name in named.items() if name == split]
    if not chosen:
        found = ", ".join(sorted({name for name in named.values() if name})) or "none"
        raise VlzooError(f"{folder}: no split {split!r} (splits found: {found})")
    return chosen


def _pick(role: str, wanted: str | None, candidates: Sequence[str], table: TableReader,
          required: bool = True) -> str | None:
    picked = table.column(role, wanted, candidates)
    if picked is None and required:
        raise VlzooError(f"{table.source}: no {role} column (looked for {', '.join(candidates)}; columns found: "
                         f"{', '.join(table.columns) or 'none'}); name it with --{role.replace(' ', '-')}-column")
    return picked


# ---- the two layouts -------------------------------------------------------------------------------------


def _vidore_v1(name: str, table: TableReader, split: str, columns: EvalColumns,
               identity: dict[str, Any]) -> RetrievalDataset:
    query_column = _pick("query", columns.query, QUERY_COLUMNS, table, required=False)
    image_column = _pick("image", columns.image, IMAGE_COLUMNS, table, required=False)
    if query_column is None or image_column is None:
        raise VlzooError(f"{table.source}: neither a ViDoRe v1 table (query, image, image_filename) nor a BEIR "
                         f"folder (corpus, queries, qrels); columns found: {', '.join(table.columns) or 'none'}")
    id_column = _pick("image id", columns.image_id, IMAGE_ID_COLUMNS, table, required=False)
    rows = table.read([query_column] + ([id_column] if id_column else []))
    keys = [str(key) for key in rows[id_column]] if id_column else [str(row) for row in range(table.rows)]
    corpus_ids, keep_rows, queries = vidore_v1_layout(rows[query_column], keys, split)
    if not queries.ids:
        raise VlzooError(f"{table.source}: no queries (the {query_column!r} column has no non-empty text)")
    return RetrievalDataset(name, split, "vidore-v1", corpus_ids, [queries], identity, table, image_column,
                            keep_rows)


def vidore_v1_layout(texts: Sequence[Any], keys: Sequence[str], split: str) -> tuple[list[str], list[int], QuerySet]:
    """The ViDoRe v1 reading of rows (query text, page key): the corpus ids of the distinct pages in order,
    the first row of each, and the query set (each distinct non-empty text once, all its pages relevant)."""
    page_of: dict[str, str] = {}
    keep_rows: list[int] = []
    qrels: dict[str, dict[str, int]] = {}
    query_ids: dict[str, str] = {}
    for row, (text, key) in enumerate(zip(texts, keys, strict=True)):
        if key not in page_of:
            page_of[key] = f"corpus-{split}-{key}"
            keep_rows.append(row)
        if not isinstance(text, str) or not text.strip():
            continue  # a page without a usable query still belongs to the corpus
        qid = query_ids.setdefault(text, f"query-{split}-{len(query_ids)}")
        qrels.setdefault(qid, {})[page_of[key]] = 1
    return list(page_of.values()), keep_rows, QuerySet("default", list(query_ids.values()), list(query_ids), qrels)


def _beir(name: str, tables: _LocalTables | _HubTables, ids: _Ids, columns: EvalColumns,
          subsets: Sequence[str] | None, language_subsets: bool, identity: dict[str, Any]) -> RetrievalDataset:
    corpus, queries, qrels_table = (tables.part(part) for part in BEIR_PARTS)
    corpus_id = _pick("corpus id", columns.corpus_id, CORPUS_ID_COLUMNS, corpus)
    image = _pick("image", columns.image, IMAGE_COLUMNS, corpus)
    query_id = _pick("query id", columns.query_id, QUERY_ID_COLUMNS, queries)
    text = _pick("query", columns.query, QUERY_COLUMNS, queries)
    language = _pick("language", columns.language, LANGUAGE_COLUMNS, queries, required=False) \
        if language_subsets else None
    judged_query = _pick("query id", columns.query_id, QUERY_ID_COLUMNS, qrels_table)
    judged_doc = _pick("corpus id", columns.corpus_id, CORPUS_ID_COLUMNS, qrels_table)
    score = _pick("score", columns.score, SCORE_COLUMNS, qrels_table)

    corpus_ids = [ids.corpus(value) for value in corpus.read([corpus_id])[corpus_id]]
    if len(set(corpus_ids)) != len(corpus_ids):
        raise VlzooError(f"{corpus.source}: duplicate ids in column {corpus_id!r}")
    if not corpus_ids:
        raise VlzooError(f"{corpus.source}: the corpus has no pages")
    rows = queries.read([query_id, text] + ([language] if language else []))
    judged = qrels_table.read([judged_query, judged_doc, score])
    qrels: dict[str, dict[str, int]] = {}
    for q, d, s in zip(judged[judged_query], judged[judged_doc], judged[score], strict=True):
        qrels.setdefault(ids.query(q), {})[ids.corpus(d)] = int(s)
    known = set(corpus_ids)
    missing = {doc for docs in qrels.values() for doc in docs if doc not in known}
    if missing:
        raise VlzooError(f"{qrels_table.source}: the qrels name {len(missing)} document ids that are not in the "
                         f"corpus (e.g. {sorted(missing)[0]!r})")
    by_subset: dict[str, list[tuple[str, str]]] = {}
    for position, (q, t) in enumerate(zip(rows[query_id], rows[text], strict=True)):
        subset = str(rows[language][position]) if language else "default"
        by_subset.setdefault(subset, []).append((ids.query(q), t))
    if subsets:
        unknown = [s for s in subsets if s not in by_subset]
        if unknown:
            raise VlzooError(f"{queries.source}: no subset {unknown[0]!r} (subsets found: "
                             f"{', '.join(sorted(by_subset))})")
        by_subset = {s: by_subset[s] for s in subsets}
    query_sets = []
    for subset, pairs in (by_subset.items() if subsets else sorted(by_subset.items())):
        pairs = [(qid, t) for qid, t in pairs if isinstance(t, str) and t.strip()]
        query_sets.append(QuerySet(subset, [qid for qid, _ in pairs], [t for _, t in pairs],
                                   {qid: qrels[qid] for qid, _ in pairs if qid in qrels}))
    if not any(qs.ids for qs in query_sets):
        raise VlzooError(f"{queries.source}: no queries (no non-empty text in column {text!r})")
    return RetrievalDataset(name, ids.split, "beir", corpus_ids, query_sets, identity, corpus, image)
