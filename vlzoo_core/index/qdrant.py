"""The `qdrant` backend: the committed pages mirrored into a Qdrant multivector collection (MaxSim comparator).

`path` runs Qdrant in-process (the default, a folder inside the index); `url` points at a Qdrant server or a
distributed Qdrant cluster, the scale-out path for corpora that outgrow one machine. Point ids are the
pages' keys (`page_key`), so `sync` can compare the collection with the commit and repair any difference.
The API key, if the server needs one, is read from the QDRANT_API_KEY environment variable, never stored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from vlzoo_core.index.backends import Hits, IndexBackend
from vlzoo_core.index.configs import QdrantConfig
from vlzoo_core.index.snapshot import Snapshot

UPSERT_BATCH = 64


class QdrantBackend(IndexBackend):
    config: QdrantConfig

    def __init__(self, config: QdrantConfig, root: Path) -> None:
        super().__init__(config, root)
        self._client = None
        self._checked_generation: int | None = None  # the commit whose pages the collection was last checked for

    @property
    def client(self):
        if self._client is None:
            from qdrant_client import QdrantClient

            if self.config.url is not None:
                self._client = QdrantClient(url=self.config.url, api_key=os.environ.get("QDRANT_API_KEY"),
                                            timeout=self.config.timeout)
            else:
                self._client = QdrantClient(path=str(self.root / self.config.path))
        return self._client

    def _ensure_collection(self, dim: int) -> None:
        from qdrant_client import models

        if self.client.collection_exists(self.config.collection):
            return
        self.client.create_collection(
            self.config.collection,
            vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.DOT, datatype=models.Datatype.FLOAT16,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            ),
        )

    def _stored_ids(self) -> set[int]:
        ids: set[int] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(self.config.collection, limit=1024, offset=offset,
                                                with_payload=False, with_vectors=False)
            ids.update(int(p.id) for p in points)
            if offset is None:
                return ids

    def sync(self, snapshot: Snapshot) -> None:
        from qdrant_client import models

        self._ensure_collection(snapshot.dim)
        stored = self._stored_ids()
        live = set(snapshot.keys())
        gone = sorted(stored - live)
        if gone:
            self.client.delete(self.config.collection, points_selector=models.PointIdsList(points=gone))
        new = sorted(live - stored)
        for start in range(0, len(new), UPSERT_BATCH):
            points = [models.PointStruct(id=key, vector=snapshot.vectors_of(key).tolist(), payload={})
                      for key in new[start : start + UPSERT_BATCH]]
            self.client.upsert(self.config.collection, points=points)

    def search(self, snapshot: Snapshot, queries: Sequence[torch.Tensor], k: int, *, approximate: bool = False,
               candidates: int | None = None, device: torch.device | str | None = None) -> Hits:
        from qdrant_client import models

        if self._checked_generation != snapshot.generation:
            if not self.client.collection_exists(self.config.collection) or \
                    self.client.count(self.config.collection).count != len(snapshot):
                self.sync(snapshot)
            self._checked_generation = snapshot.generation
        # in-process Qdrant always searches exactly; a server uses HNSW unless told otherwise
        params = None if approximate or self.config.url is None else models.SearchParams(exact=True)
        hits = []
        for query in queries:
            response = self.client.query_points(self.config.collection, query=query.float().tolist(), limit=k,
                                                search_params=params, with_payload=False)
            hits.append([(int(p.id), float(p.score)) for p in response.points])
        return hits

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

