"""Exact MaxSim search over memory-mapped shards, and the exact rerank of approximate candidates.

Scores come from the core's `maxsim_block`, one GEMM per block of PAGES_PER_BLOCK pages: a block is read
from the map and converted to float32 right before its GEMM, while it is still in cache, which is what
makes a single query run at matmul speed (converting a whole shard first made it memory-bound). The
running top-k is merged after every chunk of blocks, so memory is bounded by the block and chunk sizes,
not by the corpus. Ties keep the earlier page (shard order, then row order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vlzoo_core.index.store import Shard
from vlzoo_core.model.scoring import maxsim_block, pad_embeddings

PAGES_PER_BLOCK = 32  # 1 MiB of float32 vectors at 256 x 128: the GEMM reads it from cache
BLOCKS_PER_CHUNK = 16  # top-k merge interval
QUERY_GROUP = 16  # queries scored together; more are split into groups, each reading the corpus once


@dataclass(frozen=True)
class LiveShard:
    """A committed shard and the mask of its rows that are not deleted."""

    shard: Shard
    live: torch.Tensor  # (n,) bool


def prepare_queries(queries: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nq, Lq, D) float32 queries and their (nq, Lq) mask, from padded or per-query (L_i, D) tensors."""
    padded, mask = pad_embeddings(queries)
    return padded.float(), mask


def padded_pages(flat: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(n, Lmax, D) pages from flat (T, D) vectors, each page padded with copies of its first vector."""
    n = lengths.numel()
    longest = int(lengths.max())
    if int(lengths.min()) == longest:
        return flat.view(n, longest, flat.shape[-1])
    starts = torch.zeros(n, dtype=torch.int64)
    starts[1:] = torch.cumsum(lengths, 0)[:-1]
    position = torch.arange(longest)[None, :]
    index = starts[:, None] + torch.where(position < lengths[:, None], position, 0)
    return flat[index]


def _merge(best_scores: torch.Tensor, best_refs: torch.Tensor, scores: torch.Tensor, refs: torch.Tensor,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    all_scores = torch.cat([best_scores, scores], dim=1)
    all_refs = torch.cat([best_refs, refs.expand(scores.shape[0], -1)], dim=1)
    order = torch.sort(all_scores, dim=1, descending=True, stable=True).indices[:, :k]
    return all_scores.gather(1, order), all_refs.gather(1, order)


def exact_search(
    shards: Sequence[LiveShard],
    queries: Sequence[torch.Tensor] | torch.Tensor,
    k: int,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores (nq, k'), refs (nq, k')) over all live pages; a ref is shard_index << 32 | row.

    k' = min(k, live pages). Scores are float32 MaxSim of the stored (dequantized) vectors.
    """
    q, q_mask = prepare_queries(queries)
    if q.shape[0] > QUERY_GROUP:
        parts = [exact_search(shards, q[i : i + QUERY_GROUP], k, device=device)
                 for i in range(0, q.shape[0], QUERY_GROUP)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    device = torch.device(device) if device is not None else torch.device("cpu")
    q, q_mask = q.to(device), q_mask.to(device)
    best_scores = torch.empty(q.shape[0], 0, device=device)
    best_refs = torch.empty(q.shape[0], 0, dtype=torch.int64, device=device)
    chunk = PAGES_PER_BLOCK * BLOCKS_PER_CHUNK
    for shard_index, entry in enumerate(shards):
        shard, live = entry.shard, entry.live
        if not bool(live.any()):
            continue
        lengths = shard.offsets[1:] - shard.offsets[:-1]
        for start in range(0, len(live), chunk):
            stop = min(start + chunk, len(live))
            keep = live[start:stop]
            if not bool(keep.any()):
                continue
            scores = torch.cat([
                maxsim_block(q, q_mask, padded_pages(shard.block(s, min(s + PAGES_PER_BLOCK, stop)),
                                                     lengths[s : min(s + PAGES_PER_BLOCK, stop)])
                             .to(device, torch.float32))
                for s in range(start, stop, PAGES_PER_BLOCK)
            ], dim=1)
            keep = keep.to(device)
            refs = (shard_index << 32) + torch.arange(start, stop, device=device)
            best_scores, best_refs = _merge(best_scores, best_refs, scores[:, keep], refs[keep][None, :], k)
        shard.release()
    return best_scores.cpu(), best_refs.cpu()


def rerank(
    shards: Sequence[LiveShard],
    queries: Sequence[torch.Tensor] | torch.Tensor,
    candidates: Sequence[Sequence[int]],
    k: int,
    *,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Exact MaxSim of each query with its candidate pages (refs as in `exact_search`); per query its top-k."""
    q, q_mask = prepare_queries(queries)
    device = torch.device(device) if device is not None else torch.device("cpu")
    out_scores, out_refs = [], []
    for i, refs in enumerate(candidates):
        refs = torch.as_tensor(list(refs), dtype=torch.int64)
        if refs.numel() == 0:
            out_scores.append(torch.empty(0))
            out_refs.append(refs)
            continue
        blocks, lengths = [], []
        for ref in refs.tolist():
            shard = shards[ref >> 32].shard
            row = ref & 0xFFFFFFFF
            blocks.append(shard.vectors(row, row + 1))
            lengths.append(blocks[-1].shape[0])
        docs = padded_pages(torch.cat(blocks), torch.tensor(lengths)).to(device)
        scores = maxsim_block(q[i : i + 1].to(device), q_mask[i : i + 1].to(device), docs)[0].cpu()
        order = torch.sort(scores, descending=True, stable=True).indices[:k]
        out_scores.append(scores[order])
        out_refs.append(refs[order])
    return out_scores, out_refs
