"""Generic retrieval heads, shared by every family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlzoo_core.config import HeadConfig
from vlzoo_core.interfaces import RetrievalHead


class _LinearHead(RetrievalHead):
    """A head whose trainable part is one Linear, `proj` (the module LoRA rules target)."""

    def __init__(self, config: HeadConfig, in_features: int) -> None:
        super().__init__()
        self.dim = config.dim
        self.proj = nn.Linear(in_features, config.dim, bias=config.bias)


class MultiVectorHead(_LinearHead):
    """Late interaction: every token becomes an L2-normalised `dim` vector (ColBERT / ColPali)."""

    multi_vector = True

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vectors = F.normalize(self.proj(hidden_states), dim=-1)
        return vectors * mask.unsqueeze(-1).to(vectors.dtype)


class MeanPooledHead(_LinearHead):
    """Bi-encoder: the masked mean of the hidden states, projected and L2-normalised."""

    multi_vector = False

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden_states.dtype)
        pooled = (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return F.normalize(self.proj(pooled), dim=-1)
