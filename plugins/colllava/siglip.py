"""The SigLIP vision encoder, built on transformers' SiglipVisionModel."""

from __future__ import annotations

import torch
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from vlzoo_core import VisionEncoder

from colllava.configs import SiglipEncoderConfig


class SiglipEncoder(VisionEncoder):
    layer_cls = SiglipEncoderLayer

    def __init__(self, config: SiglipEncoderConfig) -> None:
        super().__init__()
        self.config = config
        fields = config.model_dump(exclude={"feature_layer", "feature_select", "attn_implementation"})
        hf_config = SiglipVisionConfig(**fields, vision_use_head=False)
        hf_config._attn_implementation = config.attn_implementation
        self.model = SiglipVisionModel(hf_config)
        self.hidden_size = config.hidden_size
        self.image_size = config.image_size

    def num_patches(self, height: int, width: int) -> int:
        patches = (height // self.config.patch_size) * (width // self.config.patch_size)
        return patches - (1 if self.config.feature_select == "default" else 0)

    def forward(self, pixel_values: torch.Tensor, **image_inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.model(pixel_values=pixel_values, output_hidden_states=True)
        features = outputs.hidden_states[self.config.feature_layer]
        return features[:, 1:] if self.config.feature_select == "default" else features
