"""LLaVA's projector: Linear, activation, Linear."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from vlzoo_core import Projector

from colllava.configs import LlavaProjectorConfig


class LlavaProjector(Projector):
    def __init__(self, config: LlavaProjectorConfig, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear_1 = nn.Linear(in_features, out_features, bias=config.bias)
        self.act = ACT2FN[config.hidden_act]
        self.linear_2 = nn.Linear(out_features, out_features, bias=config.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))
