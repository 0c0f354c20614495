"""Cross-process gathering of embeddings, with gradients, so in-batch negatives span the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(embeddings: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's `embeddings` along dim 0 (rank order), keeping the autograd graph.

    Processes may hold different batch sizes and, for multi-vector (B, L, D) embeddings, different
    lengths: tensors are zero-padded to a common shape first (zero rows are padding to the losses).
    Gradients flow back to each process's own slice; since every process computes the same global
    loss, DDP's gradient averaging then yields exactly the single-process gradient of that loss.
    """
    if world_size() == 1:
        return embeddings
    from torch.distributed.nn.functional import all_gather

    shape = torch.tensor(embeddings.shape, device=embeddings.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size())]
    dist.all_gather(shapes, shape)
    target = torch.stack(shapes).amax(0).tolist()
    padding = []
    for size, wanted in zip(reversed(embeddings.shape), reversed(target)):
        padding += [0, wanted - size]
    gathered = all_gather(F.pad(embeddings, padding))
    return torch.cat([part[: int(s[0])] for part, s in zip(gathered, shapes)])
