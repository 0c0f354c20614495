"""Cross-process gathering of embeddings, with gradients, so in-batch negatives span the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums each slice's gradient over processes (all_reduce works on gloo too)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank]


def gather_with_grad(embeddings: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's `embeddings` along dim 0 (rank order), keeping the autograd graph.

    Processes may hold different batch sizes and, for multi-vector (B, L, D) embeddings, different
    lengths: tensors are zero-padded to a common shape first (zero rows are padding to the losses).
    Every process computes the same global loss, so each slice's gradient is the sum over processes;
    DDP's averaging of parameter gradients then yields exactly the single-process gradient of that loss.
    """
    if world_size() == 1:
        return embeddings
    shape = torch.tensor(embeddings.shape, device=embeddings.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size())]
    dist.all_gather(shapes, shape)
    target = torch.stack(shapes).amax(0).tolist()
    padding = []
    for size, wanted in zip(reversed(embeddings.shape), reversed(target)):
        padding += [0, wanted - size]
    gathered = _AllGather.apply(F.pad(embeddings, padding))
    return torch.cat([part[: int(s[0])] for part, s in zip(gathered, shapes)])
