"""Registrations of the example plugin. Data only: this module must not import torch (`vlzoo list` loads it).

It registers one new component (the `mlp_head` retrieval head), a LoRA rule set for retrievers that use it,
and three recipes that combine it with the built-in plugins' components: colllava's SigLIP encoder, LLaVA
projector, Qwen2 backbone and LLaVA processor, and (in `example_mix_tiny`) colqwen's Qwen2-VL language model. Components are referred to by registered name only, so the
recipes need the colllava plugin at build time but nothing here imports it.
"""

from __future__ import annotations

from vlzoo_core import Registrar, hookimpl

from vlzoo_plugin_example.configs import MlpHeadConfig

# Module names of the two heads inside the retriever (`retriever.heads.query_mlp`, `...page_mlp`); the LoRA
# rule set below refers to them.
QUERY_HEAD, PAGE_HEAD = "query_mlp", "page_mlp"

# The heads are new and random-init, so they are trained fully; the pretrained LM attention and projector get
# LoRA (r=32, alpha=32, dropout 0.1, gaussian init, as colllava_default); the vision tower stays frozen.
LORA_RULES = {
    "name": "example_mlp_head",
    "description": "LM q/k/v/o and projector linear_1/linear_2 with LoRA; both MLP heads fully trained.",
    "r": 32,
    "alpha": 32,
    "dropout": 0.1,
    "init": "gaussian",
    "rules": [
        {"name": "lm_attention", "component": "language_model",
         "pattern": r"model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj"},
        {"name": "projector", "component": "projector", "pattern": r"linear_[12]"},
        {"name": "mlp_heads", "component": "heads", "pattern": f"{QUERY_HEAD}|{PAGE_HEAD}", "mode": "full"},
    ],
}


def _heads(dim: int = 128) -> dict:
    return {
        "query_head": {"name": "mlp_head", "module": QUERY_HEAD, "config": {"dim": dim}},
        "document_head": {"name": "mlp_head", "module": PAGE_HEAD, "config": {"dim": dim}},
    }


# Same sizes as the catalog's `colllava_tiny`: random init, offline, with colllava's bundled tokenizer.
TINY_RECIPE = {
    "name": "example_mlp_head_tiny",
    "description": "colllava_tiny's SigLIP + LLaVA projector + Qwen2 with two-layer MLP heads (random init, offline)",
    "lora": LORA_RULES["name"],
    "weights": {"format": "llava_hf"},
    "encoder": {"name": "siglip", "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                            "num_attention_heads": 2, "image_size": 56, "patch_size": 14}},
    "projector": {"name": "llava_mlp", "config": {"hidden_act": "gelu"}},
    "backbone": {"name": "qwen2", "config": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
                                            "num_hidden_layers": 2, "num_attention_heads": 4,
                                            "num_key_value_heads": 2, "max_position_embeddings": 512}},
    **_heads(),
    "processor": {"name": "llava", "config": {"tokenizer": "colllava:assets/tiny_tokenizer", "image_token_id": 3}},
}

# The real thing: LLaVA-Interleave 0.5B weights (`weights="pretrained"`) with new MLP heads. The checkpoint
# has no retrieval heads; the builder allows exactly those (`heads.`) to be missing and leaves them random-init.
INTERLEAVE_RECIPE = {
    "name": "example_mlp_head_interleave",
    "description": "LLaVA-Interleave 0.5B (SigLIP, LLaVA projector, Qwen2) with two-layer MLP heads, 128-d",
    "lora": LORA_RULES["name"],
    "weights": {"source": "llava-hf/llava-interleave-qwen-0.5b-hf", "format": "llava_hf"},
    "encoder": {"name": "siglip", "config": {"hidden_size": 1152, "intermediate_size": 4304,
                                            "num_hidden_layers": 26, "num_attention_heads": 16, "image_size": 384,
                                            "patch_size": 14}},
    "projector": {"name": "llava_mlp", "config": {"hidden_act": "gelu"}},
    "backbone": {"name": "qwen2", "config": {"vocab_size": 152000, "hidden_size": 1024, "intermediate_size": 2816,
                                            "num_hidden_layers": 24, "num_attention_heads": 16,
                                            "num_key_value_heads": 16}},
    **_heads(),
    "processor": {"name": "llava", "config": {"tokenizer": "llava-hf/llava-interleave-qwen-0.5b-hf",
                                              "image_token_id": 151646}},
}


# Mix and match across both built-in plugins: colllava's SigLIP encoder and LLaVA projector feed colqwen's
# Qwen2-VL language model (1-D positions: the LLaVA processor computes none), with this plugin's MLP heads and
# colqwen's bundled tiny tokenizer (`<|image_pad|>` is its image token).
MIXED_RECIPE = {
    "name": "example_mix_tiny",
    "description": "SigLIP + LLaVA projector (colllava), Qwen2-VL LM (colqwen), MLP heads (random init, offline)",
    "lora": LORA_RULES["name"],
    "encoder": TINY_RECIPE["encoder"],
    "projector": TINY_RECIPE["projector"],
    "backbone": {"name": "qwen2_vl_text", "config": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
                                                    "num_hidden_layers": 2, "num_attention_heads": 4,
                                                    "num_key_value_heads": 2, "max_position_embeddings": 512,
                                                    "mrope_section": [2, 3, 3]}},
    **_heads(),
    "processor": {"name": "llava", "config": {
        "tokenizer": "colqwen:assets/tiny_tokenizer", "image_token": "<|image_pad|>", "image_token_id": 12,
        "document_prompt": "<|im_start|>user\n<|image_pad|>\nDescribe the image.<|im_end|>\n"}},
}


@hookimpl
def vlzoo_register(register: Registrar) -> None:
    register.component(
        "head", "mlp_head", "vlzoo_plugin_example.heads:MlpHead", MlpHeadConfig,
        "Per-token Linear, GELU, Linear to `dim`, L2-normalised (late interaction).",
    )
    register.lora_rules(LORA_RULES)
    register.recipe(TINY_RECIPE)
    register.recipe(INTERLEAVE_RECIPE)
    register.recipe(MIXED_RECIPE)
