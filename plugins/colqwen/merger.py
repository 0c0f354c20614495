"""The patch merger of Qwen2-VL (LayerNorm) and Qwen2.5-VL (RMSNorm), as the projector.

Each page's patches arrive packed and grouped merge x merge by the processor; the merger normalises each
patch, concatenates every group and maps it to the language model's width with a 2-layer GELU MLP, so a
page of P patches becomes P / merge^2 visual tokens.
"""

from __future__ import annotations

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPatchMerger
from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger

from vlzoo_core import Projector

from colqwen.configs import MergerConfig


class _Merger(Projector):
    merger_cls: type

    def __init__(self, config: MergerConfig, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.unit = config.spatial_merge_size**2
        self.merger = self.merger_cls(dim=out_features, context_dim=in_features,
                                      spatial_merge_size=config.spatial_merge_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Packed (P, in_features) patches become (P / merge^2, out_features) tokens."""
        patches = features.reshape(-1, self.in_features)
        if patches.shape[0] % self.unit:
            raise ValueError(f"{patches.shape[0]} patches cannot be merged in groups of {self.unit}")
        return self.merger(patches)


class Qwen2VLMerger(_Merger):
    merger_cls = PatchMerger


class Qwen2_5VLMerger(_Merger):
    merger_cls = Qwen2_5_VLPatchMerger
