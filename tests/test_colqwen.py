"""The colqwen plugin: ColQwen2 (Qwen2-VL) and ColQwen2.5 (Qwen2.5-VL) built from the core interfaces.

1. `colqwen2_tiny` embeds queries and pages of different sizes (different patch grids) in one batch exactly
   as it embeds each alone.
2. Its M-RoPE position ids equal transformers' `get_rope_index` for the same tokens and grids.
3. Tiny transformers Qwen2-VL / Qwen2.5-VL models are the reference: their weights, written in the
   transformers 4 (Hub, and save_pretrained) and 5 (module) layouts, load tensor for tensor, and the
   retriever computes the same hidden states as `Qwen2VLForConditionalGeneration.model(...)`.
4. A PEFT adapter in the checkpoint's own module names is merged with weights="pretrained".
5. The default LoRA rules, the full-size models (meta device) against transformers' own, the CLI listing,
   and a few training steps through `vlzoo train`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

import vlzoo
from tests.conftest import make_page
from vlzoo.cli import main
from vlzoo_core.model.builder import build_retriever, checkpoint_format
from vlzoo_core.errors import CheckpointError
from vlzoo_core.model.lora import adapted_modules, apply_lora

REPO = Path(__file__).resolve().parent.parent
IMAGE_TOKEN_ID = 12  # `<|image_pad|>` in the bundled tiny tokenizer
NO_SPECIAL_IDS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
TINY_TEXT = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                 **NO_SPECIAL_IDS)
TINY_VISION_2 = dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=64, patch_size=14,
                     temporal_patch_size=2, spatial_merge_size=2)
# window_size 56 px = 2x2 merged patches: the small test pages span several windows.
TINY_VISION_2_5 = dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64, patch_size=14,
                       temporal_patch_size=2, spatial_merge_size=2, window_size=56, fullatt_block_indexes=[1])
QUERIES = ["red circle and blue letter K", "a much longer query about the yellow triangle on the left", "x"]


def pages() -> list:
    """Pages of different sizes and aspect ratios: (4, 4), (4, 10), (8, 8) and (6, 6) patch grids."""
    return [make_page(1), make_page(2, size=(200, 90)), make_page(3, size=(128, 128)), make_page(4, size=(80, 80))]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return vlzoo.build("colqwen2_tiny").eval()


# ---- 1. embeddings ---------------------------------------------------------------------------------------


def check_embeddings(embeddings: torch.Tensor, mask: torch.Tensor) -> None:
    norms = embeddings.norm(dim=-1)
    assert torch.allclose(norms[mask.bool()], torch.ones(()), atol=1e-5)
    assert torch.equal(embeddings[~mask.bool()], torch.zeros_like(embeddings[~mask.bool()]))


def test_tiny_embeds_queries_and_pages(tiny):
    batch = tiny.processor.process_images(pages())
    grids = batch["image_grid_thw"].tolist()
    assert grids == [[1, 4, 4], [1, 4, 10], [1, 8, 8], [1, 6, 6]]
    assert batch["pixel_values"].shape == (4, 64, 3 * 2 * 14 * 14)  # row-major, padded to the largest page
    assert batch["position_ids"].shape == (4, 3, batch["input_ids"].shape[1])
    image_tokens = (batch["input_ids"] == IMAGE_TOKEN_ID).sum(-1).tolist()
    assert image_tokens == [4, 10, 16, 9]  # one per merged 2x2 patch

    documents = tiny.embed_images(pages(), batch_size=4)
    assert documents.shape == (4, batch["input_ids"].shape[1], 128)
    check_embeddings(documents, batch["attention_mask"])
    queries = tiny.embed_queries(QUERIES)
    query_batch = tiny.processor.process_queries(QUERIES)
    assert queries.shape == (3, query_batch["input_ids"].shape[1], 128)
    check_embeddings(queries, query_batch["attention_mask"])
    # colpali-engine's prompts: ten augmentation tokens after each query, the page inside a user turn.
    text = tiny.processor.tokenizer.decode(query_batch["input_ids"][2][query_batch["attention_mask"][2].bool()])
    assert text == "x" + "<|endoftext|>" * 10  # colpali-engine 0.3.18: no prefix, ten augmentation tokens
    assert tiny.processor.tokenizer.decode(batch["input_ids"][0][:4]) == "<|im_start|>user\n<|vision_start|>"

    scores = tiny.score(queries, documents)
    assert scores.shape == (3, 4)
    assert torch.allclose(tiny.processor.score(queries, documents), scores)
    assert torch.allclose(tiny.processor.score(list(queries), list(documents)), scores)


def test_padding_invariance_for_pages_and_queries(tiny):
    """Each page (with its own grid) and each query embeds the same alone as in a mixed batch."""
    together = tiny.embed_images(pages(), batch_size=4)
    for index, page in enumerate(pages()):
        alone = tiny.embed_images([page])[0]
        assert (together[index, : alone.shape[0]] - alone).abs().max().item() <= 1e-5
        assert not together[index, alone.shape[0]:].any()
    together = tiny.embed_queries(QUERIES)
    for index, query in enumerate(QUERIES):
        alone = tiny.embed_queries([query])[0]
        assert (together[index, : alone.shape[0]] - alone).abs().max().item() <= 1e-5


def test_visual_token_budget(tiny):
    processor = tiny.processor
    assert processor.get_n_patches((128, 128)) == (4, 4)  # max_pixels = 112 * 112
    assert processor.get_n_patches((20, 20)) == (2, 2)  # min_pixels = 56 * 56
    bigger = vlzoo.build("colqwen2_tiny", processor={"config": {"max_pixels": 28 * 28 * 64}})
    assert bigger.processor.get_n_patches((1000, 1000)) == (8, 8)
    assert bigger.processor.process_images([make_page(0, size=(1000, 1000))])["image_grid_thw"].tolist() == [[1, 16, 16]]


# ---- 2. M-RoPE positions ---------------------------------------------------------------------------------


def reference_rope_index(hf_model_cls, config, input_ids, attention_mask, grids):
    model = hf_model_cls.__new__(hf_model_cls)  # get_rope_index only reads the config
    model.config = config
    positions, _ = hf_model_cls.get_rope_index(
        model, input_ids, mm_token_type_ids=(input_ids == IMAGE_TOKEN_ID).int(), image_grid_thw=grids,
        attention_mask=attention_mask)
    return positions.permute(1, 0, 2)  # (3, B, L) -> (B, 3, L)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_mrope_positions_match_transformers(tiny, family):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    from colqwen.processor import mrope_position_ids

    hf_model_cls, config = ((Qwen2VLModel, Qwen2VLConfig(image_token_id=IMAGE_TOKEN_ID)) if family == "qwen2_vl"
                            else (Qwen2_5_VLModel, Qwen2_5_VLConfig(image_token_id=IMAGE_TOKEN_ID)))
    batch = tiny.processor.process_images(pages())
    expected = reference_rope_index(hf_model_cls, config, batch["input_ids"], batch["attention_mask"],
                                    batch["image_grid_thw"])
    assert torch.equal(batch["position_ids"], expected)

    # Two images in one row with text around them, and a text-only row, all padded.
    t = lambda *ids: list(ids)  # noqa: E731
    rows = [t(1, 2, *[IMAGE_TOKEN_ID] * 6, 3, 4, *[IMAGE_TOKEN_ID] * 4, 5), t(7, 8, 9), t(1, *[IMAGE_TOKEN_ID] * 9, 2)]
    length = max(map(len, rows))
    input_ids = torch.tensor([row + [0] * (length - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows])
    grids = torch.tensor([[1, 4, 6], [1, 4, 4], [1, 6, 6]])
    ours = mrope_position_ids(input_ids, attention_mask, grids, image_token_id=IMAGE_TOKEN_ID, spatial_merge_size=2)
    assert torch.equal(ours, reference_rope_index(hf_model_cls, config, input_ids, attention_mask, grids))
    with pytest.raises(ValueError, match="grid"):
        mrope_position_ids(input_ids, attention_mask, grids[:2], image_token_id=IMAGE_TOKEN_ID, spatial_merge_size=2)


# ---- 3. checkpoints and hidden states against transformers -----------------------------------------------


def perturbed(model):
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.float().eval()


def make_hf_qwen2_vl(seed: int = 0) -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = Qwen2VLConfig(vision_config=TINY_VISION_2, text_config=TINY_TEXT, image_token_id=IMAGE_TOKEN_ID)
    return perturbed(Qwen2VLForConditionalGeneration(config))


def make_hf_qwen2_5_vl(seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(vision_config=TINY_VISION_2_5, text_config=TINY_TEXT, image_token_id=IMAGE_TOKEN_ID)
    return perturbed(Qwen2_5_VLForConditionalGeneration(config))


def write_save_pretrained(folder: Path, hf_model) -> Path:
    """transformers 5's save_pretrained writes the transformers 4 (Hub) layout."""
    hf_model.save_pretrained(folder)
    return folder


def write_v5_modules(folder: Path, hf_model) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hf_model.config.to_dict(), default=str), encoding="utf-8")
    state = {key: value.detach().clone().contiguous() for key, value in hf_model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    return folder


# Our parameter prefix -> transformers 5's module prefix.
OURS_TO_HF = [("projector.merger.", "model.visual.merger."), ("vision_tower.model.", "model.visual."),
              ("language_model.model.", "model.language_model.")]


def hf_name(key: str) -> str:
    for ours, theirs in OURS_TO_HF:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise AssertionError(f"unexpected retriever parameter {key}")


def assert_same_weights(model, hf_model) -> None:
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    reference = hf_model.state_dict()
    assert {hf_name(k) for k in ours} == {k for k in reference if not k.startswith("lm_head.")}
    for key, value in ours.items():
        assert torch.equal(value, reference[hf_name(key)]), key


@torch.no_grad()
def assert_same_hidden_states(model, hf_model) -> None:
    from colqwen.vision import unpad_patches

    documents = model.processor.process_images(pages())
    grids = documents["image_grid_thw"]
    expected = hf_model.model(
        input_ids=documents["input_ids"], attention_mask=documents["attention_mask"],
        pixel_values=unpad_patches(documents["pixel_values"], grids), image_grid_thw=grids,
        mm_token_type_ids=(documents["input_ids"] == IMAGE_TOKEN_ID).int(),
    ).last_hidden_state
    features = model.image_features(documents["pixel_values"], image_grid_thw=grids)
    actual = model._language_model(documents["input_ids"], documents["attention_mask"], documents["position_ids"],
                                   features)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-5

    queries = model.processor.process_queries(QUERIES)
    expected = hf_model.model(input_ids=queries["input_ids"], attention_mask=queries["attention_mask"]).last_hidden_state
    actual = model._language_model(queries["input_ids"], queries["attention_mask"], queries.get("position_ids"))
    assert (actual - expected).abs().max().item() <= 1e-5


LAYOUTS = {"v4_save_pretrained": write_save_pretrained, "v5_modules": write_v5_modules}


@pytest.fixture(scope="module")
def hf_qwen2_vl():
    return make_hf_qwen2_vl()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_qwen2_vl_checkpoint_loads_and_matches_transformers(layout, tmp_path, hf_qwen2_vl):
    folder = LAYOUTS[layout](tmp_path / layout, hf_qwen2_vl)
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    if layout == "v4_save_pretrained":
        assert "visual.merger.ln_q.weight" in keys and "model.layers.0.self_attn.q_proj.weight" in keys
    else:
        assert "model.visual.merger.ln_q.weight" in keys and "model.language_model.norm.weight" in keys
    assert "lm_head.weight" in keys

    model = vlzoo.build("colqwen2_tiny", weights=folder).eval()
    assert model.recipe.backbone.config["rms_norm_eps"] == 1e-6
    assert_same_weights(model, hf_qwen2_vl)
    assert_same_hidden_states(model, hf_qwen2_vl)


def qwen2_5_recipe():
    """colqwen2_tiny with the Qwen2.5-VL components (window attention, RMSNorm merger)."""
    recipe = vlzoo.recipe("colqwen2_tiny")
    vision = {k: v for k, v in TINY_VISION_2_5.items() if k != "out_hidden_size"}
    return recipe.model_copy(update={
        "encoder": recipe.encoder.model_copy(update={"name": "qwen2_5_vl_vision", "config": vision}),
        "projector": recipe.projector.model_copy(update={"name": "qwen2_5_vl_merger"}),
        "backbone": recipe.backbone.model_copy(update={"name": "qwen2_5_vl_text"}),
        "weights": recipe.weights.model_copy(update={"format": "qwen2_5_vl_hf"}),
    })


def test_qwen2_5_vl_checkpoint_loads_and_matches_transformers(tmp_path):
    hf_model = make_hf_qwen2_5_vl(1)
    for layout, write in LAYOUTS.items():
        folder = write(tmp_path / layout, hf_model)
        model = build_retriever(vlzoo.registry(), qwen2_5_recipe(), weights=folder).eval()
        assert model.recipe.encoder.config["window_size"] == 56
        assert_same_weights(model, hf_model)
        assert_same_hidden_states(model, hf_model)


def test_checkpoint_of_another_family_is_an_error(tmp_path, hf_qwen2_vl):
    folder = write_save_pretrained(tmp_path / "qwen2_vl", hf_qwen2_vl)
    with pytest.raises(CheckpointError, match="'qwen2_5_vl'.*'qwen2_vl'"):
        build_retriever(vlzoo.registry(), qwen2_5_recipe(), weights=folder)


# ---- 4. a LoRA adapter merged with weights="pretrained" ---------------------------------------------------


def test_pretrained_merges_the_recipe_adapter(tmp_path, hf_qwen2_vl):
    """A colpali-engine style checkpoint (v4 layout + custom_text_proj) and a PEFT adapter in its names."""
    base = write_save_pretrained(tmp_path / "base", hf_qwen2_vl)
    state = load_file(str(base / "model.safetensors"))
    generator = torch.Generator().manual_seed(3)
    state["custom_text_proj.weight"] = torch.randn(128, 64, generator=generator)
    state["custom_text_proj.bias"] = torch.randn(128, generator=generator)
    save_file(state, str(base / "model.safetensors"))

    r, alpha = 4, 8
    targets = {"model.layers.1.self_attn.q_proj": (64, 64), "model.layers.0.mlp.down_proj": (64, 128),
               "custom_text_proj": (128, 64)}
    adapter = {}
    for module, (out_features, in_features) in targets.items():
        adapter[f"base_model.model.{module}.lora_A.weight"] = torch.randn(r, in_features, generator=generator)
        adapter[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_features, r, generator=generator)
    folder = tmp_path / "adapter"
    folder.mkdir()
    save_file(adapter, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "lora_dropout": 0.1, "bias": "none",
        "target_modules": "(.*(model).*(down_proj|q_proj).*$|.*(custom_text_proj).*$)", "modules_to_save": None,
        "init_lora_weights": "gaussian", "use_dora": False, "use_rslora": False}), encoding="utf-8")

    recipe = vlzoo.recipe("colqwen2_tiny")
    plain = build_retriever(vlzoo.registry(), recipe, weights=str(base))
    weights = {"source": str(base), "adapter": str(folder), "format": "qwen2_vl_hf"}
    merged = build_retriever(vlzoo.registry(), recipe, weights="pretrained", overrides={"weights": weights})
    assert type(merged).__name__ == "Retriever" and not adapted_modules(merged)
    ours = {"model.layers.1.self_attn.q_proj": "language_model.model.layers.1.self_attn.q_proj",
            "model.layers.0.mlp.down_proj": "language_model.model.layers.0.mlp.down_proj",
            "custom_text_proj": "heads.custom_text_proj.proj"}
    before, after = plain.state_dict(), merged.state_dict()
    assert torch.equal(before["heads.custom_text_proj.proj.bias"], state["custom_text_proj.bias"])
    for module, name in ours.items():
        delta = alpha / r * adapter[f"base_model.model.{module}.lora_B.weight"] @ adapter[
            f"base_model.model.{module}.lora_A.weight"]
        assert torch.allclose(after[f"{name}.weight"], before[f"{name}.weight"] + delta, atol=1e-5), name
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == {f"{name}.weight" for name in ours.values()}

    # Without "pretrained", the adapter is not applied; a broken adapter is a CheckpointError.
    adapter["base_model.model.model.layers.9.mlp.up_proj.lora_A.weight"] = torch.zeros(r, 64)
    save_file(adapter, str(folder / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="not Linear layers"):
        build_retriever(vlzoo.registry(), recipe, weights="pretrained", overrides={"weights": weights})


# ---- 5. LoRA rules, full-size models, CLI, training -----------------------------------------------------


LM_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                  "mlp.up_proj", "mlp.down_proj")


@pytest.mark.parametrize("name, layers", [("colqwen2_tiny", 2), ("colqwen2", 28), ("colqwen2.5", 36)])
def test_default_lora_adapts_lm_projections_and_head(name, layers):
    model = vlzoo.build(name, device="meta" if name != "colqwen2_tiny" else None)
    peft_model = apply_lora(model, vlzoo.registry().rule_set(model.recipe.lora))
    expected = {f"language_model.model.layers.{i}.{p}" for i in range(layers) for p in LM_PROJECTIONS}
    expected.add("heads.custom_text_proj.proj")
    assert set(adapted_modules(peft_model)) == expected
    base = peft_model.get_base_model()
    trainable = [n for n, p in base.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any(n.startswith(("vision_tower.", "projector.")) for n in trainable)


# Qwen2-VL-2B-Instruct's config.json (transformers 4 format), the base of vidore/colqwen2-base.
QWEN2_VL_2B = {
    "architectures": ["Qwen2VLForConditionalGeneration"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
    "hidden_size": 1536, "initializer_range": 0.02, "intermediate_size": 8960, "max_position_embeddings": 32768,
    "max_window_layers": 28, "model_type": "qwen2_vl", "num_attention_heads": 12, "num_hidden_layers": 28,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.41.2", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
    "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                      "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
                      "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
}
# Qwen2.5-VL-3B-Instruct's config.json, the base of vidore/colqwen2.5-base.
QWEN2_5_VL_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 128000,
    "max_window_layers": 70, "model_type": "qwen2_5_vl", "num_attention_heads": 16, "num_hidden_layers": 36,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.41.2", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                      "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14,
                      "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
}


@pytest.mark.parametrize("name, hf_config, hf_cls", [
    ("colqwen2", QWEN2_VL_2B, Qwen2VLForConditionalGeneration),
    ("colqwen2.5", QWEN2_5_VL_3B, Qwen2_5_VLForConditionalGeneration),
])
def test_full_size_matches_transformers_on_meta(name, hf_config, hf_cls):
    """The catalog's full-size recipe is the published architecture: config.json agrees, and every tensor of
    transformers' model (but the LM head) has a same-shaped parameter in the retriever, and nothing more."""
    registry = vlzoo.registry()
    recipe = registry.recipe(name)
    architecture = checkpoint_format(registry, recipe).architecture(hf_config)
    for slot in ("encoder", "projector", "backbone"):
        ours = registry.component(slot, getattr(recipe, slot).name).parse_config(getattr(recipe, slot).config, slot)
        theirs = ours.model_validate({**getattr(recipe, slot).config, **architecture[slot]["config"]})
        assert ours == theirs, slot
    assert architecture["processor"]["config"]["image_token_id"] == recipe.processor.config["image_token_id"]

    model = vlzoo.build(name, device="meta")
    with torch.device("meta"):
        reference = hf_cls(hf_cls.config_class.from_dict(hf_config))
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items() if not k.startswith("lm_head.")}
    ours = {hf_name(k): tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("heads.")}
    assert ours == theirs
    assert model.heads["custom_text_proj"].proj.weight.shape == (128, hf_config["hidden_size"])
    assert not [n for n, _ in model.named_parameters() if "lm_head" in n]
    if name == "colqwen2":
        assert model.vision_tower.model.patch_embed.proj.weight.shape == (1280, 3, 2, 14, 14)
        assert model.projector.merger.mlp[2].weight.shape == (1536, 5120)
        assert model.language_model.model.layers[27].self_attn.k_proj.weight.shape == (256, 1536)
        assert model.language_model.model.layers[0].mlp.gate_proj.weight.shape == (8960, 1536)


def test_cli_lists_the_colqwen_models(capsys):
    assert main(["list", "colqwen*"]) == 0
    out = capsys.readouterr().out
    for name in ("colqwen2 ", "colqwen2.5 ", "colqwen2_tiny "):
        assert name in out


def test_training_a_few_steps(tmp_path):
    config = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text(encoding="utf-8"))
    config["model"]["name"] = "colqwen2_tiny"
    config["data"]["train"]["synthetic"]["pages"] = 16
    config["data"]["eval"]["synthetic"]["pages"] = 8
    config["optim"].update(max_steps=3, per_device_batch_size=8, warmup_steps=1)
    config["eval"]["batch_size"] = 8
    config["logging"]["interval"] = 1
    config["output"]["dir"] = str(tmp_path / "run")
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", "--model", "colqwen2_tiny", str(path)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert "ndcg@5" in metrics["before"] and "ndcg@5" in metrics["after"]
    assert metrics["train"]["epoch"] > 0
    loaded = vlzoo.load(tmp_path / "run")
    assert loaded.recipe.name == "colqwen2_tiny"
    assert loaded.embed_images(pages()[:2]).shape[0] == 2
