"""Config models of the colqwen components. No torch here: the registry reads them without importing it.

Defaults are the full-size values: Qwen2-VL-2B for the `qwen2_vl_*` components (ColQwen2), Qwen2.5-VL-3B
for the `qwen2_5_vl_*` ones (ColQwen2.5).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vlzoo_core import ProcessorConfig, StrictModel, TokenEmbeddingConfig

AttnImplementation = Literal["sdpa", "eager"]

# colpali-engine's ColQwen2 / ColQwen2.5 prompts: the page inside a user turn, queries with a prefix and
# ten `<|endoftext|>` "augmentation" tokens (query buffers the model learnt to use).
DOCUMENT_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|><|endoftext|>"
)
QUERY_AUGMENTATION = "<|endoftext|>" * 10
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _PatchGrid(StrictModel):
    """How pages become patches: shared by both vision towers."""

    in_channels: int = Field(3, gt=0)
    patch_size: int = Field(14, gt=0)
    temporal_patch_size: int = Field(2, gt=0, description="Frames per patch; a still page is repeated.")
    spatial_merge_size: int = Field(2, gt=0, description="The merger turns merge x merge patches into one token.")
    attn_implementation: AttnImplementation = "sdpa"


class Qwen2VLVisionConfig(_PatchGrid):
    """Qwen2-VL's vision transformer (LayerNorm, GELU MLP, 2-D rotary positions), without the merger."""

    depth: int = Field(32, gt=0)
    embed_dim: int = Field(1280, gt=0)
    num_heads: int = Field(16, gt=0)
    mlp_ratio: int = Field(4, gt=0)
    hidden_act: str = "quick_gelu"

    @model_validator(mode="after")
    def _heads_divide(self) -> Qwen2VLVisionConfig:
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ValueError("embed_dim / num_heads must be a multiple of 4 (2-D rotary positions)")
        return self


class Qwen2_5VLVisionConfig(_PatchGrid):
    """Qwen2.5-VL's vision transformer (RMSNorm, SwiGLU MLP, window attention), without the merger."""

    depth: int = Field(32, gt=0)
    hidden_size: int = Field(1280, gt=0)
    intermediate_size: int = Field(3420, gt=0)
    num_heads: int = Field(16, gt=0)
    hidden_act: str = "silu"
    window_size: int = Field(112, gt=0, description="Window side in pixels for the windowed-attention blocks.")
    fullatt_block_indexes: tuple[int, ...] = Field((7, 15, 23, 31), description="Blocks with full attention.")

    @model_validator(mode="after")
    def _heads_divide(self) -> Qwen2_5VLVisionConfig:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise ValueError("hidden_size / num_heads must be a multiple of 4 (2-D rotary positions)")
        if any(not 0 <= index < self.depth for index in self.fullatt_block_indexes):
            raise ValueError(f"fullatt_block_indexes must lie in [0, depth={self.depth})")
        return self


class MergerConfig(StrictModel):
    """The patch merger: norm, then a 2-layer GELU MLP over merge x merge neighbouring patches."""

    spatial_merge_size: int = Field(2, gt=0, description="Must equal the vision tower's spatial_merge_size.")


class Qwen2VLTextConfig(TokenEmbeddingConfig):
    """The Qwen2-VL language model without LM head; rotary positions are multimodal (M-RoPE)."""

    vocab_size: int = Field(151936, gt=0)
    hidden_size: int = Field(1536, gt=0)
    intermediate_size: int = Field(8960, gt=0)
    num_hidden_layers: int = Field(28, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    num_key_value_heads: int = Field(2, gt=0)
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, int, int] = Field(
        (16, 24, 24), description="Rotary frequency pairs given to the temporal, height and width positions."
    )
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_dropout: float = 0.0
    attn_implementation: AttnImplementation = "sdpa"

    @model_validator(mode="after")
    def _shapes(self) -> Qwen2VLTextConfig:
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must divide hidden_size, and num_key_value_heads the heads")
        head_dim = self.hidden_size // self.num_attention_heads
        if 2 * sum(self.mrope_section) != head_dim:
            raise ValueError(f"mrope_section {list(self.mrope_section)} must sum to head_dim / 2 = {head_dim // 2}")
        return self


class Qwen2_5VLTextConfig(Qwen2VLTextConfig):
    """The Qwen2.5-VL language model (same architecture as Qwen2-VL's); defaults are Qwen2.5-VL-3B's."""

    hidden_size: int = Field(2048, gt=0)
    intermediate_size: int = Field(11008, gt=0)
    num_hidden_layers: int = Field(36, gt=0)
    num_attention_heads: int = Field(16, gt=0)
    max_position_embeddings: int = 128000


class Qwen2VLProcessorConfig(ProcessorConfig):
    """colpali-engine's ColQwen2 processing; the visual-token budget is set in pixels, as in Qwen2-VL.

    A page is resized (aspect ratio kept) to multiples of patch_size * spatial_merge_size with between
    min_pixels and max_pixels pixels; it then takes one `<|image_pad|>` token per merged patch, i.e.
    pixels / (patch_size * spatial_merge_size)^2 tokens (at most 768 with the defaults).
    """

    image_token: str = "<|image_pad|>"
    image_token_id: int = 151655
    document_prompt: str = DOCUMENT_PROMPT
    query_prefix: str = Field("", description="colpali-engine >= 0.3.x has none; transformers' processor uses 'Query: '.")
    query_suffix: str = QUERY_AUGMENTATION
    mrope_positions: bool = Field(
        True,
        description="Give pages multimodal (M-RoPE) positions from their patch grid, as Qwen2-VL and "
        "colpali-engine do. False gives plain 1-D positions, which is what transformers' "
        "ColQwen2ForRetrieval computes (it calls the VLM without the grid).",
    )
    min_pixels: int = Field(4 * 28 * 28, gt=0)
    max_pixels: int = Field(768 * 28 * 28, gt=0)
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @model_validator(mode="after")
    def _budget(self) -> Qwen2VLProcessorConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) is larger than max_pixels ({self.max_pixels})")
        return self


class QwenCheckpointConfig(StrictModel):
    """The Qwen2-VL / Qwen2.5-VL checkpoint formats take no options."""
