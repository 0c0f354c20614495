"""Config models of the colllava components. Defaults are the full-size LLaVA-Interleave 0.5B values."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlzoo_core import ProcessorConfig, StrictModel, TokenEmbeddingConfig


class SiglipEncoderConfig(StrictModel):
    hidden_size: int = Field(1152, gt=0)
    intermediate_size: int = Field(4304, gt=0)
    num_hidden_layers: int = Field(26, gt=0)
    num_attention_heads: int = Field(16, gt=0)
    num_channels: int = 3
    image_size: int = Field(384, gt=0)
    patch_size: int = Field(14, gt=0)
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    feature_layer: int = Field(-1, description="Which hidden state feeds the projector (-1: last layer, no post-norm).")
    feature_select: Literal["full", "default"] = Field("full", description="'default' drops the first (CLS) token.")
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


class LlavaProjectorConfig(StrictModel):
    hidden_act: str = "gelu"
    bias: bool = True


class Qwen2BackboneConfig(TokenEmbeddingConfig):
    vocab_size: int = Field(152000, gt=0)
    hidden_size: int = Field(1024, gt=0)
    intermediate_size: int = Field(2816, gt=0)
    num_hidden_layers: int = Field(24, gt=0)
    num_attention_heads: int = Field(16, gt=0)
    num_key_value_heads: int = Field(16, gt=0)
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_dropout: float = 0.0
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


class LlavaProcessorConfig(ProcessorConfig):
    image_token_id: int = 151646
    document_prompt: str = "<|im_start|>user\n<image>\nDescribe the image.<|im_end|>\n"
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)


class LlavaCheckpointConfig(StrictModel):
    """The LLaVA checkpoint format takes no options."""
