"""LLaVA checkpoints as transformers writes them: the v4 Hub layout and the v5 layout."""

from __future__ import annotations

from typing import Any

from transformers import LlavaConfig

from vlzoo_core import CheckpointError, CheckpointFormat, PrefixKeyMap

from colllava.configs import LlavaCheckpointConfig, Qwen2BackboneConfig, SiglipEncoderConfig

# Checkpoint prefix -> retriever prefix. None drops the key: retrievers have no LM head,
# and LLaVA reads SigLIP's hidden states, never its pooling head.
KEY_PREFIXES: dict[str, str | None] = {
    # transformers 4 (the Hub checkpoints)
    "vision_tower.vision_model.head.": None,
    "vision_tower.vision_model.": "vision_tower.model.",
    "multi_modal_projector.": "projector.",
    "language_model.model.": "language_model.model.",
    "language_model.lm_head.": None,
    # transformers 5 (module layout; its save_pretrained also writes "vision_tower." without "vision_model.")
    "model.vision_tower.head.": None,
    "model.vision_tower.": "vision_tower.model.",
    "vision_tower.head.": None,
    "vision_tower.": "vision_tower.model.",
    "model.multi_modal_projector.": "projector.",
    "model.language_model.": "language_model.model.",
    "lm_head.": None,
}


class LlavaCheckpointFormat(CheckpointFormat):
    def __init__(self, config: LlavaCheckpointConfig | None = None) -> None:
        self._key_map = PrefixKeyMap(KEY_PREFIXES)

    def architecture(self, hf_config: dict[str, Any]) -> dict[str, Any]:
        if hf_config.get("model_type") != "llava":
            raise CheckpointError(f"expected a 'llava' checkpoint, config.json says {hf_config.get('model_type')!r}")
        config = LlavaConfig.from_dict(hf_config)
        vision, text = config.vision_config, config.text_config
        if not isinstance(config.vision_feature_layer, int):
            raise CheckpointError("vision_feature_layer lists several layers; only one layer is supported")
        encoder = {name: getattr(vision, name) for name in SiglipEncoderConfig.model_fields
                   if hasattr(vision, name) and name != "attn_implementation"}
        encoder.update(feature_layer=config.vision_feature_layer,
                       feature_select=config.vision_feature_select_strategy)
        backbone = {name: getattr(text, name) for name in Qwen2BackboneConfig.model_fields
                    if hasattr(text, name) and name not in ("rope_theta", "attn_implementation")}
        backbone["rope_theta"] = (getattr(text, "rope_parameters", None) or {}).get(
            "rope_theta", getattr(text, "rope_theta", Qwen2BackboneConfig().rope_theta))
        return {
            "encoder": {"config": encoder},
            "backbone": {"config": backbone},
            "projector": {"config": {"hidden_act": config.projector_hidden_act,
                                     "bias": getattr(config, "multimodal_projector_bias", True)}},
            "processor": {"config": {"image_token_id": config.image_token_id}},
        }

    def map_key(self, key: str) -> str | None:
        return self._key_map(key)
