"""Assemble a `Retriever` from a recipe: resolve components in the registry, build them, load weights."""

from __future__ import annotations


from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from vlzoo_core.config import Recipe
from vlzoo_core.errors import CheckpointError, ConfigError, UnknownNameError, describe_validation_error
from vlzoo_core.registry import Registry
from vlzoo_core.retriever import Retriever
from vlzoo_core.weights import load_checkpoint, read_json, resolve_source

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
) -> Retriever:
    """Build `recipe` with random init (`weights=None`), its own weights (`"pretrained"`), or a folder/Hub id.

    `"pretrained"` also merges the recipe's LoRA adapter (`weights.adapter`), if it names one.

    With a checkpoint, the architecture comes from the checkpoint's `config.json`, as `from_pretrained` does;
    `overrides` apply last. The tokenizer comes from `processor_source`, else the checkpoint folder.
    """
    recipe = apply_overrides(recipe, overrides or {})
    folder = None
    fmt = None
    adapter = None
    if weights is not None:
        if weights == PRETRAINED:
            adapter = recipe.weights.adapter if recipe.weights is not None else None
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
            model = merge_adapter(model, resolve_source(adapter, recipe.weights.adapter_revision), fmt)
    return model


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


def merge_adapter(model: Retriever, folder: Path, fmt) -> Retriever:
    """Merge a PEFT LoRA adapter, saved on the checkpoint's own model, into `model` with peft.

    The adapter names modules as the checkpoint's model did, so each adapted module is renamed with the
    checkpoint format's `map_key` (as its `.weight` would be); the adapter is then attached to exactly those
    modules, loaded, and merged. Fully saved tensors (`modules_to_save`, trained biases) replace the model's.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_json(folder / ADAPTER_CONFIG)
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{folder}: adapter type {config.get('peft_type')!r}; only LoRA adapters are merged")
    unsupported = [key for key in ("use_dora", "rank_pattern", "alpha_pattern", "layers_to_transform",
                                   "trainable_token_indices", "lora_bias") if config.get(key)]
    if unsupported:
        raise CheckpointError(f"{folder / ADAPTER_CONFIG}: adapter options {unsupported} are not supported")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: no {ADAPTER_WEIGHTS} (pickled adapters are not loaded)")
    try:
        tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{folder / ADAPTER_WEIGHTS}: cannot read safetensors: {exc}") from exc

    def mapped(name: str, key: str) -> str:
        target = fmt.map_key(name)
        if target is None:
            raise CheckpointError(f"{folder}: adapter tensor {key!r} belongs to a module the model drops")
        return target

    lora: dict[str, torch.Tensor] = {}
    full: dict[str, tuple[int, torch.Tensor]] = {}  # target -> (priority, tensor): modules_to_save wins
    for key, tensor in tensors.items():
        name = key.removeprefix(_PEFT_PREFIX)
        module, sep, part = name.partition(".lora_")
        if sep:
            if part not in ("A.weight", "B.weight"):
                raise CheckpointError(f"{folder}: adapter tensor {key!r} is not a LoRA A/B weight of a Linear layer")
            target = mapped(f"{module}.weight", key)
            lora[f"{_PEFT_PREFIX}{target.removesuffix('.weight')}.lora_{part}"] = tensor
            continue
        if ".original_module." in name:
            continue
        priority = int(".modules_to_save." in name)
        for wrapper in (".modules_to_save.default.", ".modules_to_save.", ".base_layer."):
            name = name.replace(wrapper, ".")
        target = mapped(name, key)
        if target not in full or priority > full[target][0]:
            full[target] = (priority, tensor)
    expected = model.state_dict()
    unknown = [target for target in full if target not in expected]
    if unknown:
        raise CheckpointError(f"{folder}: adapter tensors do not fit the model: {unknown[:3]}")
    for target, (_, tensor) in full.items():
        if tensor.shape != expected[target].shape:
            raise CheckpointError(f"{folder}: adapter tensor for {target} has shape {tuple(tensor.shape)}, "
                                  f"the model expects {tuple(expected[target].shape)}")
    if lora:
        modules = sorted({key.removeprefix(_PEFT_PREFIX).rsplit(".lora_", 1)[0] for key in lora})
        present = dict(model.named_modules())
        missing = [name for name in modules if not isinstance(present.get(name), torch.nn.Linear)]
        if missing:
            raise CheckpointError(f"{folder}: the adapter adapts modules that are not Linear layers of the model: "
                                  f"{missing[:3]}")
        peft_config = LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"], target_modules=modules,
                                 lora_dropout=0.0, use_rslora=bool(config.get("use_rslora")),
                                 fan_in_fan_out=bool(config.get("fan_in_fan_out")), init_lora_weights=False)
        peft_model = get_peft_model(model, peft_config)
        result = set_peft_model_state_dict(peft_model, lora)
        absent = [key for key in result.missing_keys if ".lora_" in key]
        if result.unexpected_keys or absent:
            raise CheckpointError(f"{folder}: adapter does not fit the model: {len(absent)} missing "
                                  f"{absent[:2]}, {len(result.unexpected_keys)} unexpected {result.unexpected_keys[:2]}")
        model = peft_model.merge_and_unload()
    if full:
        model.load_state_dict({target: tensor for target, (_, tensor) in full.items()}, strict=False)
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
