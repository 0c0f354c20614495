"""Registrations of the colllava plugin. Data only: no torch import here."""

from __future__ import annotations

from vlzoo_core import Registrar, hookimpl

from colllava.configs import (
    LlavaCheckpointConfig,
    LlavaProcessorConfig,
    LlavaProjectorConfig,
    Qwen2BackboneConfig,
    SiglipEncoderConfig,
)

# The seed's intent: adapt LM attention, the projector and both heads; the vision tower stays frozen.
DEFAULT_LORA_RULES = {
    "name": "colllava_default",
    "description": "LM q/k/v/o, projector linear_1/linear_2, custom_text_proj and image_proj (r=32, alpha=32).",
    "r": 32,
    "alpha": 32,
    "dropout": 0.1,
    "init": "gaussian",
    "rules": [
        {"name": "lm_attention", "component": "language_model",
         "pattern": r"model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj"},
        {"name": "projector", "component": "projector", "pattern": r"linear_[12]"},
        {"name": "heads", "component": "heads", "pattern": r"(custom_text_proj|image_proj)\.proj"},
    ],
}


@hookimpl
def vlzoo_register(register: Registrar) -> None:
    register.component("encoder", "siglip", "colllava.siglip:SiglipEncoder", SiglipEncoderConfig,
                       "SigLIP vision transformer; patch features from a chosen layer.")
    register.component("projector", "llava_mlp", "colllava.projector:LlavaProjector", LlavaProjectorConfig,
                       "LLaVA's 2-layer MLP projector (Linear, activation, Linear).")
    register.component("backbone", "qwen2", "colllava.qwen2:Qwen2Backbone", Qwen2BackboneConfig,
                       "Qwen2 decoder without LM head.")
    register.component("processor", "llava", "colllava.processor:build_processor", LlavaProcessorConfig,
                       "SigLIP image preprocessing; one <image> token per patch inside a chat prompt.")
    register.component("checkpoint_format", "llava_hf", "colllava.checkpoint:LlavaCheckpointFormat",
                       LlavaCheckpointConfig, "transformers LlavaForConditionalGeneration checkpoints (v4 and v5).")
    register.lora_rules(DEFAULT_LORA_RULES)
