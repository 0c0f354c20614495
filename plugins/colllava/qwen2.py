"""The Qwen2 language backbone: transformers' Qwen2Model, which has no LM head and so never computes logits."""

from __future__ import annotations

from transformers import Qwen2Config, Qwen2Model
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from vlzoo_core import TransformersBackbone

from colllava.configs import Qwen2BackboneConfig


class Qwen2Backbone(TransformersBackbone):
    layer_cls = Qwen2DecoderLayer

    def __init__(self, config: Qwen2BackboneConfig) -> None:
        super().__init__()
        fields = config.model_dump(exclude={"rope_theta", "attn_implementation"})
        hf_config = Qwen2Config(**fields, rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
                                use_cache=False)
        hf_config._attn_implementation = config.attn_implementation
        self.model = Qwen2Model(hf_config)
        self.hidden_size = config.hidden_size
