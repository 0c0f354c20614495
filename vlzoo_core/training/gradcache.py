"""Pieces of cached-gradient accumulation (GradCache, Gao et al. 2021).

A large contrastive batch is embedded chunk by chunk without graphs; the loss over the whole batch
gives the gradient of every embedding; then each chunk is embedded again with its graph and
back-propagated with its cached embedding gradient. The result equals one step on the full batch
while only one chunk's activations are alive at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


def batch_size(batch: Mapping[str, Any]) -> int:
    return next(iter(batch["query"].values())).shape[0]


def split_batch(batch: Mapping[str, Mapping[str, torch.Tensor]], chunk: int) -> list[dict[str, dict]]:
    """Split every part (query, document, negative) of a collated batch into row chunks.

    Sequences are trimmed to each chunk's longest row, so a chunk embeds exactly as it would alone.
    """
    total = batch_size(batch)
    chunks = []
    for start in range(0, total, chunk):
        part = {}
        for name, inputs in batch.items():
            rows = {key: value[start : start + chunk] for key, value in inputs.items()}
            if "attention_mask" in rows:
                length = int(rows["attention_mask"].sum(-1).max())
                rows = {key: (value[..., :length] if key in ("input_ids", "attention_mask", "position_ids")
                              else value) for key, value in rows.items()}
            part[name] = rows
        chunks.append(part)
    return chunks


def pad_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding multi-vector (B, L, D) tensors to the longest L."""
    if tensors[0].dim() == 2:
        return torch.cat(tensors)
    length = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t in tensors])


class RandomState:
    """The CPU and CUDA RNG state at creation, so a chunk's re-run draws the same dropout masks."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    @contextmanager
    def replay(self):
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield
