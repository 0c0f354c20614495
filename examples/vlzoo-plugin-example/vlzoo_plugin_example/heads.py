"""`mlp_head`: Linear, GELU, Linear, then L2 norm per token (late interaction).

A single Linear (the built-in `multi_vector` head) can only rotate and scale the backbone's last hidden
states; a hidden layer lets the head learn a non-linear map into the retrieval space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlzoo_core import RetrievalHead

from vlzoo_plugin_example.configs import MlpHeadConfig


class MlpHead(RetrievalHead):
    multi_vector = True  # (B, L, dim): scoring is MaxSim, losses are the colbert_* family

    def __init__(self, config: MlpHeadConfig, in_features: int) -> None:
        super().__init__()
        hidden = config.hidden_features or in_features
        self.dim = config.dim
        self.fc1 = nn.Linear(in_features, hidden, bias=config.bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, config.dim, bias=config.bias)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vectors = F.normalize(self.fc2(self.act(self.fc1(hidden_states))), dim=-1)
        # exact zeros at padding, so that scoring treats those rows as padding
        return vectors * mask.unsqueeze(-1).to(vectors.dtype)
