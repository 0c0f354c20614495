"""Qwen2-VL / Qwen2.5-VL checkpoints: which key layouts load, and the architecture from config.json.

Each layout is one prefix table (checkpoint prefix -> retriever prefix; None drops the key on purpose, e.g.
the LM head a retriever never uses). The format maps a key with every table at once, by its longest
matching prefix: the tables never disagree on a prefix (checked at import), so a checkpoint in any of the
layouts loads, and a new layout is one more table here.
"""

from __future__ import annotations

from typing import Any

from vlzoo_core import CheckpointError, CheckpointFormat, PrefixKeyMap

from colqwen.configs import (
    QUERY_AUGMENTATION,
    Qwen2_5VLTextConfig,
    Qwen2_5VLVisionConfig,
    Qwen2VLTextConfig,
    Qwen2VLVisionConfig,
    QwenCheckpointConfig,
)

VISION = "vision_tower.model."
MERGER = "projector.merger."
TEXT = "language_model.model."
HEAD = "heads.custom_text_proj.proj."  # the recipes' multi-vector head (module `custom_text_proj`)

LAYOUTS: dict[str, dict[str, str | None]] = {
    # transformers 4 (the Qwen/Qwen2-VL-* and Qwen2.5-VL-* Hub checkpoints; transformers 5's save_pretrained
    # writes this layout too): Qwen2VLForConditionalGeneration with the text model under `model.`.
    "transformers_v4": {"visual.merger.": MERGER, "visual.": VISION, "model.": TEXT, "lm_head.": None},
    # transformers 5 module layout (Qwen2VLForConditionalGeneration.state_dict()).
    "transformers_v5": {"model.visual.merger.": MERGER, "model.visual.": VISION, "model.language_model.": TEXT,
                        "lm_head.": None},
    # colpali-engine ColQwen2 / ColQwen2.5 (vidore/colqwen2-base, vidore/colqwen2.5-base): the transformers 4
    # layout plus the 128-d projection `custom_text_proj` (tests/test_colqwen_compat.py).
    "colpali_engine": {"visual.merger.": MERGER, "visual.": VISION, "model.": TEXT, "lm_head.": None,
                       "custom_text_proj.": HEAD},
    # colpali-engine ColQwen2_5 built on Qwen2_5_VLModel (no `model.` wrapper, LM under `language_model.`).
    "colpali_engine_vl_model": {"visual.merger.": MERGER, "visual.": VISION, "language_model.": TEXT,
                                "custom_text_proj.": HEAD},
    # transformers ColQwen2ForRetrieval (model_type "colqwen2"): the VLM under `vlm.`, the head
    # `embedding_proj_layer`. transformers 5.24 saves `vlm.visual.` / `vlm.language_model.` (see
    # tests/fixtures/colqwen2_transformers) and also reads `vlm.model.` on load.
    "colqwen2_for_retrieval": {"vlm.model.visual.merger.": MERGER, "vlm.model.visual.": VISION,
                               "vlm.model.language_model.": TEXT, "vlm.lm_head.": None,
                               "vlm.visual.merger.": MERGER, "vlm.visual.": VISION,
                               "vlm.language_model.": TEXT, "embedding_proj_layer.": HEAD},
}


def merged_prefixes(layouts: dict[str, dict[str, str | None]]) -> dict[str, str | None]:
    """All layouts in one table; a prefix that two layouts map differently is an error."""
    merged: dict[str, str | None] = {}
    owner: dict[str, str] = {}
    for layout, table in layouts.items():
        for prefix, target in table.items():
            if prefix in merged and merged[prefix] != target:
                raise ValueError(f"layouts {owner[prefix]!r} and {layout!r} map {prefix!r} differently")
            merged[prefix], owner[prefix] = target, owner.get(prefix, layout)
    return merged


KEY_PREFIXES = merged_prefixes(LAYOUTS)


def _fields(source: Any, model: type, exclude: set[str]) -> dict[str, Any]:
    return {name: getattr(source, name) for name in model.model_fields if name not in exclude and hasattr(source, name)}


class _QwenCheckpointFormat(CheckpointFormat):
    model_type: str
    vision_config_cls: type
    text_config_cls: type

    def __init__(self, config: QwenCheckpointConfig | None = None) -> None:
        self._key_map = PrefixKeyMap(KEY_PREFIXES)

    def map_key(self, key: str) -> str | None:
        return self._key_map(key)

    def _hf_config(self, hf_config: dict[str, Any]):
        raise NotImplementedError

    def _encoder(self, vision) -> dict[str, Any]:
        raise NotImplementedError

    def architecture(self, hf_config: dict[str, Any]) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        model_type = hf_config.get("model_type")
        processor: dict[str, Any] = {}
        if model_type == "colqwen2" and isinstance(hf_config.get("vlm_config"), dict):
            dim = hf_config.get("embedding_dim")
            if dim is not None:
                overrides["query_head"] = overrides["document_head"] = {"config": {"dim": dim}}
            # transformers' ColQwen2Processor and ColQwen2ForRetrieval (checked with 5.24): its own query
            # template, and pages with plain 1-D positions; reproduce them for its checkpoints.
            processor = {"query_prefix": "Query: ", "query_suffix": QUERY_AUGMENTATION + "\n",
                         "mrope_positions": False}
            hf_config = hf_config["vlm_config"]
            model_type = hf_config.get("model_type")
        if model_type != self.model_type:
            raise CheckpointError(f"expected a {self.model_type!r} checkpoint, config.json says {model_type!r}")
        config = self._hf_config(hf_config)
        vision, text = config.vision_config, config.text_config
        if getattr(text, "use_sliding_window", False):
            raise CheckpointError("config.json enables use_sliding_window, which this backbone does not support")
        rope = getattr(text, "rope_parameters", None) or {}
        backbone = _fields(text, self.text_config_cls, {"rope_theta", "mrope_section", "attn_implementation"})
        backbone["rope_theta"] = rope.get("rope_theta", self.text_config_cls().rope_theta)
        if rope.get("mrope_section") is not None:
            backbone["mrope_section"] = list(rope["mrope_section"])
        encoder = self._encoder(vision)
        return {
            **overrides,
            "encoder": {"config": encoder},
            "projector": {"config": {"spatial_merge_size": encoder["spatial_merge_size"]}},
            "backbone": {"config": backbone},
            "processor": {"config": {"image_token_id": config.image_token_id, **processor}},
        }


def _patch_grid(vision) -> dict[str, Any]:
    return {
        "in_channels": getattr(vision, "in_channels", None) or getattr(vision, "in_chans", 3),
        "patch_size": vision.patch_size,
        "temporal_patch_size": vision.temporal_patch_size,
        "spatial_merge_size": vision.spatial_merge_size,
    }


class Qwen2VLCheckpointFormat(_QwenCheckpointFormat):
    """Qwen2-VL checkpoints (ColQwen2's base): transformers 4 and 5 layouts, colpali-engine's, ColQwen2ForRetrieval."""

    model_type = "qwen2_vl"
    text_config_cls = Qwen2VLTextConfig

    def _hf_config(self, hf_config: dict[str, Any]):
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig.from_dict(hf_config)

    def _encoder(self, vision) -> dict[str, Any]:
        fields = _fields(vision, Qwen2VLVisionConfig, {"attn_implementation", "in_channels"})
        return {**fields, **_patch_grid(vision)}


class Qwen2_5VLCheckpointFormat(_QwenCheckpointFormat):
    """Qwen2.5-VL checkpoints (ColQwen2.5's base), in the same layouts."""

    model_type = "qwen2_5_vl"
    text_config_cls = Qwen2_5VLTextConfig

    def _hf_config(self, hf_config: dict[str, Any]):
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig.from_dict(hf_config)

    def _encoder(self, vision) -> dict[str, Any]:
        fields = _fields(vision, Qwen2_5VLVisionConfig, {"attn_implementation", "in_channels"})
        fields["fullatt_block_indexes"] = list(fields.get("fullatt_block_indexes", ()))
        return {**fields, **_patch_grid(vision)}
