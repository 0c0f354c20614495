"""The Qwen2-VL / Qwen2.5-VL language models: transformers' text models, which have no LM head.

Positions are multimodal (M-RoPE): the processor gives (B, 3, L) temporal/height/width position ids, which
transformers wants as (3, B, L). (B, L) or no position ids mean plain text positions on all three axes.
"""

from __future__ import annotations

import torch
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer, Qwen2_5_VLTextModel
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig as HFQwen2VLTextConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLDecoderLayer, Qwen2VLTextModel

from vlzoo_core import TransformersBackbone

from colqwen.configs import Qwen2VLTextConfig


class _QwenVLText(TransformersBackbone):
    hf_config_cls: type
    hf_model_cls: type

    def __init__(self, config: Qwen2VLTextConfig) -> None:
        super().__init__()
        fields = config.model_dump(exclude={"rope_theta", "mrope_section", "attn_implementation"})
        rope = {"rope_type": "default", "rope_theta": config.rope_theta, "mrope_section": list(config.mrope_section)}
        hf_config = self.hf_config_cls(**fields, rope_parameters=rope, use_cache=False,
                                       bos_token_id=None, eos_token_id=None)
        hf_config._attn_implementation = config.attn_implementation
        self.model = self.hf_model_cls(hf_config)
        self.hidden_size = config.hidden_size

    def model_position_ids(self, position_ids: torch.Tensor | None) -> torch.Tensor | None:
        if position_ids is not None and position_ids.dim() == 3:
            if position_ids.shape[1] != 3:
                raise ValueError(f"M-RoPE position ids must be (B, 3, L), got {tuple(position_ids.shape)}")
            return position_ids.transpose(0, 1)  # row-major (B, 3, L) -> transformers' (3, B, L)
        return position_ids


class Qwen2VLText(_QwenVLText):
    layer_cls = Qwen2VLDecoderLayer
    hf_config_cls = HFQwen2VLTextConfig
    hf_model_cls = Qwen2VLTextModel


class Qwen2_5VLText(_QwenVLText):
    layer_cls = Qwen2_5_VLDecoderLayer
    hf_config_cls = Qwen2_5_VLTextConfig
    hf_model_cls = Qwen2_5_VLTextModel
