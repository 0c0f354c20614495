"""Shared processor logic: query tokenisation, image-token expansion and right padding.

A family subclasses `TokenProcessor` and implements `preprocess_images`, which returns the pixel tensors
and how many sequence slots each image takes. Families with special positions (M-RoPE) override
`position_ids`. `score` ranks embeddings as colpali-engine's processors do (MaxSim or dot product).
"""

from __future__ import annotations

import importlib.resources
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlzoo_core.config import ProcessorConfig
from vlzoo_core.errors import ConfigError, InputError
from vlzoo_core.interfaces import Processor
from vlzoo_core.model.scoring import Embeddings, dot_scores, maxsim

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def resolve_tokenizer_location(config: ProcessorConfig, source: str | Path | None) -> str:
    if source is not None and any((Path(source) / name).exists() for name in TOKENIZER_FILES):
        return str(source)
    location = config.tokenizer
    if location is None:
        raise ConfigError("processor.config.tokenizer: not set, and the weights folder has no tokenizer files")
    package, sep, relative = location.partition(":")
    if sep and package.isidentifier() and len(package) > 1:
        return str(importlib.resources.files(package).joinpath(relative))
    return location


def load_tokenizer(location: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a missing or broken tokenizer is a user-facing problem
        raise ConfigError(f"cannot load tokenizer from {location!r}: {type(exc).__name__}: {exc}") from exc


def open_image(image: Any, index: int) -> Image.Image:
    """A PIL image in RGB, from a PIL image or a file path; anything else is a clear InputError."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                opened.load()
                return opened.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
            raise InputError("image", index, f"cannot read {str(image)!r}: {exc}") from exc
    if not isinstance(image, Image.Image):
        raise InputError("image", index, f"expected a PIL.Image or a file path, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError("image", index, f"empty image of size {image.size}")
    return image.convert("RGB")


class TokenProcessor(Processor):
    def __init__(self, config: ProcessorConfig, tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        actual = tokenizer.convert_tokens_to_ids(config.image_token)
        if actual != config.image_token_id:
            raise ConfigError(
                f"processor.config.image_token_id: {config.image_token_id}, but the tokenizer maps "
                f"{config.image_token!r} to {actual}"
            )
        if tokenizer.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token")
        self.image_token_id = config.image_token_id

    @abstractmethod
    def preprocess_images(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Pixel tensors for the encoder, and the number of sequence slots each image takes."""

    def position_ids(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Position ids for the backbone; None means plain 0..L-1 positions."""
        return None

    def _tokenize(self, texts: list[str], max_length: int | None) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            texts,
            padding="longest",
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
            padding_side="right",
            add_special_tokens=False,
        )
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        return batch

    def process_queries(self, queries: Sequence[str]) -> dict[str, torch.Tensor]:
        for index, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise InputError("query", index, f"expected a non-empty string, got {query!r}")
        texts = [self.config.query_prefix + query + self.config.query_suffix for query in queries]
        batch = self._tokenize(texts, self.config.max_query_length)
        return self._with_positions(batch)

    def process_images(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        pages = [open_image(image, index) for index, image in enumerate(images)]
        pixel_inputs, slots = self.preprocess_images(pages)
        token = self.config.image_token
        texts = [self.config.document_prompt.replace(token, token * n) for n in slots]
        batch = {**self._tokenize(texts, None), **pixel_inputs}
        return self._with_positions(batch)

    def _with_positions(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        positions = self.position_ids(batch)
        if positions is not None:
            batch["position_ids"] = positions
        return batch

    def score(self, queries: Embeddings, documents: Embeddings, **chunking: Any) -> torch.Tensor:
        """(n_queries, n_documents) float32 scores, as colpali-engine's `processor.score`.

        Multi-vector embeddings ((n, L, D) tensors, or lists of (L_i, D) tensors) are scored by MaxSim;
        single-vector ones ((n, D) tensors, or lists of (D,) tensors) by dot product. `chunking` goes to
        `vlzoo_core.model.scoring.maxsim` (query_chunk, document_chunk, device).
        """
        if _single_vector(queries) and _single_vector(documents):
            stack = (lambda e: e if isinstance(e, torch.Tensor) else torch.stack(list(e)))
            return dot_scores(stack(queries), stack(documents))
        return maxsim(queries, documents, **chunking)

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))


def _single_vector(embeddings: Embeddings) -> bool:
    if isinstance(embeddings, torch.Tensor):
        return embeddings.dim() == 2
    return len(embeddings) > 0 and embeddings[0].dim() == 1
