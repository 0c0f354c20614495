"""Exact MaxSim search over memory-mapped shards, and the exact rerank of approximate candidates.

Scores come from the core's `MaxSimScorer`, one GEMM per block of about BLOCK_TOKENS stored vectors. A
block is read from the map and converted to float32 into a reused buffer right before its GEMM, while it
is still in cache: converting a whole shard first made search memory-bound, and a fresh buffer per block
made it pay the allocator's page faults. The running top-k is merged after every chunk of blocks, so
memory is bounded by the block and chunk sizes, not by the corpus. Ties keep the earlier page (shard
order, then row order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vlzoo_core.index.store import Shard
from vlzoo_core.model.scoring import MaxSimScorer, ScratchBuffers, maxsim_block, pad_embeddings

BLOCK_TOKENS = 8192  # stored vectors per GEMM: 4 MiB of float32 at D = 128, read from cache
CHUNK_PAGES = 512  # top-k merge interval
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


def _padding_index(lengths: torch.Tensor) -> torch.Tensor | None:
    """Flat row index that lays out pages of `lengths` as (n, Lmax), each padded with its first row;
    None when every page has the same length (the flat rows are already that layout)."""
    longest = int(lengths.max())
    if int(lengths.min()) == longest:
        return None
    starts = torch.zeros_like(lengths)
    starts[1:] = torch.cumsum(lengths, 0)[:-1]
    position = torch.arange(longest)[None, :]
    return (starts[:, None] + torch.where(position < lengths[:, None], position, 0)).reshape(-1)


def padded_pages(flat: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(n, Lmax, D) pages from flat (T, D) vectors, each padded with copies of its first vector."""
    index = _padding_index(lengths)
    if index is None:
        return flat.view(lengths.numel(), -1, flat.shape[-1])
    return flat[index].view(lengths.numel(), -1, flat.shape[-1])


def _staged_pages(stored: torch.Tensor, scales: torch.Tensor | None, lengths: torch.Tensor,
                  buffers: ScratchBuffers) -> torch.Tensor:
    """Stored (T, D) vectors of pages of `lengths` as float32 (n, Lmax, D) on the buffers' device: dequantized,
    padded with duplicates, in reused buffers (valid until the next call)."""
    flat = buffers.take("search.flat", tuple(stored.shape)).copy_(stored)
    if scales is not None:
        flat.mul_(scales.to(flat.device)[:, None])
    index = _padding_index(lengths)
    if index is not None:
        flat = torch.index_select(flat, 0, index.to(flat.device),
                                  out=buffers.take("search.padded", (index.numel(), flat.shape[1])))
    return flat.view(lengths.numel(), -1, flat.shape[1])


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
    buffers = ScratchBuffers(device)
    scorer = MaxSimScorer(q.to(device), q_mask.to(device), buffers)
    best_scores = torch.empty(q.shape[0], 0, device=device)
    best_refs = torch.empty(q.shape[0], 0, dtype=torch.int64, device=device)
    for shard_index, entry in enumerate(shards):
        shard, live = entry.shard, entry.live
        if not bool(live.any()):
            continue
        stored, scales = shard.stored()
        offsets = shard.offsets.tolist()
        lengths = shard.offsets.diff()
        block = max(1, BLOCK_TOKENS // max(1, int(lengths.max())))
        chunk = block * max(1, CHUNK_PAGES // block)
        for start in range(0, len(live), chunk):
            stop = min(start + chunk, len(live))
            keep = live[start:stop]
            if not bool(keep.any()):
                continue
            scores = buffers.take("search.scores", (stop - start, q.shape[0]))
            for s in range(start, stop, block):
                e = min(s + block, stop)
                lo, hi = offsets[s], offsets[e]
                pages = _staged_pages(stored[lo:hi], None if scales is None else scales[lo:hi], lengths[s:e], buffers)
                scorer.scores(pages, out=scores[s - start : e - start])
            refs = (shard_index << 32) + torch.arange(start, stop, device=device)
            if not bool(keep.all()):
                keep = keep.to(device)
                scores, refs = scores[keep], refs[keep]
            best_scores, best_refs = _merge(best_scores, best_refs, scores.T, refs[None, :], k)
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
