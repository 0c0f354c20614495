"""The LLaVA processor: SigLIP preprocessing, and one image token per patch inside the document prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from vlzoo_core import TokenProcessor, load_tokenizer, resolve_tokenizer_location

from colllava.configs import LlavaProcessorConfig
from colllava.siglip import SiglipEncoder


class LlavaProcessor(TokenProcessor):
    def __init__(self, config: LlavaProcessorConfig, tokenizer, encoder: SiglipEncoder) -> None:
        super().__init__(config, tokenizer)
        size = encoder.image_size
        self.image_processor = SiglipImageProcessorPil(
            size={"height": size, "width": size},
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
        )
        self.tokens_per_image = encoder.num_patches(size, size)

    def preprocess_images(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        pixel_values = self.image_processor(list(images), return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values}, [self.tokens_per_image] * len(images)


def build_processor(config: LlavaProcessorConfig, *, encoder: SiglipEncoder, source: Path | None) -> LlavaProcessor:
    return LlavaProcessor(config, load_tokenizer(resolve_tokenizer_location(config, source)), encoder)
