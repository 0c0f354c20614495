"""The index folder on disk: append-only shards, their page tables, and the commit record written last.

    INDEX/
      manifest.json              model identity, vector dim and dtype, pooling, backend (written at creation)
      COMMIT.json                the commit record: live shards, deleted rows, last run's skip report
      shards/NAME.parquet        page table of one shard: id, source, page, sha256, n_vectors, metadata (JSON)
      shards/NAME.safetensors    vectors (T, D) float16, float32 or int8, scales (T,) for int8, offsets (n + 1,)

A shard is never changed once written; it becomes visible only when a commit record names it, and the
commit record is replaced atomically (write, fsync, rename). Readers therefore see the previous commit
until the next one is complete, and shards written by a killed run are found again by the next run.
Vectors are memory-mapped, never read whole. See docs/index-format.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, ValidationError

from vlzoo_core.config import StrictModel
from vlzoo_core.errors import SearchIndexError, describe_validation_error

SHARDS_DIR = "shards"
COMMIT_FILE = "COMMIT.json"
LOCK_FILE = ".lock"
VECTORS_SUFFIX = ".safetensors"
TABLE_SUFFIX = ".parquet"
TABLE_COLUMNS = ("id", "source", "page", "sha256", "n_vectors", "metadata")


@dataclass(frozen=True)
class PageRecord:
    """One stored page: its identity, user metadata and how many vectors it has."""

    id: str
    source: str
    page: int
    sha256: str
    n_vectors: int
    metadata: Mapping[str, Any]


class ShardEntry(StrictModel):
    name: str
    pages: int = Field(ge=0)
    vectors: int = Field(ge=0)
    bytes: int = Field(ge=0)


class CommitRecord(StrictModel):
    generation: int = 0
    shards: list[ShardEntry] = Field(default_factory=list)
    deleted: dict[str, list[int]] = Field(default_factory=dict)  # shard name -> deleted rows
    skipped: dict[str, Any] = Field(default_factory=dict)  # the skip report of the last `add`


# ---- atomic writes -----------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def write_lock(root: Path) -> Iterator[None]:
    """One writer at a time per index folder (an advisory lock, released if the process dies)."""
    with open(root / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchIndexError(f"{root}: another process is writing this index") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- commit record -----------------------------------------------------------------------------------


def read_commit(root: Path) -> CommitRecord:
    path = root / COMMIT_FILE
    if not path.exists():
        return CommitRecord()
    try:
        return CommitRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise SearchIndexError(f"{path}: cannot read the commit record: {detail}") from exc


def write_commit(root: Path, commit: CommitRecord) -> None:
    atomic_write_text(root / COMMIT_FILE, commit.model_dump_json(indent=1) + "\n")


# ---- shards ------------------------------------------------------------------------------------------


def quantize(vectors: torch.Tensor, dtype: str) -> dict[str, torch.Tensor]:
    """The stored form of float32 (T, D) vectors: float16, float32, or int8 with one float32 scale per vector."""
    if dtype in ("float16", "float32"):
        return {"vectors": vectors.to(getattr(torch, dtype)).contiguous()}
    scales = vectors.abs().amax(dim=-1).clamp_min(1e-12) / 127.0
    quantized = torch.round(vectors / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return {"vectors": quantized.contiguous(), "scales": scales.to(torch.float32).contiguous()}


def write_shard(root: Path, name: str, records: Sequence[PageRecord], vectors: Sequence[torch.Tensor],
                dtype: str) -> ShardEntry:
    """Write one shard (page table first, vectors last, each renamed into place) and describe it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    if len(records) != len(vectors) or not records:
        raise ValueError("a shard needs one vector block per page, and at least one page")
    directory = root / SHARDS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    lengths = torch.tensor([v.shape[0] for v in vectors], dtype=torch.int64)
    offsets = torch.zeros(len(vectors) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    tensors = {**quantize(torch.cat([v.float() for v in vectors]), dtype), "offsets": offsets}

    table = pa.table({
        "id": [r.id for r in records],
        "source": [r.source for r in records],
        "page": pa.array([r.page for r in records], pa.int64()),
        "sha256": [r.sha256 for r in records],
        "n_vectors": pa.array(lengths.tolist(), pa.int64()),
        "metadata": [json.dumps(dict(r.metadata), sort_keys=True) for r in records],
    })
    table_path = directory / f"{name}{TABLE_SUFFIX}"
    tmp = table_path.with_name(f".{table_path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, table_path)

    vectors_path = directory / f"{name}{VECTORS_SUFFIX}"
    tmp = vectors_path.with_name(f".{vectors_path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "vlzoo-index-shard", "dtype": dtype})
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, vectors_path)
    _fsync_dir(directory)
    size = vectors_path.stat().st_size + table_path.stat().st_size
    return ShardEntry(name=name, pages=len(records), vectors=int(offsets[-1]), bytes=size)


def shard_exists(root: Path, name: str) -> bool:
    directory = root / SHARDS_DIR
    return (directory / f"{name}{VECTORS_SUFFIX}").exists() and (directory / f"{name}{TABLE_SUFFIX}").exists()


def remove_shard_files(root: Path, name: str) -> None:
    for suffix in (VECTORS_SUFFIX, TABLE_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            (root / SHARDS_DIR / f"{name}{suffix}").unlink()


def stored_shard_names(root: Path) -> set[str]:
    """Names of the complete shards in the folder, committed or not."""
    directory = root / SHARDS_DIR
    if not directory.exists():
        return set()
    return {p.name[: -len(VECTORS_SUFFIX)] for p in directory.glob(f"*{VECTORS_SUFFIX}")
            if not p.name.startswith(".") and shard_exists(root, p.name[: -len(VECTORS_SUFFIX)])}


_SAFETENSORS_DTYPES = {"F16": torch.float16, "I8": torch.int8, "F32": torch.float32, "I64": torch.int64}


class Shard:
    """A stored shard, read lazily: its page table on first use, its vectors memory-mapped."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.path = root / SHARDS_DIR / f"{name}{VECTORS_SUFFIX}"
        self._records: list[PageRecord] | None = None
        self._map: mmap.mmap | None = None
        self._tensors: dict[str, torch.Tensor] = {}

    # -- page table

    @property
    def records(self) -> list[PageRecord]:
        if self._records is None:
            import pyarrow.parquet as pq

            path = self.root / SHARDS_DIR / f"{self.name}{TABLE_SUFFIX}"
            try:
                columns = pq.read_table(path, columns=list(TABLE_COLUMNS)).to_pydict()
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
                raise SearchIndexError(f"{path}: cannot read the page table: {exc}") from exc
            self._records = [
                PageRecord(id=i, source=s, page=p, sha256=h, n_vectors=n, metadata=json.loads(m))
                for i, s, p, h, n, m in zip(*(columns[c] for c in TABLE_COLUMNS), strict=True)
            ]
        return self._records

    def __len__(self) -> int:
        return len(self.records)

    # -- vectors

    def _open(self) -> None:
        if self._map is not None:
            return
        try:
            with open(self.path, "rb") as handle:
                (header_size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(header_size))
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError, struct.error) as exc:
            raise SearchIndexError(f"{self.path}: cannot read the shard: {exc}") from exc
        start = 8 + header_size
        for key, info in header.items():
            if key == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            count = (end - begin) // torch.empty((), dtype=dtype).element_size()
            flat = torch.frombuffer(self._map, dtype=dtype, count=count, offset=start + begin) if count else \
                torch.empty(0, dtype=dtype)
            self._tensors[key] = flat.view(info["shape"])

    @property
    def offsets(self) -> torch.Tensor:
        self._open()
        return self._tensors["offsets"]

    @property
    def dim(self) -> int:
        self._open()
        return self._tensors["vectors"].shape[-1]

    @property
    def nbytes(self) -> int:
        self._open()
        return sum(t.numel() * t.element_size() for k, t in self._tensors.items() if k != "offsets")

    def vectors(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """float32 (T, D) vectors of pages [start, stop), dequantized (a copy; the map stays untouched)."""
        stored, scales = self.stored(start, stop)
        vectors = stored.to(torch.float32)
        return vectors * scales[:, None] if scales is not None else vectors

    def stored(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stored (T, D) vectors of pages [start, stop) and, for int8 shards, their (T,) float32 scales:
        read-only views of the map, no copy (the dequantized value of a row is vectors * scale)."""
        self._open()
        offsets = self._tensors["offsets"]
        stop = len(offsets) - 1 if stop is None else stop
        lo, hi = int(offsets[start]), int(offsets[stop])
        scales = self._tensors.get("scales")
        return self._tensors["vectors"][lo:hi], (scales[lo:hi] if scales is not None else None)

    def release(self) -> None:
        """Drop the mapped pages from memory (they are read again from disk if needed)."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self._tensors.clear()
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a tensor still viewing the map keeps it alive
                self._map.close()
            self._map = None


def live_rows(shard: Shard, deleted: Sequence[int]) -> np.ndarray:
    """Boolean mask of the shard's rows that are not deleted."""
    mask = np.ones(len(shard), dtype=bool)
    if deleted:
        mask[np.asarray(deleted, dtype=np.int64)] = False
    return mask
