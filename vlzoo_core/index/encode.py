"""Pages to stored vectors: batched, bucketed by size, in eval mode and the model's dtype, then pooled.

A page's vectors never depend on the other pages in its batch: text is right-padded, padding is masked, and
only each page's own valid tokens are kept. Pages are sorted by pixel count before batching, so pages of
a similar sequence length (Qwen2-VL's dynamic resolution) share a batch and little padding is computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from vlzoo_core.errors import InputError
from vlzoo_core.index.manifest import Pooling
from vlzoo_core.index.pooling import pool_tokens
from vlzoo_core.model.retriever import Retriever
from vlzoo_core.model.scoring import pad_embeddings


def _sort_by_size(images: Sequence[Image.Image]) -> list[int]:
    return sorted(range(len(images)), key=lambda i: (images[i].width * images[i].height, i))


class PageEncoder:
    """Encodes page images with a retriever's document path and applies the index's pooling settings."""

    def __init__(self, model: Retriever, pooling: Pooling, batch_size: int = 4) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.model, self.pooling, self.batch_size = model, pooling, batch_size

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Each page's stored vectors: float32 (n_i, D) unit rows, in the order of `images`."""
        model = self.model
        was_training = model.training
        model.eval()
        out: list[torch.Tensor | None] = [None] * len(images)
        order = _sort_by_size(images)
        try:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                try:
                    batch = model.processor.process_images([images[i] for i in chunk])
                except InputError as exc:
                    raise exc.shifted(start) from exc
                for index, vectors in zip(chunk, self._encode_batch(batch), strict=True):
                    out[index] = vectors
        finally:
            model.train(was_training)
        return out  # type: ignore[return-value]

    def _encode_batch(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        model = self.model
        inputs = {k: v.to(model.device) for k, v in batch.items()}
        embeddings, mask = pad_embeddings(model(**inputs).float())
        if self.pooling.drop_prompt_tokens and "input_ids" in inputs and inputs["input_ids"].shape == mask.shape:
            mask &= inputs["input_ids"] == model.image_token_id
        return [v.cpu() for v in pool_tokens(embeddings, mask, self.pooling.factor)]
