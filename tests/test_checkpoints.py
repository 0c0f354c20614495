"""Loading transformers LLaVA checkpoints into colllava retrievers, and saving/loading vlzoo folders.

A tiny `LlavaForConditionalGeneration` with the `colllava_tiny` architecture is the reference: its weights
are written in every layout transformers uses, loaded with `vlzoo.build(..., weights=folder)`, and the
retriever must then hold exactly the same tensors and compute the same hidden states.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlavaConfig, LlavaForConditionalGeneration, Qwen2Config, SiglipVisionConfig

import vlzoo
from tests.conftest import make_page
from vlzoo_core.model.builder import checkpoint_format
from vlzoo_core.errors import CheckpointError, VlzooError
from vlzoo_core.model.weights import load_checkpoint

TOKENIZER_IMAGE_TOKEN_ID = 3  # `<image>` in the bundled tiny tokenizer

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=56, patch_size=14, vision_use_head=False)
TINY_TEXT = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
TINY_LLAVA = dict(image_token_index=TOKENIZER_IMAGE_TOKEN_ID, vision_feature_layer=-1,
                  vision_feature_select_strategy="full", projector_hidden_act="gelu")

# Our parameter prefix -> the prefix of the same tensor in transformers 5's LlavaForConditionalGeneration.
OURS_TO_HF = {
    "vision_tower.model.": "model.vision_tower.",
    "projector.": "model.multi_modal_projector.",
    "language_model.model.": "model.language_model.",
}
# transformers 5 module layout -> the legacy transformers 4 layout of the Hub checkpoints.
HF5_TO_HF4 = {
    "model.vision_tower.": "vision_tower.vision_model.",
    "model.multi_modal_projector.": "multi_modal_projector.",
    "model.language_model.": "language_model.model.",
    "lm_head.": "language_model.lm_head.",
}


def rename(key: str, prefixes: dict[str, str]) -> str | None:
    for source, target in prefixes.items():
        if key.startswith(source):
            return target + key[len(source):]
    return None


def make_hf_model(seed: int = 0, *, vision=None, text=None, llava=None) -> LlavaForConditionalGeneration:
    """A random tiny LLaVA in fp32 eval mode; every tensor is perturbed so none keeps its init value."""
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(**{**TINY_VISION, **(vision or {})}),
        text_config=Qwen2Config(**{**TINY_TEXT, **(text or {})}),
        **{**TINY_LLAVA, **(llava or {})},
    )
    model = LlavaForConditionalGeneration(config).float().eval()
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def hf_state(model: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def write_config(folder: Path, model: LlavaForConditionalGeneration) -> None:
    (folder / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2, default=str), encoding="utf-8")


def write_v5(folder: Path, model) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, model)
    save_file(hf_state(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def legacy_state(model) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in hf_state(model).items():
        legacy = rename(key, HF5_TO_HF4)
        assert legacy is not None, key
        state[legacy] = value
    return state


def write_v4(folder: Path, model) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, model)
    save_file(legacy_state(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def write_v4_sharded(folder: Path, model) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, model)
    state = legacy_state(model)
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for shard, shard_keys in shards.items():
        save_file({key: state[key] for key in shard_keys}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard_keys, shard))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def write_save_pretrained(folder: Path, model) -> Path:
    model.save_pretrained(folder)
    return folder


def write_save_pretrained_sharded(folder: Path, model) -> Path:
    model.save_pretrained(folder, max_shard_size="300KB")
    return folder


LAYOUTS = {
    "v4_hub": write_v4,
    "v5_modules": write_v5,
    "v5_save_pretrained": write_save_pretrained,
    "v4_hub_sharded": write_v4_sharded,
    "v5_save_pretrained_sharded": write_save_pretrained_sharded,
}


def checkpoint_keys(folder: Path) -> set[str]:
    keys = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            keys.update(handle.keys())
    return keys


def assert_same_backbone(model, hf_model) -> None:
    """Every non-head tensor of the retriever equals the HF model's tensor of the same role."""
    ours = {key: value for key, value in model.state_dict().items() if not key.startswith("heads.")}
    reference = hf_model.state_dict()
    mapped = {}
    for key in ours:
        hf_key = rename(key, OURS_TO_HF)
        assert hf_key is not None, f"unexpected retriever parameter {key}"
        mapped[key] = hf_key
    expected_hf = {key for key in reference if not key.startswith("lm_head.")}
    assert set(mapped.values()) == expected_hf
    for key, hf_key in mapped.items():
        assert ours[key].dtype == reference[hf_key].dtype, key
        assert torch.equal(ours[key], reference[hf_key]), key


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_model(0)


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory, hf_model) -> Path:
    return write_v4(tmp_path_factory.mktemp("hub") / "llava", hf_model)


# ---- 1. every layout loads, tensor for tensor --------------------------------------------------------------


def test_layouts_use_the_key_names_of_transformers(tmp_path, hf_model):
    """The fixtures really are the layouts they claim to be."""
    v4 = checkpoint_keys(write_v4(tmp_path / "v4", hf_model))
    assert "language_model.lm_head.weight" in v4
    assert any(key.startswith("vision_tower.vision_model.") for key in v4)
    assert all(key.startswith(("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.",
                               "language_model.lm_head.")) for key in v4)
    v5 = checkpoint_keys(write_v5(tmp_path / "v5", hf_model))
    assert "lm_head.weight" in v5 and "model.language_model.embed_tokens.weight" in v5
    assert all(key.startswith(("model.vision_tower.", "model.multi_modal_projector.", "model.language_model.",
                               "lm_head.")) for key in v5)
    saved = checkpoint_keys(write_save_pretrained(tmp_path / "saved", hf_model))
    # transformers 5 writes the legacy names on save, but the vision tower without "vision_model.".
    assert saved, "save_pretrained wrote no safetensors"
    assert "language_model.lm_head.weight" in saved
    assert any(key.startswith("vision_tower.embeddings.") for key in saved)
    assert not any(key.startswith("vision_tower.vision_model.") for key in saved)
    assert len(saved) == len(v5) == len(v4)
    assert not list((tmp_path / "saved").glob("*.bin"))
    sharded = write_v4_sharded(tmp_path / "sharded", hf_model)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2
    assert checkpoint_keys(sharded) == v4
    sp_sharded = write_save_pretrained_sharded(tmp_path / "sp_sharded", hf_model)
    assert (sp_sharded / "model.safetensors.index.json").exists()
    assert len(list(sp_sharded.glob("*.safetensors"))) >= 2
    assert checkpoint_keys(sp_sharded) == saved


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_checkpoint_layout_loads_every_tensor(layout, tmp_path, hf_model):
    folder = LAYOUTS[layout](tmp_path / layout, hf_model)
    assert (folder / "config.json").exists()

    model = vlzoo.build("colllava_tiny", weights=folder)
    assert_same_backbone(model, hf_model)
    assert not [name for name, _ in model.named_parameters() if "lm_head" in name]

    # load_checkpoint itself: only the retrieval heads are missing, and nothing is unexpected.
    reg = vlzoo.registry()
    fmt = checkpoint_format(reg, reg.recipe("colllava_tiny"))
    fresh = vlzoo.build("colllava_tiny")
    heads = sorted(key for key in fresh.state_dict() if key.startswith("heads."))
    assert heads
    heads_before = {key: fresh.state_dict()[key].clone() for key in heads}
    missing = load_checkpoint(fresh, folder, fmt, allow_missing=["heads."])
    assert sorted(missing) == heads
    assert_same_backbone(fresh, hf_model)
    for key in heads:
        assert torch.equal(fresh.state_dict()[key], heads_before[key]), f"{key} changed although not in the checkpoint"

    # Without the allowance, the missing heads are an error that names them.
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(vlzoo.build("colllava_tiny"), folder, fmt)


def test_legacy_siglip_pooling_head_is_dropped(tmp_path):
    """A SigLIP with its attention-pooling head (vision_use_head=True) loads: LLaVA never uses the head."""
    hf = make_hf_model(3, vision={"vision_use_head": True})
    state = legacy_state(hf)
    assert any(key.startswith("vision_tower.vision_model.head.") for key in state)
    folder = write_v4(tmp_path / "with_head", hf)
    model = vlzoo.build("colllava_tiny", weights=folder)
    ours = model.state_dict()
    reference = hf.state_dict()
    for key, value in ours.items():
        if not key.startswith("heads."):
            assert torch.equal(value, reference[rename(key, OURS_TO_HF)]), key


# ---- 2. the same hidden states as transformers -------------------------------------------------------------


def our_hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    features = model.image_features(batch["pixel_values"]) if "pixel_values" in batch else None
    return model._language_model(batch["input_ids"], batch["attention_mask"], None, features)


@torch.no_grad()
def assert_same_hidden_states(model, hf_model, seed: int = 1) -> None:
    model.eval()
    hf_model.eval()
    pages = [make_page(seed), make_page(seed + 1, size=(40, 90))]
    documents = model.processor.process_images(pages)
    assert (documents["input_ids"] == hf_model.config.image_token_id).any()
    expected = hf_model.model(input_ids=documents["input_ids"], pixel_values=documents["pixel_values"],
                              attention_mask=documents["attention_mask"]).last_hidden_state
    actual = our_hidden_states(model, documents)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-5

    # The hook on the language model sees the same hidden states during `encode_documents`.
    seen = []
    handle = model.language_model.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        model(**documents)
    finally:
        handle.remove()
    assert (seen[0] - expected).abs().max().item() <= 1e-5

    queries = model.processor.process_queries(["red circle", "which table lists the yearly revenue?"])
    assert (queries["attention_mask"] == 0).any(), "want one padded query"
    assert not (queries["input_ids"] == hf_model.config.image_token_id).any()
    expected = hf_model.model(input_ids=queries["input_ids"], attention_mask=queries["attention_mask"]).last_hidden_state
    actual = our_hidden_states(model, queries)
    valid = queries["attention_mask"].bool()
    assert (actual[valid] - expected[valid]).abs().max().item() <= 1e-5
    assert (actual - expected).abs().max().item() <= 1e-5


def test_hidden_states_match_transformers(hub_folder, hf_model):
    model = vlzoo.build("colllava_tiny", weights=hub_folder, dtype="float32").eval()
    assert model.dtype == torch.float32
    with torch.no_grad():
        pixel_values = model.processor.process_images([make_page(5)])["pixel_values"]
        expected = torch.cat(list(hf_model.model.get_image_features(
            pixel_values=pixel_values, vision_feature_layer=hf_model.config.vision_feature_layer,
            vision_feature_select_strategy=hf_model.config.vision_feature_select_strategy).pooler_output))
        actual = model.image_features(pixel_values)
        assert (actual.reshape(expected.shape) - expected).abs().max().item() <= 1e-5
    assert_same_hidden_states(model, hf_model)


# ---- 3. the architecture comes from the checkpoint's config.json -------------------------------------------


def test_architecture_comes_from_the_checkpoint_config(tmp_path):
    hf = make_hf_model(
        7,
        vision={"num_hidden_layers": 3, "intermediate_size": 48},
        text={"num_hidden_layers": 3, "intermediate_size": 96, "num_key_value_heads": 4,
              "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0}},
        llava={"vision_feature_layer": -2, "vision_feature_select_strategy": "default",
               "projector_hidden_act": "silu"},
    )
    folder = write_v4(tmp_path / "other", hf)
    model = vlzoo.build("colllava_tiny", weights=folder).eval()

    layers = model.language_model.model.layers
    assert len(layers) == 3
    assert layers[0].mlp.gate_proj.out_features == 96
    assert layers[0].self_attn.k_proj.out_features == 4 * (64 // 4)
    assert len(model.vision_tower.model.encoder.layers) == 3
    assert model.vision_tower.model.encoder.layers[0].mlp.fc1.out_features == 48
    assert model.recipe.backbone.config["num_hidden_layers"] == 3
    assert model.recipe.backbone.config["rope_theta"] == 5000.0
    assert model.recipe.encoder.config["feature_layer"] == -2
    assert model.recipe.projector.config["hidden_act"] == "silu"
    # "default" drops the first patch feature, as transformers does.
    assert model.vision_tower.num_patches(56, 56) == (56 // 14) ** 2 - 1
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(model.projector.act(x), torch.nn.functional.silu(x))
    assert_same_backbone(model, hf)
    assert_same_hidden_states(model, hf, seed=11)

    # The registered recipe is unchanged for the next build.
    assert vlzoo.build("colllava_tiny").language_model.model.config.num_hidden_layers == 2


def test_transformers4_config_json_of_the_hub(tmp_path):
    """A config.json as transformers 4 wrote it for the Hub checkpoints: partial sub-configs, a flat
    `rope_theta`, `torch_dtype`, tied word embeddings."""
    legacy_config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "image_token_index": TOKENIZER_IMAGE_TOKEN_ID,
        "model_type": "llava",
        "projector_hidden_act": "gelu",
        "text_config": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64,
                        "intermediate_size": 128, "max_position_embeddings": 512, "num_attention_heads": 4,
                        "num_hidden_layers": 2, "num_key_value_heads": 2, "rope_theta": 5000.0,
                        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 512},
        "torch_dtype": "float32",
        "transformers_version": "4.41.0.dev0",
        "vision_config": {"hidden_size": 32, "image_size": 56, "intermediate_size": 64,
                          "model_type": "siglip_vision_model", "num_attention_heads": 2, "num_hidden_layers": 2,
                          "patch_size": 14, "vision_use_head": False},
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
    }
    torch.manual_seed(5)
    hf = LlavaForConditionalGeneration(LlavaConfig.from_dict(legacy_config)).float().eval()
    generator = torch.Generator().manual_seed(55)
    with torch.no_grad():
        for parameter in hf.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    folder = tmp_path / "hub_v4_config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(legacy_config), encoding="utf-8")
    save_file(legacy_state(hf), str(folder / "model.safetensors"))

    model = vlzoo.build("colllava_tiny", weights=folder).eval()
    assert model.recipe.backbone.config["rope_theta"] == 5000.0
    assert_same_backbone(model, hf)
    assert_same_hidden_states(model, hf, seed=17)


def test_overrides_apply_after_the_checkpoint_config(hub_folder, hf_model):
    model = vlzoo.build("colllava_tiny", weights=hub_folder, backbone={"config": {"attn_implementation": "eager"}})
    assert model.recipe.backbone.config["attn_implementation"] == "eager"
    assert model.language_model.model.config._attn_implementation == "eager"
    assert_same_backbone(model, hf_model)
    with pytest.raises(CheckpointError, match="shape"):
        vlzoo.build("colllava_tiny", weights=hub_folder, backbone={"config": {"intermediate_size": 100}})


# ---- 4. broken checkpoints fail with a CheckpointError that names the problem ----------------------------


def broken_copy(tmp_path: Path, hub_folder: Path, name: str, edit) -> Path:
    """A copy of the reference (Hub layout) checkpoint with `edit` applied to its state dict."""
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(hub_folder / "config.json", folder / "config.json")
    state = {}
    with safe_open(str(hub_folder / "model.safetensors"), "pt") as handle:
        for key in handle.keys():
            state[key] = handle.get_tensor(key)
    edit(state)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def check_error(folder, *fragments: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        vlzoo.build("colllava_tiny", weights=folder)
    assert isinstance(info.value, VlzooError)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


def test_wrong_shape_is_an_error(tmp_path, hub_folder):
    key = "language_model.model.layers.1.mlp.down_proj.weight"
    folder = broken_copy(tmp_path, hub_folder, "shape", lambda s: s.__setitem__(key, torch.zeros(64, 127)))
    check_error(folder, key, "(64, 127)", "(64, 128)")


def test_unexpected_key_is_an_error(tmp_path, hub_folder):
    key = "language_model.model.layers.0.self_attn.rotary.inv_freq"
    folder = broken_copy(tmp_path, hub_folder, "extra", lambda s: s.__setitem__(key, torch.ones(8)))
    check_error(folder, "1 unexpected", key)


def test_missing_key_is_an_error(tmp_path, hub_folder):
    key = "multi_modal_projector.linear_2.bias"
    folder = broken_copy(tmp_path, hub_folder, "missing", lambda s: s.pop(key))
    check_error(folder, "1 missing", "projector.linear_2.bias")


def test_pickled_checkpoint_is_refused(tmp_path, hub_folder, hf_model):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(hub_folder / "config.json", folder / "config.json")
    torch.save(legacy_state(hf_model), folder / "pytorch_model.bin")
    check_error(folder, "safetensors", str(folder))


def test_config_of_another_model_type_is_an_error(tmp_path, hub_folder):
    folder = tmp_path / "qwen2"
    folder.mkdir()
    Qwen2Config(**TINY_TEXT).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "qwen2"
    shutil.copy(hub_folder / "model.safetensors", folder / "model.safetensors")
    check_error(folder, "'llava'", "'qwen2'")


def test_missing_config_is_an_error(tmp_path, hub_folder):
    folder = tmp_path / "no_config"
    folder.mkdir()
    shutil.copy(hub_folder / "model.safetensors", folder / "model.safetensors")
    check_error(folder, "config.json")


def test_index_naming_a_missing_shard_is_an_error(tmp_path, hf_model):
    folder = write_v4_sharded(tmp_path / "lost_shard", hf_model)
    (folder / "model-00002-of-00002.safetensors").unlink()
    check_error(folder, "model-00002-of-00002.safetensors")


def test_corrupt_safetensors_is_an_error(tmp_path, hub_folder):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    shutil.copy(hub_folder / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    check_error(folder, "model.safetensors")


@pytest.mark.parametrize("relative", [False, True])
def test_nonexistent_local_path_is_an_error_without_network(tmp_path, monkeypatch, relative):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: calls.append((a, k)))
    monkeypatch.chdir(tmp_path)
    path = "./no_such_checkpoint" if relative else str(tmp_path / "no" / "such" / "checkpoint")
    check_error(path, "no_such_checkpoint" if relative else path)
    assert calls == []


def test_weights_on_the_meta_device_is_an_error(hub_folder):
    with pytest.raises(VlzooError, match="meta"):
        vlzoo.build("colllava_tiny", weights=hub_folder, device="meta")


# ---- 5. save_pretrained / load round trip ------------------------------------------------------------------


def test_save_pretrained_then_load_round_trip(tmp_path):
    hf = make_hf_model(21, text={"num_hidden_layers": 3, "intermediate_size": 96})
    source = write_v4(tmp_path / "source", hf)
    model = vlzoo.build("colllava_tiny", weights=source).eval()
    with torch.no_grad():
        for parameter in model.heads.parameters():  # heads are new: make sure they round-trip too
            parameter.add_(0.1)
    pages = [make_page(31), make_page(32, size=(30, 70))]
    queries = ["red circle", "a longer query about the second page"]
    q_before, d_before = model.embed_queries(queries), model.embed_images(pages)

    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    shutil.rmtree(source)  # the saved folder must stand on its own

    files = [path for path in saved.rglob("*") if path.is_file()]
    weights = [path for path in files if path.suffix == ".safetensors"]
    assert weights
    assert not [path for path in files if path.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}]
    for path in files:
        head = path.read_bytes()[:4]
        assert not head.startswith(b"PK\x03\x04") and not head.startswith(b"\x80"), f"{path} looks pickled"

    loaded = vlzoo.load(saved)
    assert loaded.recipe == model.recipe
    assert len(loaded.language_model.model.layers) == 3
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key

    q_after, d_after = loaded.embed_queries(queries), loaded.embed_images(pages)
    assert torch.equal(q_before, q_after)
    assert torch.equal(d_before, d_after)
    assert q_before.shape[0] == 2 and d_before.shape[0] == 2
