"""Late-interaction (MaxSim) and single-vector scoring, chunked so memory stays bounded.

MaxSim runs as one GEMM per (query chunk, document chunk): (nq*Lq, D) @ (D, nd*Ld), viewed as
(nq, Lq, nd, Ld) and reduced with amax over the document tokens. Padding never needs masking in that
big tensor: each document's padding rows are first replaced by copies of one of its valid rows, which
leaves every max unchanged (MaxSim ignores duplicated document tokens) and costs only O(nd * Ld * D).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Embeddings = torch.Tensor | Sequence[torch.Tensor]


def pad_embeddings(embeddings: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L, D) padded vectors and their (N, L) mask, from a padded tensor or a list of (L_i, D) tensors.

    Valid vectors are unit-norm, so padding rows are exactly the all-zero rows.
    """
    padded = _stacked(embeddings)
    return padded, _token_mask(padded)


def _stacked(embeddings: Embeddings) -> torch.Tensor:
    if isinstance(embeddings, torch.Tensor):
        padded = embeddings
    else:
        padded = torch.nn.utils.rnn.pad_sequence(list(embeddings), batch_first=True)
    if padded.dim() != 3:
        raise ValueError(f"multi-vector embeddings must be (N, L, D), got shape {tuple(padded.shape)}")
    return padded


def _token_mask(padded: torch.Tensor) -> torch.Tensor:
    return padded.abs().amax(dim=-1) > 0


def pad_by_duplicates(documents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy of (nd, Ld, D) documents with each padding row replaced by the document's first valid row (zeros if none)."""
    nd, ld, dim = documents.shape
    if ld == 0:
        return documents.clone()
    position = torch.arange(ld, device=documents.device)
    first = mask.to(torch.uint8).argmax(dim=1)  # index of the first valid row; 0 for a document without any
    rows = torch.where(mask, position, first[:, None]) + ld * torch.arange(nd, device=documents.device)[:, None]
    # whole-row copies (index_select) run several times faster than an elementwise where over (nd, Ld, D)
    out = documents.reshape(nd * ld, dim).index_select(0, rows.reshape(-1)).view(nd, ld, dim)
    return out.index_fill_(0, torch.nonzero(~mask.any(dim=1)).view(-1), 0)


def maxsim_block(queries: torch.Tensor, query_mask: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """(nq, nd) float32 MaxSim of float32 queries (nq, Lq, D) with mask (nq, Lq), and documents (nd, Ld, D) whose every row is a valid token (padding already replaced by duplicates).

    A document of all-zero rows (see `pad_by_duplicates`) or with Ld = 0 scores 0. Peak memory is the
    (nq * Lq, nd * Ld) float32 similarity matrix.
    """
    nq, lq, dim = queries.shape
    nd, ld, _ = documents.shape
    if ld == 0:
        return queries.new_zeros(nq, nd, dtype=torch.float32)
    sims = torch.mm(queries.reshape(nq * lq, dim).float(), documents.reshape(nd * ld, dim).float().T)
    best = sims.view(nq, lq, nd, ld).amax(dim=-1)  # (nq, Lq, nd)
    return torch.bmm(query_mask.to(best.dtype)[:, None, :], best)[:, 0, :]


def maxsim(
    queries: Embeddings,
    documents: Embeddings,
    *,
    query_chunk: int = 32,
    document_chunk: int = 16,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(Nq, Nd) float32 scores: for each query token its best document token, summed over query tokens.

    Work is split into query x document chunks, each one `maxsim_block` GEMM, so extra memory is bounded
    by 4 * (query_chunk * Lq * document_chunk * Ld + document_chunk * Ld * D) bytes whatever the corpus
    size: 16 MiB of similarities for Lq = 32, Ld = 256 at the defaults, 64 MiB for ColPali's Ld = 1030.
    The defaults keep that block near cache size, which is fastest on CPU (for pages of ~1000 tokens,
    document_chunk=4 is faster still); on a GPU, much larger chunks amortise the per-block kernel
    launches. A document with no valid tokens scores 0.
    """
    q, q_mask = pad_embeddings(queries)
    d = _stacked(documents)
    if q.shape[-1] != d.shape[-1]:
        raise ValueError(f"query dim {q.shape[-1]} != document dim {d.shape[-1]}")
    device = torch.device(device) if device is not None else q.device
    scores = torch.empty(q.shape[0], d.shape[0], dtype=torch.float32)
    for ds in range(0, d.shape[0], document_chunk):
        d_block = d[ds : ds + document_chunk].to(device, torch.float32)
        # The mask is taken chunk by chunk, while the chunk is in cache: the corpus is read once.
        d_block_mask = _token_mask(d_block)
        if not bool(d_block_mask.all()):
            # a document without valid tokens becomes all zeros, so its score is exactly 0
            d_block = pad_by_duplicates(d_block, d_block_mask)
        for qs in range(0, q.shape[0], query_chunk):
            q_block = q[qs : qs + query_chunk].to(device, torch.float32)
            q_block_mask = q_mask[qs : qs + query_chunk].to(device)
            scores[qs : qs + query_chunk, ds : ds + document_chunk] = maxsim_block(q_block, q_block_mask, d_block).cpu()
    return scores


def dot_scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """(Nq, Nd) float32 scores of single-vector embeddings."""
    if queries.dim() != 2 or documents.dim() != 2:
        raise ValueError("single-vector embeddings must be (N, D)")
    return (queries.float() @ documents.float().T).cpu()
