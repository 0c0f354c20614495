"""Candidate generation, the first stage of approximate late-interaction search (the index reranks exactly).

Two generators, both on faiss inner-product indexes:

* `MuveraCandidates`: MUVERA fixed-dimensional encodings (Dhulipala et al. 2024). Each of `reps` SimHash
  partitions (`k_sim` random hyperplanes, 2**k_sim buckets) sends every vector to a bucket, optionally after
  an inner random +-1 projection to `d_proj` dimensions. A page's encoding is, per bucket, the mean of its
  vectors there (an empty bucket takes the page vector nearest to it in Hamming distance); a query's is
  the per-bucket sum. dot(query FDE, page FDE) approximates MaxSim, so one flat inner-product search over
  page FDEs ranks the pages.
* `TokenCandidates`: ColBERT-style end-to-end retrieval. An IVF (4-bit PQ codes or floats) over every page token,
  each token carrying its page's row as faiss id. Each query token fetches its `token_k` nearest tokens;
  a page scores the sum over query tokens of its best retrieved similarity, a query token that did not
  reach the page counting its smallest retrieved similarity (XTR's missing-similarity imputation).

State is plain tensors (no pickle, no faiss serialisation), so it can be saved with safetensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import faiss
import numpy as np
import torch

from vlzoo_core.errors import ConfigError, SearchIndexError
from vlzoo_core.index.configs import CandidateConfig

_ENCODE_BUDGET = 1 << 24  # floats in the largest intermediate of one MUVERA encoding batch
_ADD_CHUNK = 1 << 18  # token vectors converted to float32 and added to faiss at a time
_TRAIN_PER_LIST = 64  # IVF training sample: this many tokens per inverted list (at most)
_MIN_PER_LIST = 39  # fewer tokens per list than this and k-means is unreliable; nlist is capped to keep it
_PQ_BITS = 4  # 16 centroids per sub-quantizer: what faiss's fast-scan kernels search


class CandidateGenerator(ABC):
    """Proposes, per query, the pages most likely to have the highest MaxSim."""

    name: ClassVar[str]

    @abstractmethod
    def add(self, rows: torch.Tensor, documents: Sequence[torch.Tensor]) -> None:
        """Add pages: int64 row ids (n,) and each page's (L_i, D) float unit vectors."""

    @abstractmethod
    def remove(self, rows: torch.Tensor) -> None:
        """Drop these pages (rows not present are ignored)."""

    @abstractmethod
    def candidates(self, queries: Sequence[torch.Tensor], n: int) -> torch.Tensor:
        """(n_queries, n) int64 row ids of the best candidates per query, -1 padded when fewer exist."""

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """Everything needed to rebuild this generator, as tensors."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, torch.Tensor], config: CandidateConfig) -> CandidateGenerator:
        """The generator `state()` described, with `config` supplying the search-time parameters."""


# ---- shared helpers -----------------------------------------------------------------------------------------


def _check_add(rows: torch.Tensor, documents: Sequence[torch.Tensor], dim: int, present: torch.Tensor) -> None:
    if rows.dtype != torch.int64 or rows.dim() != 1:
        raise SearchIndexError(f"rows must be a 1-D int64 tensor, got {rows.dtype} of shape {tuple(rows.shape)}")
    if rows.numel() != len(documents):
        raise SearchIndexError(f"{rows.numel()} rows for {len(documents)} documents")
    if rows.numel() and int(rows.min()) < 0:
        raise SearchIndexError("row ids must be >= 0 (-1 marks padding in candidates)")
    if rows.unique().numel() != rows.numel() or torch.isin(rows, present).any():
        raise SearchIndexError("a row id is added twice")
    for index, doc in enumerate(documents):
        if doc.dim() != 2 or doc.shape[1] != dim or not doc.is_floating_point():
            raise SearchIndexError(f"document {index}: expected float (L, {dim}), got {doc.dtype} {tuple(doc.shape)}")


def _check_queries(queries: Sequence[torch.Tensor], n: int, dim: int) -> None:
    if n < 1:
        raise SearchIndexError(f"n must be >= 1, got {n}")
    for index, query in enumerate(queries):
        if query.dim() != 2 or query.shape[1] != dim:
            raise SearchIndexError(f"query {index}: expected (L, {dim}), got {tuple(query.shape)}")


def _pad(vectors: Sequence[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, D) float32 and its (B, L) mask."""
    length = max((v.shape[0] for v in vectors), default=0)
    padded = torch.zeros(len(vectors), length, dim)
    mask = torch.zeros(len(vectors), length, dtype=torch.bool)
    for i, v in enumerate(vectors):
        padded[i, : v.shape[0]] = v
        mask[i, : v.shape[0]] = True
    return padded, mask


def _faiss_labels(labels: np.ndarray, n: int) -> torch.Tensor:
    """faiss result ids as an (nq, n) int64 tensor, -1 padded on the right."""
    out = torch.full((labels.shape[0], n), -1, dtype=torch.int64)
    out[:, : labels.shape[1]] = torch.from_numpy(labels)
    return out


def _require(state: dict[str, torch.Tensor], *keys: str) -> None:
    missing = [key for key in keys if key not in state]
    if missing:
        raise SearchIndexError(f"candidate state lacks {', '.join(missing)}")


# ---- MUVERA -------------------------------------------------------------------------------------------------


class MuveraCandidates(CandidateGenerator):
    """MUVERA fixed-dimensional encodings in a faiss flat inner-product index (ids = page rows)."""

    name: ClassVar[str] = "muvera"

    def __init__(self, config: CandidateConfig, dim: int, planes: torch.Tensor | None = None,
                 projections: torch.Tensor | None = None) -> None:
        if dim < 1:
            raise ConfigError(f"dim must be >= 1, got {dim}")
        self.config, self.dim = config, dim
        generator = torch.Generator().manual_seed(config.seed)
        if planes is None:
            planes = torch.randn(config.reps, dim, config.k_sim, generator=generator)
            if config.d_proj is not None:
                signs = torch.randint(0, 2, (config.reps, dim, config.d_proj), generator=generator) * 2 - 1
                projections = signs.float() / math.sqrt(config.d_proj)
        self.planes, self.projections = planes, projections
        self.buckets = 1 << config.k_sim
        self.width = dim if projections is None else projections.shape[-1]
        self.fde_dim = config.reps * self.buckets * self.width
        self.index = faiss.IndexIDMap(faiss.IndexFlatIP(self.fde_dim))

    def rows(self) -> torch.Tensor:
        """Row ids of the pages present, in storage order."""
        return torch.from_numpy(faiss.vector_to_array(self.index.id_map).astype(np.int64))

    def encode(self, vectors: Sequence[torch.Tensor], query: bool) -> torch.Tensor:
        """(n, fde_dim) float32 FDEs: per-bucket sums for queries, per-bucket means (empty ones filled) for pages."""
        reps, k_sim = self.planes.shape[0], self.planes.shape[-1]
        planes = self.planes.permute(1, 0, 2).reshape(self.dim, reps * k_sim)
        projections = None if self.projections is None else self.projections.permute(1, 0, 2).reshape(self.dim, -1)
        bit_values = 1 << torch.arange(k_sim)
        hamming = torch.tensor([[(a ^ b).bit_count() for b in range(self.buckets)] for a in range(self.buckets)])
        longest = max((v.shape[0] for v in vectors), default=1)
        batch = max(1, _ENCODE_BUDGET // (max(longest, 1) * reps * max(self.width, self.buckets)))
        out = torch.empty(len(vectors), self.fde_dim)
        for start in range(0, len(vectors), batch):
            x, mask = _pad(vectors[start : start + batch], self.dim)
            size, length = mask.shape
            flat = x.view(-1, self.dim)
            bucket = (((flat @ planes).view(size, length, reps, k_sim) > 0) * bit_values).sum(-1)  # (B, L, R)
            if projections is None:
                projected = x[:, :, None, :].expand(size, length, reps, self.dim)
            else:
                projected = (flat @ projections).view(size, length, reps, self.width)
            cells = size * reps * self.buckets  # one more slot at the end collects the padding
            slot = (torch.arange(size)[:, None, None] * reps + torch.arange(reps)) * self.buckets + bucket
            slot = slot.masked_fill(~mask[:, :, None], cells).flatten()
            sums = torch.zeros(cells + 1, self.width).index_add_(0, slot, projected.reshape(-1, self.width))[:-1]
            if not query and length:  # (a batch of pages without vectors encodes to zeros)
                counts = torch.zeros(cells + 1).index_add_(0, slot, torch.ones(slot.shape[0]))[:-1]
                sums = (sums / counts.clamp(min=1)[:, None]).view(size, reps, self.buckets, self.width)
                # fill_empty_partitions: the first page vector at the least Hamming distance from the empty bucket
                position = torch.arange(length)[None, :, None].expand(size, length, reps).flatten()
                first = torch.full((cells + 1,), length).scatter_reduce(0, slot, position, "amin")[:-1]
                first = first.view(size, reps, 1, self.buckets)
                key = (hamming * (length + 1) + first).masked_fill(first == length, (k_sim + 1) * (length + 1))
                nearest = (key.amin(-1) % (length + 1)).clamp(max=length - 1)  # (B, R, bucket)
                fill = projected[torch.arange(size)[:, None, None], nearest, torch.arange(reps)[:, None]]
                sums = torch.where((counts == 0).view(size, reps, self.buckets, 1), fill, sums)
            out[start : start + size] = sums.reshape(size, -1)
        return out

    def add(self, rows: torch.Tensor, documents: Sequence[torch.Tensor]) -> None:
        _check_add(rows, documents, self.dim, self.rows())
        if rows.numel():
            fde = self.encode(documents, query=False)
            self.index.add_with_ids(fde.numpy(), rows.numpy())

    def remove(self, rows: torch.Tensor) -> None:
        if rows.numel():
            self.index.remove_ids(rows.to(torch.int64).numpy())

    def candidates(self, queries: Sequence[torch.Tensor], n: int) -> torch.Tensor:
        _check_queries(queries, n, self.dim)
        if not len(queries) or not self.index.ntotal:
            return torch.full((len(queries), n), -1, dtype=torch.int64)
        fde = self.encode(queries, query=True)
        _, labels = self.index.search(fde.numpy(), min(n, self.index.ntotal))
        return _faiss_labels(labels, n)

    def state(self) -> dict[str, torch.Tensor]:
        flat = faiss.downcast_index(self.index.index)
        fde = torch.from_numpy(faiss.vector_to_array(flat.codes).view(np.float32).reshape(-1, self.fde_dim))
        state = {"planes": self.planes, "fde": fde, "rows": self.rows()}
        if self.projections is not None:
            state["projections"] = self.projections
        return state

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config: CandidateConfig) -> MuveraCandidates:
        _require(state, "planes", "fde", "rows")
        planes, projections = state["planes"], state.get("projections")
        width = None if projections is None else projections.shape[-1]
        if tuple(planes.shape[::2]) != (config.reps, config.k_sim) or width != config.d_proj:
            raise SearchIndexError(
                f"MUVERA state (reps={planes.shape[0]}, k_sim={planes.shape[-1]}, d_proj={width}) does not match "
                f"the config (reps={config.reps}, k_sim={config.k_sim}, d_proj={config.d_proj})")
        generator = cls(config, planes.shape[1], planes.float(), None if projections is None else projections.float())
        fde, rows = state["fde"], state["rows"]
        if fde.shape != (rows.shape[0], generator.fde_dim):
            raise SearchIndexError(f"MUVERA state: fde {tuple(fde.shape)} for {rows.shape[0]} rows "
                                   f"of width {generator.fde_dim}")
        if rows.numel():
            generator.index.add_with_ids(fde.float().contiguous().numpy(), rows.to(torch.int64).numpy())
        return generator


# ---- token-level IVF ----------------------------------------------------------------------------------------


class TokenCandidates(CandidateGenerator):
    """An IVF over every page token, faiss ids = page rows; pages ranked by partial (imputed) MaxSim.

    Tokens are stored as 4-bit PQ codes in faiss's fast-scan layout (state holds them unpacked, so it
    does not depend on that layout) or, with `pq_m=None`, as float32. The IVF is trained, deterministically
    on a seeded sample, on the tokens present at the first `candidates` or `state` call; until then added
    tokens wait in float16. Later pages are encoded with the trained lists and codebooks.
    """

    name: ClassVar[str] = "tokens"

    def __init__(self, config: CandidateConfig, dim: int) -> None:
        if dim < 1:
            raise ConfigError(f"dim must be >= 1, got {dim}")
        if config.pq_m is not None and dim % config.pq_m:
            raise ConfigError(f"pq_m={config.pq_m} does not divide the vector size {dim}")
        self.config, self.dim = config, dim
        self.index: faiss.IndexIVF | None = None
        self.pages = torch.empty(0, dtype=torch.int64)  # sorted row ids present
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (token rows, float16 tokens) until training

    def _new_index(self, nlist: int) -> faiss.IndexIVF:
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.config.pq_m is None:
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQFastScan(quantizer, self.dim, nlist, self.config.pq_m, _PQ_BITS,
                                             faiss.METRIC_INNER_PRODUCT)
            index.pq.cp.seed, index.pq.cp.min_points_per_centroid = self.config.seed, 1
        index.cp.seed, index.cp.min_points_per_centroid = self.config.seed, 1
        return index

    def _train(self) -> None:
        tokens = sum(chunk.shape[0] for _, chunk in self.pending)
        nlist = max(1, min(self.config.nlist, tokens // _MIN_PER_LIST))
        generator = torch.Generator().manual_seed(self.config.seed)
        chosen = torch.randperm(tokens, generator=generator)[: _TRAIN_PER_LIST * nlist].sort().values
        offsets = torch.tensor([0] + [chunk.shape[0] for _, chunk in self.pending]).cumsum(0)
        which = torch.bucketize(chosen, offsets[1:], right=True)
        train = torch.cat([self.pending[c][1][chosen[which == c] - offsets[c]] for c in which.unique().tolist()])
        train = train.float().repeat(math.ceil((1 << _PQ_BITS) / train.shape[0]), 1)  # PQ needs >= 16 points
        self.index = self._new_index(nlist)
        self.index.train(train.numpy())
        pending, self.pending = self.pending, []
        for rows, chunk in pending:
            self._encode(rows, chunk)

    def _encode(self, token_rows: torch.Tensor, tokens: torch.Tensor) -> None:
        assert self.index is not None
        for start in range(0, tokens.shape[0], _ADD_CHUNK):
            block = tokens[start : start + _ADD_CHUNK].float().contiguous()
            self.index.add_with_ids(block.numpy(), token_rows[start : start + _ADD_CHUNK].numpy())

    def _trained(self) -> faiss.IndexIVF | None:
        if any(chunk.shape[0] for _, chunk in self.pending):
            self._train()
        return self.index

    def add(self, rows: torch.Tensor, documents: Sequence[torch.Tensor]) -> None:
        _check_add(rows, documents, self.dim, self.pages)
        if not rows.numel():
            return
        lengths = torch.tensor([doc.shape[0] for doc in documents])
        token_rows = torch.repeat_interleave(rows, lengths)
        self.pages = torch.cat([self.pages, rows]).sort().values
        if self.index is None:
            if token_rows.numel():
                self.pending.append((token_rows, torch.cat([doc.to(torch.float16) for doc in documents])))
        else:
            self._encode(token_rows, torch.cat([doc.float() for doc in documents]))

    def remove(self, rows: torch.Tensor) -> None:
        rows = rows.to(torch.int64)
        self.pages = self.pages[~torch.isin(self.pages, rows)]
        self.pending = [(r[keep], v[keep]) for r, v in self.pending if (keep := ~torch.isin(r, rows)).any()]
        if self.index is not None and rows.numel():
            self.index.remove_ids(rows.numpy())

    def candidates(self, queries: Sequence[torch.Tensor], n: int) -> torch.Tensor:
        _check_queries(queries, n, self.dim)
        index = self._trained()
        out = torch.full((len(queries), n), -1, dtype=torch.int64)
        if index is None or not index.ntotal:  # no tokens to search: any page is as good as another
            out[:, : min(n, self.pages.numel())] = self.pages[:n]
            return out
        if not len(queries):
            return out
        lengths = [q.shape[0] for q in queries]
        flat = torch.cat([q.float() for q in queries]).contiguous()
        index.nprobe = min(self.config.nprobe, index.nlist)
        sims, labels = index.search(flat.numpy(), self.config.token_k)
        sims, labels = torch.from_numpy(sims), torch.from_numpy(labels)
        for i, (sim, label) in enumerate(zip(sims.split(lengths), labels.split(lengths))):
            out[i] = self._rank(sim, label, n)
        return out

    def _rank(self, sim: torch.Tensor, label: torch.Tensor, n: int) -> torch.Tensor:
        """(n,) rows for one query from its tokens' (Lq, k) hits: partial MaxSim, misses imputed."""
        found = label >= 0
        length = label.shape[0]
        imputed = torch.where(found, sim, torch.inf).amin(1)
        imputed = torch.where(imputed.isinf(), 0.0, imputed)  # smallest hit per token (0 when it found none)
        hit_rows, slot = torch.unique(label[found], return_inverse=True)
        token = torch.arange(length)[:, None].expand_as(label)[found]
        best = imputed.repeat(hit_rows.numel()).scatter_reduce(0, slot * length + token, sim[found], "amax")
        order = best.view(hit_rows.numel(), length).sum(1).argsort(descending=True, stable=True)[:n]
        ranked = hit_rows[order]
        if ranked.numel() < n:  # pages no query token reached, all with the same (lowest) imputed score
            rest = self.pages[~torch.isin(self.pages, hit_rows)][: n - ranked.numel()]
            ranked = torch.cat([ranked, rest])
        return torch.cat([ranked, ranked.new_full((n - ranked.numel(),), -1)])

    def state(self) -> dict[str, torch.Tensor]:
        index = self._trained()
        state = {"dim": torch.tensor([self.dim]), "pages": self.pages}
        if index is None:
            return state
        invlists = faiss.downcast_InvertedLists(index.invlists)
        packer = getattr(invlists, "packer", None)  # fast-scan lists hold blocks of interleaved codes
        sizes = torch.tensor([invlists.list_size(i) for i in range(index.nlist)], dtype=torch.int64)
        codes, ids = [np.zeros((0, index.code_size), np.uint8)], [np.zeros(0, np.int64)]
        for i in torch.nonzero(sizes).flatten().tolist():
            size = int(sizes[i])
            ids.append(faiss.rev_swig_ptr(invlists.get_ids(i), size).copy())
            if packer is None:
                codes.append(faiss.rev_swig_ptr(invlists.get_codes(i), size * index.code_size).reshape(size, -1).copy())
            else:
                packed = faiss.rev_swig_ptr(invlists.get_codes(i), math.ceil(size / packer.nvec) * packer.block_size)
                codes.append(_unpack(packer, packed, size))
        state["list_sizes"] = sizes
        state["centroids"] = torch.from_numpy(index.quantizer.reconstruct_n(0, index.nlist))
        state["codes"] = torch.from_numpy(np.concatenate(codes))
        state["ids"] = torch.from_numpy(np.concatenate(ids))
        if self.config.pq_m is not None:
            pq = index.pq
            state["pq_centroids"] = torch.from_numpy(faiss.vector_to_array(pq.centroids)).view(pq.M, pq.ksub, pq.dsub)
        return state

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config: CandidateConfig) -> TokenCandidates:
        _require(state, "dim", "pages")
        generator = cls(config, int(state["dim"][0]))
        generator.pages = state["pages"].to(torch.int64).sort().values
        if "centroids" not in state:
            return generator
        _require(state, "list_sizes", "codes", "ids")
        centroids, sizes = state["centroids"].float().contiguous(), state["list_sizes"].to(torch.int64)
        pq_centroids = state.get("pq_centroids")
        stored = None if pq_centroids is None else tuple(pq_centroids.shape)
        expected = None if config.pq_m is None else (config.pq_m, 1 << _PQ_BITS, generator.dim // config.pq_m)
        if stored != expected:
            raise SearchIndexError(f"token state PQ codebooks {stored} do not match the config "
                                   f"(pq_m={config.pq_m}, {_PQ_BITS} bits)")
        index = generator._new_index(centroids.shape[0])
        index.quantizer.add(centroids.numpy())
        if pq_centroids is not None:
            faiss.copy_array_to_vector(pq_centroids.float().flatten().numpy(), index.pq.centroids)
        index.is_trained = True
        codes, ids = state["codes"].numpy(), state["ids"].to(torch.int64).numpy()
        if (codes.ndim != 2 or codes.shape != (ids.shape[0], index.code_size) or sizes.numel() != index.nlist
                or int(sizes.sum()) != ids.shape[0] or int(sizes.min()) < 0):
            raise SearchIndexError("token state: list sizes, codes and ids disagree")
        invlists = faiss.downcast_InvertedLists(index.invlists)
        packer = getattr(invlists, "packer", None)
        offsets = [0, *sizes.cumsum(0).tolist()]
        for i in torch.nonzero(sizes).flatten().tolist():
            part_ids = np.ascontiguousarray(ids[offsets[i] : offsets[i + 1]])
            part = np.ascontiguousarray(codes[offsets[i] : offsets[i + 1]])
            if packer is not None:  # an empty block list takes whole packed blocks
                part = _pack(packer, part)
            invlists.add_entries(i, part_ids.shape[0], faiss.swig_ptr(part_ids), faiss.swig_ptr(part))
        index.ntotal = ids.shape[0]
        generator.index = index
        return generator


def _unpack(packer: faiss.CodePacker, packed: np.ndarray, count: int) -> np.ndarray:
    """The first `count` (count, code_size) codes of fast-scan blocks."""
    blocks = math.ceil(count / packer.nvec)
    codes = np.empty((blocks * packer.nvec, packer.code_size), np.uint8)
    for b in range(blocks):
        packer.unpack_all(faiss.swig_ptr(packed[b * packer.block_size :]), faiss.swig_ptr(codes[b * packer.nvec :]))
    return codes[:count]


def _pack(packer: faiss.CodePacker, codes: np.ndarray) -> np.ndarray:
    """Fast-scan blocks holding (n, code_size) codes, the last block padded with zero codes."""
    blocks = math.ceil(codes.shape[0] / packer.nvec)
    padded = np.zeros((blocks * packer.nvec, packer.code_size), np.uint8)
    padded[: codes.shape[0]] = codes
    packed = np.zeros(blocks * packer.block_size, np.uint8)
    for b in range(blocks):
        packer.pack_all(faiss.swig_ptr(padded[b * packer.nvec :]), faiss.swig_ptr(packed[b * packer.block_size :]))
    return packed


GENERATORS: dict[str, type[CandidateGenerator]] = {cls.name: cls for cls in (MuveraCandidates, TokenCandidates)}


def make_candidate_generator(config: CandidateConfig, dim: int) -> CandidateGenerator:
    """An empty generator of `config.method` for `dim`-sized vectors."""
    return GENERATORS[config.method](config, dim)


def restore_candidate_generator(state: dict[str, torch.Tensor], config: CandidateConfig) -> CandidateGenerator:
    """The generator of `config.method` rebuilt from its `state()`."""
    return GENERATORS[config.method].from_state(state, config)
