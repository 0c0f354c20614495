"""Saving trained retrievers and loading any vlzoo folder.

A folder written by `Retriever.save_pretrained` holds the whole model. A folder written after training
holds what training changed: the PEFT adapter (`adapter/`), the fully trained modules
(`trained_modules.safetensors`), and either a reference to the base checkpoint or, for a random-init
base, the base weights themselves. Both hold `vlzoo_config.json` and the processor files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from vlzoo_core.model.builder import assemble, build_retriever
from vlzoo_core.config import LoraRuleSet, Recipe
from vlzoo_core.errors import CheckpointError, describe_validation_error
from vlzoo_core.model.lora import plan_lora
from vlzoo_core.registry import Registry
from vlzoo_core.model.retriever import CONFIG_FILE, PROCESSOR_DIR, WEIGHTS_FILE, Retriever
from vlzoo_core.model.weights import load_checkpoint, read_json

ADAPTER_DIR = "adapter"
TRAINED_FILE = "trained_modules.safetensors"


class _IdentityFormat:
    def map_key(self, key: str) -> str:
        return key


def unwrap(model: nn.Module) -> Retriever:
    """The Retriever inside a peft wrapper (or the model itself)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, Retriever):
        raise TypeError(f"expected a Retriever, got {type(base).__name__}")
    return base


def _base_state_dict(retriever: Retriever) -> dict[str, torch.Tensor]:
    """The retriever's own parameter names and values, without LoRA weights (as before peft wrapped it)."""
    return {
        key.replace(".base_layer.", "."): value
        for key, value in retriever.state_dict().items()
        if ".lora_" not in key
    }


def save_trained(model: nn.Module, directory: str | Path, *, base_weights: str | None, rule_set: LoraRuleSet) -> None:
    """Write what training changed, plus what is needed to rebuild the rest (see the module docstring)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    retriever = unwrap(model)
    base_state = _base_state_dict(retriever)
    config = {
        "format": "vlzoo", "version": 1, "dtype": str(retriever.dtype).removeprefix("torch."),
        "recipe": retriever.recipe.model_dump(mode="json"),
        "training": {"base_weights": base_weights, "lora": rule_set.model_dump(mode="json")},
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if base_weights is None:
        save_file({k: v.contiguous() for k, v in base_state.items()}, str(directory / WEIGHTS_FILE))
    if model is not retriever:
        model.save_pretrained(str(directory / ADAPTER_DIR))
    full = tuple(f"{name}." for name in trained_module_names(retriever, rule_set))
    trained = {k: v.contiguous() for k, v in base_state.items() if k.startswith(full)}
    if trained:
        save_file(trained, str(directory / TRAINED_FILE))
    retriever.processor.save_pretrained(directory / PROCESSOR_DIR)


def trained_module_names(retriever: Retriever, rule_set: LoraRuleSet) -> list[str]:
    """The fully trained modules' names. LoRA wrapping does not rename them (only Linear layers change)."""
    return plan_lora(_PlanView(retriever), rule_set).targets("full")


class _PlanView(nn.Module):
    """Plans LoRA rules on an already wrapped retriever: module paths with peft's `base_layer` folded away."""

    def __init__(self, retriever: Retriever) -> None:
        super().__init__()
        for slot in ("vision_tower", "projector", "language_model", "heads"):
            setattr(self, slot, getattr(retriever, slot))


def load_trainable_state(model: nn.Module, directory: str | Path) -> None:
    """Load the adapter and fully trained modules saved by `save_trained` into a model prepared the same way."""
    from safetensors.torch import load_file

    directory = Path(directory)
    retriever = unwrap(model)
    if (directory / ADAPTER_DIR).exists():
        from peft import set_peft_model_state_dict

        adapter = load_file(str(directory / ADAPTER_DIR / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, adapter)
        if result.unexpected_keys:
            raise CheckpointError(f"{directory}: adapter keys do not fit the model: {result.unexpected_keys[:3]}")
    if (directory / TRAINED_FILE).exists():
        _load_into(retriever, load_file(str(directory / TRAINED_FILE)), directory)


def _load_into(retriever: Retriever, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Load base-named tensors into a retriever that peft may have wrapped (Linear -> base_layer)."""
    actual = {key.replace(".base_layer.", "."): key for key in retriever.state_dict() if ".lora_" not in key}
    unknown = [key for key in state if key not in actual]
    if unknown:
        raise CheckpointError(f"{directory}: saved tensors not in the model: {unknown[:3]}")
    retriever.load_state_dict({actual[key]: value for key, value in state.items()}, strict=False)


def load_retriever(
    registry: Registry,
    directory: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Retriever:
    """Load a vlzoo folder (saved whole, or saved after training) as a plain Retriever, adapters merged."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).exists():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}; not a folder saved by vlzoo")
    config = read_json(directory / CONFIG_FILE)
    if config.get("format") != "vlzoo":
        raise CheckpointError(f"{directory / CONFIG_FILE}: not a vlzoo config")
    try:
        recipe = Recipe.model_validate(config["recipe"])
    except (KeyError, ValidationError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: invalid recipe: {describe_validation_error(exc)}") from exc
    training = config.get("training")
    dtype = dtype or config.get("dtype")
    if training and training.get("base_weights"):
        model = build_retriever(registry, recipe, weights=training["base_weights"], device=device, dtype=dtype,
                                processor_source=directory / PROCESSOR_DIR)
    else:
        model = assemble(registry, recipe, device=device, dtype=dtype, processor_source=directory / PROCESSOR_DIR)
        load_checkpoint(model, directory, _IdentityFormat(), files=[directory / WEIGHTS_FILE])
    if (directory / ADAPTER_DIR).exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(directory / ADAPTER_DIR)).merge_and_unload()
    if (directory / TRAINED_FILE).exists():
        from safetensors.torch import load_file

        _load_into(model, load_file(str(directory / TRAINED_FILE)), directory)
    return model
