"""`Index`: create, open, add to, remove from, compact and search an index folder (see `store` for its layout).

Adding is incremental and resumable. Pages stream from the sources; a page whose id and sha256 are already
committed is skipped, a changed page replaces its old version. New pages are grouped, in stream order,
into shards of `shard_size` pages, each named by a hash of the model, the storage settings and its pages'
ids and hashes. A run that was killed left whole shards behind: the next run finds the same groups, reuses
those shards and never encodes their pages again. Under `accelerate launch` (or any initialised
`torch.distributed` group), rank r encodes groups r, r + world, ...; rank 0 commits once every shard is
written, so the result equals a one-process index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pydantic import ValidationError
from tqdm.auto import tqdm

from vlzoo_core.errors import SearchIndexError, describe_validation_error
from vlzoo_core.index.backends import IndexBackend
from vlzoo_core.index.encode import PageEncoder
from vlzoo_core.index.manifest import MANIFEST_FILE, BackendRef, Manifest, ModelIdentity, Pooling, read_manifest
from vlzoo_core.index.models import check_same_model, identify, reload_model
from vlzoo_core.index.snapshot import Snapshot
from vlzoo_core.index.sources import DEFAULT_DPI, Page, SkipReport, TableOptions, iter_pages
from vlzoo_core.index.store import (
    CommitRecord,
    PageRecord,
    Shard,
    ShardEntry,
    atomic_write_text,
    read_commit,
    remove_shard_files,
    shard_exists,
    stored_shard_names,
    write_commit,
    write_lock,
    write_shard,
)
from vlzoo_core.model.retriever import Retriever
from vlzoo_core.model.scoring import pad_embeddings

DEFAULT_SHARD_SIZE = 256
BUCKET_BATCHES = 8  # pages are sorted by size within windows of this many batches


@dataclass(frozen=True)
class SearchResult:
    rank: int
    score: float
    id: str
    source: str
    page: int
    metadata: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": self.score, "id": self.id, "source": self.source, "page": self.page,
                "metadata": dict(self.metadata)}


@dataclass
class AddReport:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    encoded: int = 0
    reused: int = 0  # pages found in shards left by an interrupted run
    skipped: SkipReport = field(default_factory=SkipReport)
    seconds: float = 0.0
    processes: int = 1

    def summary(self) -> str:
        rate = f", {self.encoded / self.seconds:.1f} pages/s" if self.encoded and self.seconds else ""
        parts = [f"added {self.added} pages", f"updated {self.changed}", f"unchanged {self.unchanged}",
                 f"removed {self.removed}"]
        if self.reused:
            parts.append(f"resumed {self.reused} from an interrupted run")
        where = f" by {self.processes} processes" if self.processes > 1 else ""
        line = ", ".join(parts) + f" (encoded {self.encoded}{where} in {self.seconds:.1f} s{rate})"
        return line + (f"; {self.skipped.summary()}" if self.skipped.total else "")


class _Ranks:
    """The process group, if any: rank, world size, and a check that every rank succeeded."""

    def __init__(self) -> None:
        dist = torch.distributed
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1

    def all_ok(self, ok: bool) -> bool:
        if not self.active:
            return ok
        flag = torch.tensor([0 if ok else 1])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag) == 0

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run a block on every rank, then agree: a rank whose block raised re-raises; the others raise too."""
        ok = False
        try:
            yield
            ok = True
        finally:
            if not self.all_ok(ok) and ok:
                raise SearchIndexError(f"another process failed while {what}; nothing was committed")

    def total(self, value: int) -> int:
        if not self.active:
            return value
        count = torch.tensor([value])
        torch.distributed.all_reduce(count)
        return int(count)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def _backend(manifest: Manifest, root: Path) -> IndexBackend:
    import vlzoo

    spec = vlzoo.registry().component("index_backend", manifest.backend.name)
    config = spec.parse_config(manifest.backend.config, f"backend {manifest.backend.name!r}")
    return spec.load()(config, root)


class Index:
    """An index folder and, once given or loaded, the model that writes and queries it."""

    def __init__(self, root: Path, manifest: Manifest, model: Retriever | None = None,
                 device: torch.device | str | None = None) -> None:
        self.root, self.manifest, self._model, self._device = root, manifest, model, device
        self.backend = _backend(manifest, root)
        self._snapshot: Snapshot | None = None

    # ---- creation ------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        model: Retriever,
        *,
        identity: ModelIdentity | None = None,
        pool_factor: int = 1,
        drop_prompt_tokens: bool = False,
        dtype: str = "float16",
        backend: str = "local",
        backend_config: Mapping[str, Any] | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        dpi: int = DEFAULT_DPI,
    ) -> Index:
        """A new, empty index for `model` at `path` (an existing index of the same model and settings is opened).

        In a process group, rank 0 creates the folder and the other ranks open it once it exists.
        """
        ranks = _Ranks()
        settings = dict(identity=identity, pool_factor=pool_factor, drop_prompt_tokens=drop_prompt_tokens,
                        dtype=dtype, backend=backend, backend_config=backend_config, shard_size=shard_size, dpi=dpi)
        index = None
        with ranks.together("creating the index"):
            if ranks.rank == 0:
                index = cls._create(Path(path), model, **settings)
        return index if index is not None else cls._create(Path(path), model, **settings)

    @classmethod
    def _create(cls, root: Path, model: Retriever, *, identity: ModelIdentity | None, pool_factor: int,
                drop_prompt_tokens: bool, dtype: str, backend: str, backend_config: Mapping[str, Any] | None,
                shard_size: int, dpi: int) -> Index:
        identity = identity or identify(model)
        if not model.multi_vector:
            raise SearchIndexError(f"{identity.recipe}: the index stores multi-vector embeddings; this model's "
                                   "heads are single-vector")
        try:
            manifest = Manifest(model=identity, dim=model.document_head.dim, dtype=dtype,
                                pooling=Pooling(factor=pool_factor, drop_prompt_tokens=drop_prompt_tokens),
                                backend=BackendRef(name=backend, config=dict(backend_config or {})),
                                shard_size=shard_size, dpi=dpi)
        except ValidationError as exc:
            raise SearchIndexError(describe_validation_error(exc, "index")) from exc
        if (root / MANIFEST_FILE).exists():
            existing = read_manifest(root)
            check_same_model(existing.model, identity)
            settings = ("dtype", "pooling", "backend", "shard_size", "dpi")
            changed = [s for s in settings if getattr(existing, s) != getattr(manifest, s)]
            if changed:
                shown = ", ".join(f"{s} {getattr(existing, s)!r} -> {getattr(manifest, s)!r}" for s in changed)
                raise SearchIndexError(f"{root}: an index with other settings exists ({shown}); use another "
                                       "folder, or keep its settings")
            return cls(root, existing, model)
        if root.exists() and any(root.iterdir()):
            raise SearchIndexError(f"{root}: exists and is not an index; choose an empty or new folder")
        index = cls(root, manifest, model)  # builds the backend first: an unknown backend writes nothing
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / MANIFEST_FILE, manifest.model_dump_json(indent=2) + "\n")
        return index

    @classmethod
    def open(cls, path: str | Path, model: Retriever | None = None, *,
             device: torch.device | str | None = None) -> Index:
        """An existing index. `model`, if given, must be the one that built it; else the one its manifest
        names is loaded (onto `device`) when first needed."""
        root = Path(path)
        manifest = read_manifest(root)
        if model is not None:
            check_same_model(manifest.model, identify(model))
        return cls(root, manifest, model, device)

    # ---- the model -----------------------------------------------------------------------------------

    @property
    def model(self) -> Retriever:
        if self._model is None:
            self._model = reload_model(self.manifest.model, device=self._device)
        return self._model

    # ---- reading -------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The latest commit (kept between searches while no other commit is made)."""
        commit = read_commit(self.root)
        if self._snapshot is None or self._snapshot.commit != commit:
            if self._snapshot is not None:
                self._snapshot.close()
            self._snapshot = Snapshot(self.root, commit, self.manifest.dim)
        return self._snapshot

    def __len__(self) -> int:
        return len(self.snapshot())

    def info(self) -> dict[str, Any]:
        snapshot = self.snapshot()
        records = [record for _, record in snapshot.records()]
        stored = sum(entry.vectors for entry in snapshot.commit.shards)
        nbytes = sum(entry.bytes for entry in snapshot.commit.shards)
        deleted = sum(len(rows) for rows in snapshot.commit.deleted.values())
        pages = len(records)
        return {
            "path": str(self.root), "model": self.manifest.model.describe(), "format_version": self.manifest.format_version,
            "dim": self.manifest.dim, "dtype": self.manifest.dtype, "pooling": self.manifest.pooling.model_dump(),
            "backend": self.manifest.backend.name, "pages": pages, "documents": len({r.source for r in records}),
            "vectors": sum(r.n_vectors for r in records), "shards": len(snapshot.commit.shards),
            "deleted_pages_awaiting_compaction": deleted, "bytes": nbytes,
            "bytes_per_page": nbytes / (pages + deleted) if pages + deleted else 0.0,
            "vectors_per_page": stored / (pages + deleted) if pages + deleted else 0.0,
            "generation": snapshot.generation, "last_add_skipped": snapshot.commit.skipped,
        }

    # ---- adding --------------------------------------------------------------------------------------

    def add(
        self,
        sources: Sequence[str | Path],
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        table: TableOptions = TableOptions(),
        strict: bool = False,
        delete_missing: bool = False,
        batch_size: int = 4,
        progress: bool = False,
    ) -> AddReport:
        """Index new and changed pages of `sources`; with `delete_missing`, drop pages no source has now."""
        return self.add_pages(
            lambda skipped: iter_pages(sources, dpi=self.manifest.dpi, strict=strict, metadata=metadata,
                                       table=table, skipped=skipped),
            delete_missing=delete_missing, batch_size=batch_size, progress=progress)

    def add_pages(
        self,
        pages: Callable[[SkipReport], Iterable[Page]],
        *,
        delete_missing: bool = False,
        batch_size: int = 4,
        progress: bool = False,
    ) -> AddReport:
        """Index new and changed pages from `pages(skipped)`, which yields `Page`s and counts what it skips in
        `skipped` (see `sources.iter_pages` and `sources.cell_pages`); called once, on every process."""
        ranks = _Ranks()
        started = time.perf_counter()
        report = AddReport(processes=ranks.world)
        lock = write_lock(self.root) if ranks.rank == 0 else contextlib.nullcontext()
        with lock:
            commit = read_commit(self.root)
            snapshot = Snapshot(self.root, commit, self.manifest.dim)
            writer = _GroupWriter(self, commit, ranks, batch_size, report)
            seen: set[str] = set()
            replaced: list[int] = []
            with ranks.together("indexing"):
                bar = tqdm(pages(report.skipped), desc="indexing", unit="page",
                           disable=not progress or ranks.rank != 0)
                for page in bar:
                    seen.add(page.id)
                    ref = snapshot.ref_of_id(page.id)
                    if ref is not None and snapshot.record(ref).sha256 == page.sha256:
                        report.unchanged += 1
                        continue
                    if ref is not None:
                        replaced.append(ref)
                        report.changed += 1
                    else:
                        report.added += 1
                    writer.add(PageRecord(page.id, page.source, page.page, page.sha256, -1, dict(page.metadata)),
                               page.image)
                writer.finish()
            report.encoded, report.reused = ranks.total(report.encoded), ranks.total(report.reused)
            removed = replaced
            if delete_missing:
                removed = removed + [ref for ref, record in snapshot.records() if record.id not in seen]
            report.removed = len(removed) - report.changed
            if ranks.rank == 0:
                self._commit(commit, snapshot, writer.entries(), removed, report.skipped.as_dict())
            ranks.barrier()
        report.seconds = time.perf_counter() - started
        return report

    def _commit(self, commit: CommitRecord, snapshot: Snapshot, new: list[ShardEntry], removed: Iterable[int],
                skipped: dict[str, Any]) -> None:
        deleted = {name: list(rows) for name, rows in commit.deleted.items()}
        for ref in removed:
            name = snapshot.shards[ref >> 32].name
            deleted.setdefault(name, []).append(ref & 0xFFFFFFFF)
        deleted = {name: sorted(set(rows)) for name, rows in deleted.items()}
        shards = [*commit.shards, *new]
        fresh = CommitRecord(generation=commit.generation + 1, shards=shards, deleted=deleted, skipped=skipped)
        write_commit(self.root, fresh)
        self._collect_garbage(fresh)
        self.backend.sync(Snapshot(self.root, fresh, self.manifest.dim))

    def _collect_garbage(self, commit: CommitRecord) -> None:
        """Delete shards that no commit names (left by an interrupted run whose pages are no longer wanted)."""
        live = {entry.name for entry in commit.shards}
        for name in stored_shard_names(self.root) - live:
            remove_shard_files(self.root, name)

    # ---- removing and compacting ---------------------------------------------------------------------

    def remove(self, ids: Iterable[str]) -> int:
        """Remove pages by id; an unknown id is an error (nothing is removed then)."""
        with write_lock(self.root):
            commit = read_commit(self.root)
            snapshot = Snapshot(self.root, commit, self.manifest.dim)
            refs, unknown = [], []
            for page_id in dict.fromkeys(ids):
                ref = snapshot.ref_of_id(page_id)
                (unknown.append(page_id) if ref is None else refs.append(ref))
            if unknown:
                raise SearchIndexError(f"{self.root}: no page with id {unknown[0]!r}"
                                       + (f" (and {len(unknown) - 1} more unknown ids)" if len(unknown) > 1 else ""))
            if refs:
                self._commit(commit, snapshot, [], refs, commit.skipped)
            return len(refs)

    def compact(self) -> int:
        """Rewrite shards with deleted pages so their space is reclaimed; returns the bytes freed."""
        with write_lock(self.root):
            commit = read_commit(self.root)
            if not commit.deleted:
                return 0
            before = sum(entry.bytes for entry in commit.shards)
            shards: list[ShardEntry] = []
            for entry in commit.shards:
                rows = set(commit.deleted.get(entry.name, []))
                if not rows:
                    shards.append(entry)
                    continue
                shard = Shard(self.root, entry.name)
                keep = [row for row in range(len(shard)) if row not in rows]
                if keep:
                    records = [shard.records[row] for row in keep]
                    vectors = [shard.vectors(row, row + 1) for row in keep]
                    name = _shard_name(self.manifest, records)
                    if not shard_exists(self.root, name):
                        shards.append(write_shard(self.root, name, records, vectors, self.manifest.dtype))
                    else:
                        shards.append(_entry_of(self.root, name))
                shard.close()
            fresh = CommitRecord(generation=commit.generation + 1, shards=shards, deleted={}, skipped=commit.skipped)
            write_commit(self.root, fresh)
            self._collect_garbage(fresh)
            self.backend.sync(Snapshot(self.root, fresh, self.manifest.dim))
            return before - sum(entry.bytes for entry in shards)

    # ---- searching -----------------------------------------------------------------------------------

    def search(
        self,
        queries: str | Sequence[str] | Sequence[torch.Tensor],
        k: int = 10,
        *,
        approximate: bool = False,
        candidates: int | None = None,
        batch_size: int = 16,
    ) -> list[list[SearchResult]]:
        """Per query, its top-k pages, best first. Queries are strings, or query embeddings (L, D) of this model."""
        if isinstance(queries, str):
            queries = [queries]
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise SearchIndexError(f"k must be a positive integer, got {k!r}")
        if candidates is not None and candidates < k:
            raise SearchIndexError(f"candidates ({candidates}) must be at least k ({k})")
        if not queries:
            raise SearchIndexError("no query given")
        if approximate and not self.backend.has_approximate:
            raise SearchIndexError(f"{self.root}: this index has no approximate stage; create it with "
                                   "--approximate METHOD, or search exactly")
        if all(isinstance(q, str) for q in queries):
            for position, query in enumerate(queries):
                if not query.strip():
                    raise SearchIndexError(f"query {position} is empty")
            embedded, mask = pad_embeddings(self.model.embed_queries(list(queries), batch_size=batch_size))
            vectors = [row[m] for row, m in zip(embedded, mask, strict=True)]
        elif all(isinstance(q, torch.Tensor) and q.dim() == 2 for q in queries):
            vectors = [row[m].float() for row, m in zip(*pad_embeddings(queries), strict=True)]
        else:
            raise SearchIndexError("queries must all be strings or all be embedding tensors")
        if any(v.shape[-1] != self.manifest.dim for v in vectors):
            raise SearchIndexError(f"query vectors must have dim {self.manifest.dim}")
        snapshot = self.snapshot()
        if len(snapshot) == 0:
            return [[] for _ in vectors]
        device = self._model.device if self._model is not None and self._model.device.type == "cuda" else None
        hits = self.backend.search(snapshot, vectors, k, approximate=approximate, candidates=candidates,
                                   device=device)
        results = []
        for row in hits:
            found = []
            for rank, (key, score) in enumerate(row, start=1):
                record = snapshot.record(snapshot.ref_of(key))
                found.append(SearchResult(rank, score, record.id, record.source, record.page, record.metadata))
            results.append(found)
        return results


def _shard_name(manifest: Manifest, records: Sequence[PageRecord]) -> str:
    digest = hashlib.sha256()
    settings = {"model": manifest.model.fingerprint, "processor": manifest.model.processor, "dtype": manifest.dtype,
                "pooling": manifest.pooling.model_dump(), "dpi": manifest.dpi}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for record in records:
        digest.update(f"{record.id}\0{record.sha256}\n".encode())
    return digest.hexdigest()[:24]


def _entry_of(root: Path, name: str) -> ShardEntry:
    from vlzoo_core.index.store import SHARDS_DIR, TABLE_SUFFIX, VECTORS_SUFFIX

    shard = Shard(root, name)
    size = sum((root / SHARDS_DIR / f"{name}{suffix}").stat().st_size for suffix in (VECTORS_SUFFIX, TABLE_SUFFIX))
    entry = ShardEntry(name=name, pages=len(shard), vectors=int(shard.offsets[-1]), bytes=size)
    shard.close()
    return entry


class _GroupWriter:
    """Collects new pages into shard groups and writes this rank's groups (see the module docstring)."""

    def __init__(self, index: Index, commit: CommitRecord, ranks: _Ranks, batch_size: int, report: AddReport) -> None:
        self.index, self.ranks, self.report = index, ranks, report
        self.manifest = index.manifest
        self.batch_size = batch_size
        self.window = batch_size * BUCKET_BATCHES
        committed = {entry.name for entry in commit.shards}
        self.orphan_shards = {name: Shard(index.root, name)
                              for name in sorted(stored_shard_names(index.root) - committed)}
        self.orphans = {(record.id, record.sha256): (name, row) for name, shard in self.orphan_shards.items()
                        for row, record in enumerate(shard.records)}
        self.group: list[PageRecord] = []
        self.vectors: list[torch.Tensor | None] = []
        self.pending: list[tuple[int, Image.Image]] = []
        self.names: list[str] = []
        self._encoder: PageEncoder | None = None

    @property
    def mine(self) -> bool:
        return len(self.names) % self.ranks.world == self.ranks.rank

    def add(self, record: PageRecord, image: Image.Image) -> None:
        position = len(self.group)
        self.group.append(record)
        self.vectors.append(None)
        if self.mine:
            orphan = self.orphans.get((record.id, record.sha256))
            if orphan is not None:
                name, row = orphan
                self.vectors[position] = self.orphan_shards[name].vectors(row, row + 1)
                self.report.reused += 1
            else:
                self.pending.append((position, image))
                if len(self.pending) == self.window:
                    self._encode_pending()
        if len(self.group) == self.manifest.shard_size:
            self._close_group()

    def _encode_pending(self) -> None:
        if not self.pending:
            return
        if self._encoder is None:
            self._encoder = PageEncoder(self.index.model, self.manifest.pooling, self.batch_size)
        positions = [p for p, _ in self.pending]
        encoded = self._encoder.encode([image for _, image in self.pending])
        for position, vectors in zip(positions, encoded, strict=True):
            self.vectors[position] = vectors
        self.report.encoded += len(positions)
        self.pending = []

    def _close_group(self) -> None:
        name = _shard_name(self.manifest, self.group)
        if self.mine and not shard_exists(self.index.root, name):
            self._encode_pending()
            write_shard(self.index.root, name, self.group, self.vectors, self.manifest.dtype)  # type: ignore[arg-type]
        self.pending = []
        self.names.append(name)
        self.group, self.vectors = [], []

    def finish(self) -> None:
        if self.group:
            self._close_group()

    def entries(self) -> list[ShardEntry]:
        """The new shards, in group order, once every rank has written its own (rank 0 only)."""
        missing = [name for name in self.names if not shard_exists(self.index.root, name)]
        if missing:
            raise SearchIndexError(f"{self.index.root}: shard {missing[0]} was not written; nothing was committed")
        return [_entry_of(self.index.root, name) for name in self.names]
