"""The Qwen2-VL and Qwen2.5-VL vision transformers, without their patch merger (that is the projector).

Both are transformers' own vision models. Their `merger` is swapped for `_MergeGroups`, a parameter-free
module that only groups each merge x merge block of patches into one row, so transformers' forward still
runs unchanged (including Qwen2.5-VL's window reordering, which it undoes on the grouped rows) and the
encoder returns per-patch features in the processor's patch order. The projector then merges the groups.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLVisionBlock,
)
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig as HFQwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel, Qwen2VLVisionBlock

from vlzoo_core import VisionEncoder

from colqwen.configs import Qwen2_5VLVisionConfig, Qwen2VLVisionConfig


class _MergeGroups(nn.Module):
    """Stands in for the merger inside transformers' vision model: (N, H) -> (N / unit, unit * H), no weights."""

    def __init__(self, unit: int) -> None:
        super().__init__()
        self.unit = unit

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.reshape(-1, self.unit * hidden_states.shape[-1])


def unpad_patches(pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
    """Packed (total_patches, D) patches from row-major (B, max_patches, D) padded ones (packed ones pass)."""
    if pixel_values.dim() == 2:
        return pixel_values
    if pixel_values.dim() != 3 or pixel_values.shape[0] != image_grid_thw.shape[0]:
        raise ValueError(f"pixel_values {tuple(pixel_values.shape)} do not fit {image_grid_thw.shape[0]} grids: "
                         "expected (B, max_patches, patch_dim) with one grid per row")
    counts = image_grid_thw.prod(-1)
    if int(counts.max()) > pixel_values.shape[1]:
        raise ValueError(f"a grid needs {int(counts.max())} patches, pixel_values have {pixel_values.shape[1]} per row")
    keep = torch.arange(pixel_values.shape[1], device=pixel_values.device)[None, :] < counts[:, None].to(
        pixel_values.device)
    return pixel_values[keep]


class _QwenVisionEncoder(VisionEncoder):
    """Patches (row-major padded or packed) plus their (B, 3) grids in, packed (total_patches, H) features out."""

    def __init__(self, model: nn.Module, config) -> None:
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.temporal_patch_size = config.temporal_patch_size
        self.spatial_merge_size = config.spatial_merge_size
        model.merger = _MergeGroups(config.spatial_merge_size**2)
        self.model = model

    def num_patches(self, height: int, width: int) -> int:
        """Patches of a page already resized to (height, width) (multiples of patch_size * spatial_merge_size)."""
        factor = self.patch_size * self.spatial_merge_size
        if height % factor or width % factor:
            raise ValueError(f"page size ({height}, {width}) is not a multiple of {factor}")
        return (height // self.patch_size) * (width // self.patch_size)

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None = None,
                **image_inputs: torch.Tensor) -> torch.Tensor:
        if image_grid_thw is None:
            raise ValueError("the Qwen vision tower needs image_grid_thw, the (t, h, w) patch grid of each page")
        grid = image_grid_thw.to(device=pixel_values.device, dtype=torch.long)
        patches = unpad_patches(pixel_values, grid)
        grouped = self.model(patches, grid_thw=grid).pooler_output
        return grouped.reshape(-1, self.hidden_size)


class Qwen2VLVisionEncoder(_QwenVisionEncoder):
    layer_cls = Qwen2VLVisionBlock

    def __init__(self, config: Qwen2VLVisionConfig) -> None:
        fields = config.model_dump(exclude={"attn_implementation"})
        hf_config = HFQwen2VLVisionConfig(**fields, hidden_size=config.embed_dim)  # hidden_size: merger only
        hf_config._attn_implementation = config.attn_implementation
        super().__init__(Qwen2VisionTransformerPretrainedModel(hf_config), config)
        self.hidden_size = config.embed_dim


class Qwen2_5VLVisionEncoder(_QwenVisionEncoder):
    layer_cls = Qwen2_5_VLVisionBlock

    def __init__(self, config: Qwen2_5VLVisionConfig) -> None:
        fields = config.model_dump(exclude={"attn_implementation"})
        fields["fullatt_block_indexes"] = list(config.fullatt_block_indexes)
        hf_config = Qwen2_5_VLVisionConfig(**fields, out_hidden_size=config.hidden_size)  # merger only
        hf_config._attn_implementation = config.attn_implementation
        super().__init__(Qwen2_5_VisionTransformerPretrainedModel(hf_config), config)
        self.hidden_size = config.hidden_size
