"""The generic retriever: encoder -> projector -> language backbone -> retrieval heads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vlzoo_core.config import Recipe
from vlzoo_core.errors import InputError
from vlzoo_core.interfaces import LanguageBackbone, Processor, Projector, RetrievalHead, VisionEncoder
from vlzoo_core.model.scoring import Embeddings, dot_scores, maxsim

CONFIG_FILE = "vlzoo_config.json"
WEIGHTS_FILE = "model.safetensors"
PROCESSOR_DIR = "processor"

QUERY_INPUTS = ("input_ids", "attention_mask", "position_ids")


class Retriever(nn.Module):
    """Any registered set of components, assembled. Build one with `vlzoo.build` or `vlzoo.load`."""

    def __init__(
        self,
        *,
        recipe: Recipe,
        vision_tower: VisionEncoder,
        projector: Projector,
        language_model: LanguageBackbone,
        heads: dict[str, RetrievalHead],
        image_token_id: int,
        processor_factory: Callable[[], Processor],
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.vision_tower = vision_tower
        self.projector = projector
        self.language_model = language_model
        self.heads = nn.ModuleDict(heads)
        self.image_token_id = image_token_id
        self._processor_factory = processor_factory
        self._processor: Processor | None = None
        q, d = self.query_head, self.document_head
        if q.multi_vector != d.multi_vector or q.dim != d.dim:
            raise ValueError("query and document heads must both be multi-vector or both single-vector, same dim")

    # ---- components ------------------------------------------------------------------------------------

    @property
    def query_head(self) -> RetrievalHead:
        return self.heads[self.recipe.query_head.module]

    @property
    def document_head(self) -> RetrievalHead:
        return self.heads[self.recipe.document_head.module]

    @property
    def multi_vector(self) -> bool:
        return self.query_head.multi_vector

    @property
    def processor(self) -> Processor:
        """Built on first use, so a model can be built (e.g. on `meta`) without its tokenizer at hand."""
        if self._processor is None:
            self._processor = self._processor_factory()
        return self._processor

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations in backward in every transformers model inside the components."""
        from transformers import PreTrainedModel

        for module in self.modules():
            if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ---- forward ---------------------------------------------------------------------------------------

    def image_features(self, pixel_values: torch.Tensor, **image_inputs: torch.Tensor) -> torch.Tensor:
        features = self.vision_tower(pixel_values.to(self.dtype), **image_inputs)
        return self.projector(features)

    def _language_model(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeds = self.language_model.get_input_embeddings()(input_ids)
        if image_features is not None:
            slots = (input_ids == self.image_token_id).unsqueeze(-1)
            n_slots, n_features = int(slots.sum()), image_features.numel() // image_features.shape[-1]
            if n_slots != n_features:
                raise ValueError(f"{n_slots} image tokens in the text but {n_features} image features")
            embeds = embeds.masked_scatter(slots, image_features.to(embeds.dtype))
        return self.language_model(embeds, attention_mask, position_ids)

    def encode_queries(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self._language_model(input_ids, attention_mask, position_ids)
        return self.query_head(hidden, attention_mask)

    def encode_documents(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        **image_inputs: torch.Tensor,
    ) -> torch.Tensor:
        features = self.image_features(pixel_values, **image_inputs)
        if self.recipe.document_path == "vision":
            if features.dim() != 3:
                raise ValueError("the 'vision' document path needs per-image (N, P, H) features")
            mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
            return self.document_head(features, mask)
        hidden = self._language_model(input_ids, attention_mask, position_ids, features)
        return self.document_head(hidden, attention_mask)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Documents if the batch has `pixel_values`, else queries."""
        if "pixel_values" in batch:
            return self.encode_documents(**batch)
        return self.encode_queries(**{k: v for k, v in batch.items() if k in QUERY_INPUTS})

    # ---- inference API ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def embed_queries(self, queries: Sequence[str], batch_size: int = 16, progress: bool = False) -> torch.Tensor:
        """(n, L, dim) zero-padded unit vectors for a multi-vector head, (n, dim) for a pooled one."""
        return self._embed(queries, self.processor.process_queries, batch_size, progress, "queries")

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Any], batch_size: int = 4, progress: bool = False) -> torch.Tensor:
        """(n, L, dim) zero-padded unit vectors for a multi-vector head, (n, dim) for a pooled one."""
        return self._embed(images, self.processor.process_images, batch_size, progress, "pages")

    def _embed(self, items: Sequence[Any], process, batch_size: int, progress: bool, what: str) -> torch.Tensor:
        was_training = self.training
        self.eval()
        outputs = []
        try:
            for start, chunk in tqdm(_chunks(items, batch_size), desc=f"embedding {what}", disable=not progress,
                                     total=-(-len(items) // batch_size)):
                try:
                    batch = process(chunk)
                except InputError as exc:
                    raise exc.shifted(start) from exc
                batch = {k: v.to(self.device) for k, v in batch.items()}
                outputs.extend(self(**batch).float().cpu())
        finally:
            self.train(was_training)
        if not outputs:
            raise ValueError(f"no {what} to embed")
        if self.multi_vector:
            return torch.nn.utils.rnn.pad_sequence(outputs, batch_first=True)
        return torch.stack(outputs)

    def score(self, queries: Embeddings, documents: Embeddings, **chunking: int) -> torch.Tensor:
        """(n_queries, n_documents) relevance: MaxSim for multi-vector heads, dot product otherwise."""
        if self.multi_vector:
            return maxsim(queries, documents, **chunking)
        return dot_scores(queries, documents)

    # ---- persistence -----------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config, safetensors weights and processor files; `vlzoo.load(directory)` reads them back."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": "vlzoo", "version": 1, "dtype": str(self.dtype).removeprefix("torch."),
                  "recipe": self.recipe.model_dump(mode="json")}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_model(self, str(directory / WEIGHTS_FILE))
        self.processor.save_pretrained(directory / PROCESSOR_DIR)


def _chunks(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    if size <= 0:
        raise ValueError("batch_size must be positive")
    for start in range(0, len(items), size):
        yield start, items[start : start + size]
