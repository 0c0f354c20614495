"""pydantic models for recipes and LoRA rules. Pure data: importing this module never imports torch."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

COMPONENT_SLOTS = ("vision_tower", "projector", "language_model", "heads")
ComponentSlot = Literal["vision_tower", "projector", "language_model", "heads"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeadConfig(StrictModel):
    """Options of the generic retrieval heads."""

    dim: int = Field(128, gt=0, description="Embedding size.")
    bias: bool = True


class ComponentRef(StrictModel):
    """A registered component chosen by name, with options for that component's own config class."""

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class HeadRef(ComponentRef):
    module: str = Field(description="Attribute name of the head in the retriever, e.g. 'custom_text_proj'.")

    @field_validator("module")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"head module name {value!r} is not a Python identifier")
        return value


class WeightsRef(StrictModel):
    source: str | None = Field(None, description="Hub id or local folder of the pretrained weights.")
    format: str = Field(description="Registered checkpoint format that maps the source's keys and config.")
    revision: str | None = None
    adapter: str | None = Field(
        None,
        description="Hub id or local folder of a PEFT LoRA adapter trained on `source`; with "
        "weights='pretrained' it is merged into the loaded weights (its keys are mapped by `format`).",
    )
    adapter_revision: str | None = None


class Recipe(StrictModel):
    """One entry of the catalog: which registered components make a retriever, and where its weights are."""

    name: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    encoder: ComponentRef
    projector: ComponentRef
    backbone: ComponentRef
    query_head: HeadRef
    document_head: HeadRef
    processor: ComponentRef
    document_path: Literal["language_model", "vision"] = Field(
        "language_model",
        description="'language_model': pages pass through the LM (ColPali style); "
        "'vision': pages skip the LM and use projected patch features.",
    )
    weights: WeightsRef | None = None
    lora: str | None = Field(None, description="Registered LoRA rule set used for training.")
    plugin: str = Field("registry.toml", description="Where the recipe was registered.")


class LoraRule(StrictModel):
    """Adapt (or fully train) the modules of one component whose relative path fully matches `pattern`."""

    name: str
    component: ComponentSlot
    pattern: str
    mode: Literal["lora", "full"] = "lora"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from exc
        return value


class LoraRuleSet(StrictModel):
    name: str
    description: str = ""
    rules: tuple[LoraRule, ...]
    r: int = Field(32, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    init: Literal["gaussian", "default", "pissa", "olora"] = "gaussian"

    @model_validator(mode="after")
    def _unique_rule_names(self) -> LoraRuleSet:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule names {duplicates}")
        if not self.rules:
            raise ValueError("a rule set needs at least one rule")
        return self


class TokenEmbeddingConfig(StrictModel):
    """What a language backbone keeps from its checkpoint's vocabulary so that training matches it: the
    vocabulary size and the padding token, whose embedding row gets no gradient (transformers'
    `padding_idx`). A backbone config whose checkpoint names a pad token subclasses this."""

    vocab_size: int = Field(gt=0)
    pad_token_id: int | None = Field(
        None, ge=0,
        description="The checkpoint's pad token: its embedding row stays as loaded, as in the library that "
        "trained it (query augmentation tokens are often this token).",
    )

    @model_validator(mode="after")
    def _pad_in_vocabulary(self) -> TokenEmbeddingConfig:
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")
        return self


class ProcessorConfig(StrictModel):
    tokenizer: str | None = Field(
        None,
        description="Tokenizer folder, Hub id, or 'package:path' inside an installed package. "
        "A weights folder that has tokenizer files takes precedence.",
    )
    image_token: str = "<image>"
    image_token_id: int = Field(ge=0)
    document_prompt: str = Field(description="Text around a page; contains the image token exactly once.")
    query_prefix: str = "Query: "
    query_suffix: str = ""
    max_query_length: int = Field(128, gt=0)

    @model_validator(mode="after")
    def _one_image_token(self) -> ProcessorConfig:
        if self.document_prompt.count(self.image_token) != 1:
            raise ValueError(f"document_prompt must contain {self.image_token!r} exactly once")
        return self
