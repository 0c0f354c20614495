"""The Qwen2-VL processor: dynamic-resolution patches, one `<|image_pad|>` per merged patch, M-RoPE positions.

Pages keep their aspect ratio: each is resized to multiples of patch_size * spatial_merge_size within the
pixel budget (min_pixels..max_pixels), cut into patches in the order the merger groups them, and padded
row-major to (B, max_patches, C * T * P * P) with its (t, h, w) patch grid in `image_grid_thw`. The prompt
(colpali-engine's ColQwen2 document prompt) takes one image token per merged patch. Because the processor
knows the tokens and the grids, it also computes the multimodal rotary positions the language model needs
(`position_ids`, (B, 3, L)), as transformers' `get_rope_index` does.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from vlzoo_core import ConfigError, InputError, TokenProcessor, load_tokenizer, resolve_tokenizer_location

from colqwen.configs import Qwen2VLProcessorConfig
from colqwen.vision import _QwenVisionEncoder


def mrope_position_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_grid_thw: torch.Tensor,
    *,
    image_token_id: int,
    spatial_merge_size: int,
) -> torch.Tensor:
    """(B, 3, L) temporal/height/width positions for Qwen2-VL's multimodal rotary embedding.

    Text tokens count up on all three axes. Each run of image tokens is one image (grids are taken in
    order across the batch) laid out on its merged (t, h, w) grid, starting at the running position, which
    then advances by max(h, w) of that grid. Padding (attention_mask 0) gets position 0. This is what
    transformers' `Qwen2VLModel.get_rope_index` computes for images.
    """
    batch, length = input_ids.shape
    positions = torch.zeros(batch, 3, length, dtype=torch.long)
    grids = iter(image_grid_thw.tolist())
    for row in range(batch):
        valid = attention_mask[row].bool().cpu()
        is_image = (input_ids[row].cpu()[valid] == image_token_id).tolist()
        pieces, current = [], 0
        for image, run in itertools.groupby(is_image):
            n = len(list(run))
            if not image:
                pieces.append(torch.arange(current, current + n).expand(3, n))
                current += n
                continue
            try:
                t, h, w = next(grids)
            except StopIteration:
                raise ValueError(f"row {row} has more runs of image tokens than there are image grids") from None
            gh, gw = h // spatial_merge_size, w // spatial_merge_size
            if t * gh * gw != n:
                raise ValueError(f"row {row}: {n} image tokens, but the grid ({t}, {h}, {w}) merges to {t * gh * gw}")
            tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(gh), torch.arange(gw), indexing="ij")
            pieces.append(torch.stack([tt.flatten(), hh.flatten(), ww.flatten()]) + current)
            current += max(gh, gw)
        if pieces:
            positions[row, :, valid] = torch.cat(pieces, dim=1)
    if next(grids, None) is not None:
        raise ValueError("more image grids than runs of image tokens in the batch")
    return positions


class Qwen2VLProcessor(TokenProcessor):
    """ColQwen2's processor with colpali-engine's method names (`process_queries`, `process_images`, `score`)."""

    def __init__(self, config: Qwen2VLProcessorConfig, tokenizer, encoder: _QwenVisionEncoder) -> None:
        super().__init__(config, tokenizer)
        self.patch_size = encoder.patch_size
        self.temporal_patch_size = encoder.temporal_patch_size
        self.spatial_merge_size = encoder.spatial_merge_size
        self.factor = self.patch_size * self.spatial_merge_size
        if config.max_pixels < self.factor**2:
            raise ConfigError(f"processor.config.max_pixels ({config.max_pixels}) is below one merged patch "
                             f"({self.factor}x{self.factor} pixels)")
        self.image_processor = Qwen2VLImageProcessorPil(
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.spatial_merge_size,
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) a page of this size is resized to, within the pixel budget."""
        h, w = smart_resize(height, width, factor=self.factor, min_pixels=self.config.min_pixels,
                            max_pixels=self.config.max_pixels)
        return w, h

    def get_n_patches(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(n_patches_x, n_patches_y): the merged patch grid (visual tokens) of a (width, height) page."""
        width, height = self.resized_size(*image_size)
        return width // self.factor, height // self.factor

    def preprocess_images(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        for index, image in enumerate(images):
            if max(image.size) / min(image.size) > 200:
                raise InputError("image", index, f"aspect ratio of {image.size} is above 200")
        encoded = self.image_processor(list(images), return_tensors="pt")
        grid = encoded["image_grid_thw"].long()
        counts = grid.prod(-1).tolist()
        rows = torch.split(encoded["pixel_values"], counts)
        pixel_values = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)  # (B, max_patches, D)
        slots = [count // self.spatial_merge_size**2 for count in counts]
        return {"pixel_values": pixel_values, "image_grid_thw": grid}, slots

    def position_ids(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """M-RoPE positions for pages; queries (text only) use plain positions, so None (as do pages when
        `mrope_positions` is off)."""
        if "image_grid_thw" not in batch or not self.config.mrope_positions:
            return None
        return mrope_position_ids(batch["input_ids"], batch["attention_mask"], batch["image_grid_thw"],
                                  image_token_id=self.image_token_id, spatial_merge_size=self.spatial_merge_size)


def build_processor(config: Qwen2VLProcessorConfig, *, encoder: _QwenVisionEncoder,
                    source: Path | None) -> Qwen2VLProcessor:
    return Qwen2VLProcessor(config, load_tokenizer(resolve_tokenizer_location(config, source)), encoder)
