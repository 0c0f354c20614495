"""Assemble a `Retriever` from a recipe: resolve components in the registry, build them, load weights."""

from __future__ import annotations


from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from vlzoo_core.config import Recipe
from vlzoo_core.model.adapters import merge_adapter
from vlzoo_core.errors import ConfigError, UnknownNameError, describe_validation_error
from vlzoo_core.registry import Registry
from vlzoo_core.model.retriever import Retriever
from vlzoo_core.model.weights import load_checkpoint, read_json, resolve_source

PRETRAINED = "pretrained"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any], where: str | None = None) -> Recipe:
    """A new recipe with `overrides` deep-merged in and validated again; the original is unchanged.

    `where` names the overrides in errors (default: "overrides of 'NAME'").
    """
    if not overrides:
        return recipe
    try:
        return Recipe.model_validate(deep_merge(recipe.model_dump(), overrides))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, where or f"overrides of {recipe.name!r}")) from exc


def checkpoint_format(registry: Registry, recipe: Recipe):
    if recipe.weights is None:
        raise ConfigError(f"model {recipe.name!r} declares no weights format, so it cannot load checkpoints")
    spec = registry.component("checkpoint_format", recipe.weights.format)
    return spec.load()(spec.parse_config({}, f"weights.format {spec.name}"))


def build_retriever(
    registry: Registry,
    recipe: Recipe,
    *,
    weights: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    processor_source: Path | None = None,
    adapter: str | Path | None = None,
) -> Retriever:
    """Build `recipe` with random init (`weights=None`), its own weights (`"pretrained"`), or a folder/Hub id.

    `adapter` (a folder or Hub id of a PEFT LoRA adapter trained on those weights) is merged after loading;
    with `"pretrained"` it defaults to the recipe's own adapter (`weights.adapter`), if it names one.

    With a checkpoint, the architecture comes from the checkpoint's `config.json`, as `from_pretrained` does;
    `overrides` apply last. The tokenizer comes from `processor_source`, else the checkpoint folder.
    """
    recipe = apply_overrides(recipe, overrides or {})
    folder = None
    fmt = None
    if adapter is not None and weights is None:
        raise ConfigError("an adapter needs the weights it was trained on; pass weights=")
    if weights is not None:
        if weights == PRETRAINED:
            if adapter is None and recipe.weights is not None and recipe.weights.adapter is not None:
                adapter = recipe.weights.adapter
            if recipe.weights is None or recipe.weights.source is None:
                raise ConfigError(f"model {recipe.name!r} has no pretrained weights; pass a folder or Hub id")
            weights = recipe.weights.source
        fmt = checkpoint_format(registry, recipe)
        folder = resolve_source(weights, recipe.weights.revision if recipe.weights else None)
        architecture = fmt.architecture(read_json(folder / "config.json"))
        recipe = apply_overrides(apply_overrides(recipe, architecture), overrides or {})
    model = assemble(registry, recipe, device=device, dtype=dtype, processor_source=processor_source or folder)
    if folder is not None:
        if model.device.type == "meta":
            raise ConfigError("weights cannot be loaded on the meta device; pass weights=None")
        load_checkpoint(model, folder, fmt, allow_missing=["heads."])
        if adapter is not None:
            revision = recipe.weights.adapter_revision if adapter == recipe.weights.adapter else None
            model = merge_adapter(model, resolve_source(adapter, revision), fmt)
    return model


def assemble(
    registry: Registry,
    recipe: Recipe,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    processor_source: Path | None = None,
    where: str | None = None,
) -> Retriever:
    """Instantiate every component of `recipe` (random init) and wire them into a `Retriever`.

    `where` prefixes the field paths in errors (default: the recipe's name).
    """

    def resolve(kind: str, field: str):
        ref = getattr(recipe, field)
        try:
            spec = registry.component(kind, ref.name)
        except UnknownNameError as exc:
            raise ConfigError(f"{where or recipe.name}.{field}.name: {exc}") from exc
        return spec.load(), spec.parse_config(ref.config, f"{where or recipe.name}.{field}.config")

    encoder_factory, encoder_config = resolve("encoder", "encoder")
    projector_factory, projector_config = resolve("projector", "projector")
    backbone_factory, backbone_config = resolve("backbone", "backbone")
    query_factory, query_config = resolve("head", "query_head")
    document_factory, document_config = resolve("head", "document_head")
    processor_factory, processor_config = resolve("processor", "processor")

    with torch.device(device or "cpu"):
        encoder = encoder_factory(encoder_config)
        backbone = backbone_factory(backbone_config)
        projector = projector_factory(projector_config, encoder.hidden_size, backbone.hidden_size)
        heads = {recipe.query_head.module: query_factory(query_config, backbone.hidden_size)}
        if recipe.document_head.module not in heads:
            heads[recipe.document_head.module] = document_factory(document_config, backbone.hidden_size)
        elif recipe.document_head != recipe.query_head:
            raise ConfigError("query_head and document_head share a module name but differ in name or config")
        model = Retriever(
            recipe=recipe,
            vision_tower=encoder,
            projector=projector,
            language_model=backbone,
            heads=heads,
            image_token_id=processor_config.image_token_id,
            processor_factory=lambda: processor_factory(processor_config, encoder=encoder, source=processor_source),
        )
    dtype = parse_dtype(dtype)
    return model.to(dtype) if dtype is not None else model
