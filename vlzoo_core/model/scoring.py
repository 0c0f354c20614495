"""Late-interaction (MaxSim) and single-vector scoring, chunked so memory stays bounded.

MaxSim runs as one GEMM per (query chunk, document chunk): (nd*Ld, D) @ (D, nq*Lq), viewed as
(nd, Ld, nq*Lq) and reduced with amax over the document tokens. The many document tokens are the GEMM's
rows because MKL splits rows across threads: with the few query tokens as rows instead, one query on two
threads runs at less than half the speed (benchmarks/maxsim_kernel.py). Padding never needs masking in
the similarity tensor: each document's padding rows are first replaced by copies of one of its valid rows,
which leaves every max unchanged (MaxSim ignores duplicated document tokens) and costs only O(nd * Ld * D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Embeddings = torch.Tensor | Sequence[torch.Tensor]
SIMILARITY_BLOCK = 2**21  # float32 similarities per MaxSim block by default: 8 MiB


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


class ScratchBuffers:
    """Named work tensors reused from block to block, grown when a block needs more.

    Scoring a corpus block by block with fresh multi-MiB tensors made the allocator return them to the OS
    and fault them back in, zeroed, for every block: that alone cost up to half of exact search's time,
    varying from run to run.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._storage: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised float32 tensor of `shape` on the device, sharing memory with earlier takes of `name`."""
        numel = math.prod(shape)
        storage = self._storage.get(name)
        if storage is None or storage.numel() < numel:
            storage = self._storage[name] = torch.empty(numel, dtype=torch.float32, device=self.device)
        return storage[:numel].view(shape)


class MaxSimScorer:
    """MaxSim of fixed float32 queries (nq, Lq, D) with mask (nq, Lq) against successive document blocks
    (nd, Ld, D): one GEMM, an amax and a masked sum per block, and no fresh memory but the result.

    Every document row must be a valid token (padding already replaced by duplicates, see
    `pad_by_duplicates`). A document of all-zero rows, or with Ld = 0, scores 0. Peak memory is one
    (nd * Ld, nq * Lq) float32 similarity matrix.
    """

    def __init__(self, queries: torch.Tensor, query_mask: torch.Tensor,
                 buffers: ScratchBuffers | None = None) -> None:
        self.nq, self.lq, self.dim = queries.shape
        self._queries = queries.reshape(self.nq * self.lq, self.dim).float()
        self._mask = query_mask.to(self._queries.device, torch.float32)
        self._buffers = buffers if buffers is not None else ScratchBuffers(self._queries.device)

    def scores(self, documents: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(nd, nq) float32 scores of float32 documents (nd, Ld, D), written to `out` when given."""
        nd, ld, dim = documents.shape
        if ld == 0:
            return out.zero_() if out is not None else self._queries.new_zeros(nd, self.nq)
        columns = self.nq * self.lq
        sims = torch.mm(documents.reshape(nd * ld, dim), self._queries.T,
                        out=self._buffers.take("maxsim.sims", (nd * ld, columns)))
        best = torch.amax(sims.view(nd, ld, columns), dim=1, out=self._buffers.take("maxsim.best", (nd, columns)))
        # an elementwise sum, not a GEMM, whose rounding would depend on nd: exact search and the rerank of
        # candidates put a page in blocks of different sizes and must give it the same score
        return torch.sum(best.view(nd, self.nq, self.lq).mul_(self._mask), dim=-1, out=out)


def maxsim_block(queries: torch.Tensor, query_mask: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """(nq, nd) float32 MaxSim of one block of documents (nd, Ld, D), as `MaxSimScorer` requires them."""
    return MaxSimScorer(queries, query_mask).scores(documents.float()).T


def maxsim(
    queries: Embeddings,
    documents: Embeddings,
    *,
    query_chunk: int = 32,
    document_chunk: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(Nq, Nd) float32 scores: for each query token its best document token, summed over query tokens.

    Work is split into query x document chunks, each one `MaxSimScorer` GEMM, so extra memory is bounded
    by 4 * (query_chunk * Lq * document_chunk * Ld + document_chunk * Ld * D) bytes whatever the corpus
    size. By default document_chunk keeps the similarity block and the document block near SIMILARITY_BLOCK
    values (8 MiB), the fastest size on CPU (benchmarks/scoring.py); on a GPU, much larger chunks amortise
    the per-block kernel launches. A document with no valid tokens scores 0.
    """
    q, q_mask = pad_embeddings(queries)
    d = _stacked(documents)
    if q.shape[-1] != d.shape[-1]:
        raise ValueError(f"query dim {q.shape[-1]} != document dim {d.shape[-1]}")
    device = torch.device(device) if device is not None else q.device
    if document_chunk is None:  # the similarity block, and the document block, near SIMILARITY_BLOCK values
        per_document = max(1, d.shape[1]) * max(min(query_chunk, q.shape[0]) * q.shape[1], d.shape[-1])
        document_chunk = max(1, SIMILARITY_BLOCK // per_document)
    buffers = ScratchBuffers(device)
    scorers = [MaxSimScorer(q[qs : qs + query_chunk].to(device, torch.float32),
                            q_mask[qs : qs + query_chunk].to(device), buffers)
               for qs in range(0, q.shape[0], query_chunk)]
    scores = torch.empty(q.shape[0], d.shape[0], dtype=torch.float32)
    for ds in range(0, d.shape[0], document_chunk):
        d_block = d[ds : ds + document_chunk].to(device, torch.float32)
        # The mask is taken chunk by chunk, while the chunk is in cache: the corpus is read once.
        d_block_mask = _token_mask(d_block)
        if not bool(d_block_mask.all()):
            # a document without valid tokens becomes all zeros, so its score is exactly 0
            d_block = pad_by_duplicates(d_block, d_block_mask)
        for qs, scorer in zip(range(0, q.shape[0], query_chunk), scorers):
            scores[qs : qs + query_chunk, ds : ds + document_chunk] = scorer.scores(d_block).T.cpu()
    return scores


def dot_scores(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """(Nq, Nd) float32 scores of single-vector embeddings."""
    if queries.dim() != 2 or documents.dim() != 2:
        raise ValueError("single-vector embeddings must be (N, D)")
    return (queries.float() @ documents.float().T).cpu()
