"""The component interfaces a plugin implements. A `Retriever` is assembled from one of each.

Tensor shapes: B batch, L sequence length, P patches, H hidden size, D embedding size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


class VisionEncoder(nn.Module, ABC):
    """Turns preprocessed pages into patch features."""

    hidden_size: int
    layer_cls: type[nn.Module]  # the repeated transformer block, for FSDP wrapping and checkpointing

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor, **image_inputs: torch.Tensor) -> torch.Tensor:
        """Return patch features, either (num_images, P, H) or packed (total_patches, H).

        `image_inputs` carries per-image metadata a family needs (for example a patch grid).
        """


class Projector(nn.Module, ABC):
    """Maps vision features to the language model's width."""

    in_features: int
    out_features: int

    @abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., in_features) features become (..., out_features) features, or fewer tokens if it merges."""


class LanguageBackbone(nn.Module, ABC):
    """A decoder without LM head: embeddings in, final hidden states out. It never computes logits."""

    hidden_size: int
    layer_cls: type[nn.Module]

    @abstractmethod
    def get_input_embeddings(self) -> nn.Embedding: ...

    @abstractmethod
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L, H) embeddings and a (B, L) mask become (B, L, H) hidden states.

        `position_ids` is (B, L), or (B, 3, L) for multimodal rotary positions; None means 0..L-1.
        """


class TransformersBackbone(LanguageBackbone):
    """A LanguageBackbone around a transformers decoder without LM head, which a subclass builds as `self.model`."""

    model: nn.Module

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def model_position_ids(self, position_ids: torch.Tensor | None) -> torch.Tensor | None:
        """Position ids in the layout the transformers model wants (row-major ones by default)."""
        return position_ids

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        outputs = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                             position_ids=self.model_position_ids(position_ids), use_cache=False)
        return outputs.last_hidden_state


class RetrievalHead(nn.Module, ABC):
    """Turns hidden states into retrieval embeddings and declares which kind it produces."""

    multi_vector: bool  # True: (B, L, D) token vectors; False: one (B, D) vector per input
    dim: int

    @abstractmethod
    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings. Multi-vector heads return exact zeros where `mask` is off."""


class Processor(ABC):
    """Tokenises queries, preprocesses pages and lays image tokens into the sequence.

    Batches are dicts of tensors that `Retriever.encode_queries` / `encode_documents` accept. Every tensor
    is row-major: its first dimension is the batch row (pad per-image data such as packed patches to
    (B, max, ...)), so batches can be split and sharded by rows without knowing the family. Text is
    padded on the right, so a row's tokens keep their positions and trailing padding can be trimmed.
    """

    image_token_id: int

    @abstractmethod
    def process_queries(self, queries: Sequence[str]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def process_images(self, images: Sequence[Any]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def save_pretrained(self, directory: str | Path) -> None:
        """Write the files (tokenizer and so on) that let the processor be rebuilt from `directory`."""


class CheckpointFormat(ABC):
    """How a family's published checkpoints map onto vlzoo components."""

    @abstractmethod
    def architecture(self, hf_config: dict[str, Any]) -> dict[str, Any]:
        """Recipe overrides (component configs) read from the checkpoint's `config.json`."""

    @abstractmethod
    def map_key(self, key: str) -> str | None:
        """The retriever's parameter name for a checkpoint key, or None to drop the key on purpose."""
