"""Registrations of the colqwen plugin. Data only: no torch import here."""

from __future__ import annotations

from vlzoo_core import Registrar, hookimpl

from colqwen.configs import (
    MergerConfig,
    Qwen2_5VLTextConfig,
    Qwen2_5VLVisionConfig,
    Qwen2VLProcessorConfig,
    Qwen2VLTextConfig,
    Qwen2VLVisionConfig,
    QwenCheckpointConfig,
)

# colpali-engine's published ColQwen2 / ColQwen2.5 training: LoRA on every LM projection and on the
# 128-d head; the vision tower and the merger stay frozen.
DEFAULT_LORA_RULES = {
    "name": "colqwen2_default",
    "description": "LM q/k/v/o/gate/up/down and custom_text_proj (r=32, alpha=32, dropout 0.1); vision frozen.",
    "r": 32,
    "alpha": 32,
    "dropout": 0.1,
    "init": "gaussian",
    "rules": [
        {"name": "lm_projections", "component": "language_model",
         "pattern": r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"},
        {"name": "heads", "component": "heads", "pattern": r"custom_text_proj\.proj"},
    ],
}


@hookimpl
def vlzoo_register(register: Registrar) -> None:
    register.component("encoder", "qwen2_vl_vision", "colqwen.vision:Qwen2VLVisionEncoder", Qwen2VLVisionConfig,
                       "Qwen2-VL vision transformer (dynamic resolution, 2-D rotary), without the merger.")
    register.component("encoder", "qwen2_5_vl_vision", "colqwen.vision:Qwen2_5VLVisionEncoder",
                       Qwen2_5VLVisionConfig,
                       "Qwen2.5-VL vision transformer (window attention, RMSNorm, SwiGLU), without the merger.")
    register.component("projector", "qwen2_vl_merger", "colqwen.merger:Qwen2VLMerger", MergerConfig,
                       "Qwen2-VL patch merger: LayerNorm + 2-layer GELU MLP over merge x merge patches.")
    register.component("projector", "qwen2_5_vl_merger", "colqwen.merger:Qwen2_5VLMerger", MergerConfig,
                       "Qwen2.5-VL patch merger: RMSNorm + 2-layer GELU MLP over merge x merge patches.")
    register.component("backbone", "qwen2_vl_text", "colqwen.text:Qwen2VLText", Qwen2VLTextConfig,
                       "Qwen2-VL language model without LM head; M-RoPE positions.")
    register.component("backbone", "qwen2_5_vl_text", "colqwen.text:Qwen2_5VLText", Qwen2_5VLTextConfig,
                       "Qwen2.5-VL language model without LM head; M-RoPE positions.")
    register.component("processor", "qwen2_vl", "colqwen.processor:build_processor", Qwen2VLProcessorConfig,
                       "Qwen2-VL dynamic-resolution pages in colpali-engine's ColQwen2 prompts, with M-RoPE "
                       "positions.")
    register.component("checkpoint_format", "qwen2_vl_hf", "colqwen.checkpoint:Qwen2VLCheckpointFormat",
                       QwenCheckpointConfig,
                       "Qwen2-VL checkpoints: transformers v4 and v5 layouts (colpali-engine's layouts mapped).")
    register.component("checkpoint_format", "qwen2_5_vl_hf", "colqwen.checkpoint:Qwen2_5VLCheckpointFormat",
                       QwenCheckpointConfig,
                       "Qwen2.5-VL checkpoints: transformers v4 and v5 layouts (colpali-engine's layouts mapped).")
    register.lora_rules(DEFAULT_LORA_RULES)
