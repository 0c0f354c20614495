"""Late-interaction (MaxSim) and single-vector scoring, chunked so memory stays bounded."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Embeddings = torch.Tensor | Sequence[torch.Tensor]


def pad_embeddings(embeddings: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L, D) padded vectors and their (N, L) mask, from a padded tensor or a list of (L_i, D) tensors.

    Valid vectors are unit-norm, so padding rows are exactly the all-zero rows.
    """
    if isinstance(embeddings, torch.Tensor):
        padded = embeddings
    else:
        padded = torch.nn.utils.rnn.pad_sequence(list(embeddings), batch_first=True)
    if padded.dim() != 3:
        raise ValueError(f"multi-vector embeddings must be (N, L, D), got shape {tuple(padded.shape)}")
    return padded, padded.abs().amax(dim=-1) > 0


def maxsim(
    queries: Embeddings,
    documents: Embeddings,
    *,
    query_chunk: int = 64,
    document_chunk: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(Nq, Nd) float32 scores: for each query token its best document token, summed over query tokens.

    Work is split into query x document chunks, so peak memory is bounded by
    query_chunk * document_chunk * Lq * Ld similarities whatever the corpus size.
    """
    q, q_mask = pad_embeddings(queries)
    d, d_mask = pad_embeddings(documents)
    if q.shape[-1] != d.shape[-1]:
        raise ValueError(f"query dim {q.shape[-1]} != document dim {d.shape[-1]}")
    device = torch.device(device) if device is not None else q.device
    scores = torch.empty(q.shape[0], d.shape[0], dtype=torch.float32)
    for qs in range(0, q.shape[0], query_chunk):
        q_block = q[qs : qs + query_chunk].to(device, torch.float32)
        q_block_mask = q_mask[qs : qs + query_chunk].to(device)
        for ds in range(0, d.shape[0], document_chunk):
            d_block = d[ds : ds + document_chunk].to(device, torch.float32)
            d_block_mask = d_mask[ds : ds + document_chunk].to(device)
            sims = torch.einsum("qld,nmd->qnlm", q_block, d_block)
            sims = sims.masked_fill(~d_block_mask[None, :, None, :], float("-inf"))
            best = sims.amax(dim=-1).nan_to_num(neginf=0.0)  # a document with no tokens scores 0
            best = best * q_block_mask[:, None, :]
            scores[qs : qs + query_chunk, ds : ds + document_chunk] = best.sum(-1).cpu()
    return scores


def dot_scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """(Nq, Nd) float32 scores of single-vector embeddings."""
    if queries.dim() != 2 or documents.dim() != 2:
        raise ValueError("single-vector embeddings must be (N, D)")
    return (queries.float() @ documents.float().T).cpu()
