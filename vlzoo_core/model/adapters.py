"""Merging published PEFT LoRA adapters (e.g. vidore/colqwen2-v1.0) into a retriever built from their base."""

from __future__ import annotations

from pathlib import Path

import torch

from vlzoo_core.errors import CheckpointError
from vlzoo_core.model.retriever import Retriever
from vlzoo_core.model.weights import read_json

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
