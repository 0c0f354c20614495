"""Index backends: where committed pages are searched. A backend is a registered component (kind
`index_backend`), so a plugin can add one with `register.component("index_backend", NAME, "mod:Class",
ConfigClass)`; it is built as `Backend(config, root)`.

The index folder is always the source of truth (shards, page tables, commit record). After every commit
the index calls `sync`, so a backend that keeps its own copy (Qdrant) adds the new pages and drops the
deleted ones; `sync` must be idempotent, so that a crash between the commit and the sync is repaired by
the next call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel

from vlzoo_core.index.candidates import CandidateGenerator, make_candidate_generator
from vlzoo_core.index.configs import LocalConfig
from vlzoo_core.index.search import exact_search, rerank
from vlzoo_core.index.snapshot import Snapshot
from vlzoo_core.index.store import atomic_write_text

Hits = list[list[tuple[int, float]]]
"""Per query, (page key, score) pairs, best first."""


def _hits(snapshot: Snapshot, scores: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> Hits:
    """Per query, (page key, score) pairs from the row refs and scores of `exact_search` or `rerank`."""
    return [[(snapshot.key_of_ref(r), s) for s, r in zip(row_s.tolist(), row_r.tolist(), strict=True)]
            for row_s, row_r in zip(scores, refs, strict=True)]


class IndexBackend(ABC):
    """Searches the pages of an index's commits."""

    def __init__(self, config: BaseModel, root: Path) -> None:
        self.config, self.root = config, root

    @property
    def has_approximate(self) -> bool:
        """Whether `search(..., approximate=True)` is available."""
        return True

    @abstractmethod
    def sync(self, snapshot: Snapshot) -> None:
        """Bring whatever the backend keeps in line with `snapshot` (idempotent)."""

    @abstractmethod
    def search(self, snapshot: Snapshot, queries: Sequence[torch.Tensor], k: int, *, approximate: bool = False,
               candidates: int | None = None, device: torch.device | str | None = None) -> Hits:
        """The top-k pages per query, as page keys (`Snapshot.key_of`) with their scores."""


CANDIDATES_FILE = "candidates.safetensors"
CANDIDATES_GENERATION = "candidates.json"
SYNCED_KEYS = "vlzoo.synced_keys"  # the page keys the saved generator holds


class LocalBackend(IndexBackend):
    config: LocalConfig

    def __init__(self, config: LocalConfig, root: Path) -> None:
        super().__init__(config, root)
        self._loaded: tuple[int, CandidateGenerator] | None = None  # (generation, generator) for searches

    @property
    def has_approximate(self) -> bool:
        return self.config.approximate is not None

    def sync(self, snapshot: Snapshot) -> None:
        if self.config.approximate is None:
            return
        generator, known = self._load_candidates(snapshot)
        live = set(snapshot.keys())
        gone = torch.tensor(sorted(known - live), dtype=torch.int64)
        if gone.numel():
            generator.remove(gone)
        new = sorted(live - known)
        for start in range(0, len(new), 1024):
            keys = new[start : start + 1024]
            generator.add(torch.tensor(keys, dtype=torch.int64), [snapshot.vectors_of(key) for key in keys])
        self._save_candidates(generator, live, snapshot.generation)

    def _load_candidates(self, snapshot: Snapshot) -> tuple[CandidateGenerator, set[int]]:
        """The saved candidate generator and the page keys it holds (a new, empty one if none is saved)."""
        from safetensors.torch import load_file

        path = self.root / CANDIDATES_FILE
        fresh = make_candidate_generator(self.config.approximate, snapshot.dim)
        if not path.exists():
            return fresh, set()
        state = load_file(str(path))
        keys = set(state.pop(SYNCED_KEYS).tolist())
        return type(fresh).from_state(state, self.config.approximate), keys

    def _save_candidates(self, generator: CandidateGenerator, keys: set[int], generation: int) -> None:
        import os

        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in generator.state().items()}
        state[SYNCED_KEYS] = torch.tensor(sorted(keys), dtype=torch.int64)
        tmp = self.root / f".{CANDIDATES_FILE}.{os.getpid()}.tmp"
        save_file(state, str(tmp))
        os.replace(tmp, self.root / CANDIDATES_FILE)
        atomic_write_text(self.root / CANDIDATES_GENERATION, f'{{"generation": {generation}}}\n')

    def _candidates_generation(self) -> int | None:
        import json

        path = self.root / CANDIDATES_GENERATION
        return json.loads(path.read_text())["generation"] if path.exists() else None

    def search(self, snapshot: Snapshot, queries: Sequence[torch.Tensor], k: int, *, approximate: bool = False,
               candidates: int | None = None, device: torch.device | str | None = None) -> Hits:
        if not approximate:
            return _hits(snapshot, *exact_search(snapshot.live_shards, queries, k, device=device))
        if self._loaded is None or self._loaded[0] != snapshot.generation:
            if self._candidates_generation() != snapshot.generation:
                self.sync(snapshot)
            self._loaded = (snapshot.generation, self._load_candidates(snapshot)[0])
        generator = self._loaded[1]
        n = candidates or max(10 * k, 100)
        found = generator.candidates(list(queries), n)
        refs = [[snapshot.ref_of(int(key)) for key in row.tolist() if key >= 0] for row in found]
        return _hits(snapshot, *rerank(snapshot.live_shards, queries, refs, k, device=device))
