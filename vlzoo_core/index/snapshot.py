"""A read view of one commit: its live shards and pages, and the lookups between page ids, keys and rows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import torch

from vlzoo_core.index.search import LiveShard
from vlzoo_core.index.store import CommitRecord, PageRecord, Shard, live_rows


def page_key(page_id: str, sha256: str) -> int:
    """A stable non-negative int64 for one version of a page (the point id in Qdrant, the candidate row)."""
    digest = hashlib.sha256(f"{page_id}\0{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class Snapshot:
    """The pages of `commit`; a ref is `shard_index << 32 | row`, a key is `page_key(id, sha256)`."""

    def __init__(self, root: Path, commit: CommitRecord, dim: int) -> None:
        self.root, self.commit, self.dim = root, commit, dim
        self.shards = [Shard(root, entry.name) for entry in commit.shards]

    @property
    def generation(self) -> int:
        return self.commit.generation

    @cached_property
    def live_shards(self) -> list[LiveShard]:
        return [LiveShard(shard, torch.from_numpy(live_rows(shard, self.commit.deleted.get(shard.name, []))))
                for shard in self.shards]

    @cached_property
    def _by_id(self) -> dict[str, int]:
        return {record.id: ref for ref, record in self.records()}

    @cached_property
    def _by_key(self) -> dict[int, int]:
        return {key: ref for ref, key in self._key_by_ref.items()}

    @cached_property
    def _key_by_ref(self) -> dict[int, int]:
        return {ref: page_key(record.id, record.sha256) for ref, record in self.records()}

    def records(self) -> Iterator[tuple[int, PageRecord]]:
        """(ref, record) of every live page, in shard and row order."""
        for index, entry in enumerate(self.live_shards):
            live = entry.live.tolist()
            for row, record in enumerate(entry.shard.records):
                if live[row]:
                    yield (index << 32) | row, record

    def __len__(self) -> int:
        return sum(int(entry.live.sum()) for entry in self.live_shards)

    @cached_property
    def _page_tables(self) -> list[list[PageRecord]]:
        return [shard.records for shard in self.shards]

    def record(self, ref: int) -> PageRecord:
        return self._page_tables[ref >> 32][ref & 0xFFFFFFFF]

    def ref_of_id(self, page_id: str) -> int | None:
        return self._by_id.get(page_id)

    def ref_of(self, key: int) -> int:
        return self._by_key[key]

    def key_of_ref(self, ref: int) -> int:
        return self._key_by_ref[ref]

    def keys(self) -> list[int]:
        return list(self._by_key)

    def vectors_of(self, key: int) -> torch.Tensor:
        ref = self.ref_of(key)
        row = ref & 0xFFFFFFFF
        return self.shards[ref >> 32].vectors(row, row + 1)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()
