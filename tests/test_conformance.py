"""`vlzoo_core.testing`: the conformance helper passes on colllava_tiny and names the check that a broken
component fails.

Broken components are registered by a test plugin in an isolated registry (with colllava and the catalog, no
entry points) and swapped into colllava_tiny through recipe overrides, one defect at a time.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

import vlzoo
from colllava.configs import LlavaProcessorConfig, LlavaProjectorConfig, Qwen2BackboneConfig, SiglipEncoderConfig
from colllava.processor import LlavaProcessor, build_processor
from colllava.qwen2 import Qwen2Backbone
from colllava.siglip import SiglipEncoder
from vlzoo_core import HeadConfig, Projector, RetrievalHead, hookimpl
from vlzoo_core.testing import (
    CHECKS,
    PAGE_SIZES,
    SAMPLE_QUERIES,
    ConformanceError,
    check_components,
    check_hook_module,
    check_retriever,
    plugin_registry,
    sample_pages,
)

MODULE = __name__  # factories below are referred to as f"{MODULE}:Name", like a plugin's
# Fewer inputs than the defaults, for the tests after the first (the checks are the same).
SMALL = {"queries": SAMPLE_QUERIES[:2], "pages": sample_pages(PAGE_SIZES[:2])}


# ---- deliberately broken components ----------------------------------------------------------------------


class UnnormalisedHead(RetrievalHead):
    """Masks padding but never L2-normalises."""

    multi_vector = True

    def __init__(self, config: HeadConfig, in_features: int) -> None:
        super().__init__()
        self.dim = config.dim
        self.proj = nn.Linear(in_features, config.dim)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.proj(hidden_states) * mask.unsqueeze(-1)


class LeakyHead(UnnormalisedHead):
    """Normalises, but leaves unit vectors at padding positions instead of zeros."""

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(hidden_states), dim=-1)


class PaddingMeanHead(UnnormalisedHead):
    """Single vector: the mean over every position, padding included."""

    multi_vector = False

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(hidden_states.mean(dim=1)), dim=-1)


class BypassHead(UnnormalisedHead):
    """Reads its Linear's weights directly, so a LoRA adapter on `proj` would never be used."""

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vectors = F.normalize(F.linear(hidden_states, self.proj.weight, self.proj.bias), dim=-1)
        return vectors * mask.unsqueeze(-1)


class UnsavedScaleHead(UnnormalisedHead):
    """Keeps a random per-dimension scale in a non-persistent buffer: save_pretrained does not write it."""

    def __init__(self, config: HeadConfig, in_features: int) -> None:
        super().__init__(config, in_features)
        self.register_buffer("scale", torch.rand(config.dim) + 0.5, persistent=False)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(hidden_states) * self.scale, dim=-1) * mask.unsqueeze(-1)


class LooseHeadConfig(BaseModel):
    """Accepts (and silently ignores) unknown keys."""

    dim: int = 128
    bias: bool = True


class MaskBlindQwen2(Qwen2Backbone):
    """Ignores the attention mask: fine with right padding (causal attention never looks ahead), wrong with
    left padding, where every valid token attends to the pads in front of it."""

    def forward(self, inputs_embeds, attention_mask, position_ids=None):
        return super().forward(inputs_embeds, torch.ones_like(attention_mask), position_ids)


class LeftPaddedLlava(LlavaProcessor):
    """The LLaVA processor with padding moved to the left, and position ids that count valid tokens only, so a
    backbone that honours the mask is still padding-invariant."""

    def process_queries(self, queries):
        return left_padded(super().process_queries(queries))

    def process_images(self, images):
        return left_padded(super().process_images(images))


def left_padded(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mask = batch["attention_mask"]
    shifts = (mask.shape[1] - mask.sum(dim=1)).tolist()
    batch = dict(batch)
    for key in ("input_ids", "attention_mask"):
        batch[key] = torch.stack([row.roll(int(shift)) for row, shift in zip(batch[key], shifts)])
    batch["position_ids"] = (batch["attention_mask"].cumsum(dim=-1) - 1).clamp(min=0)
    return batch


def build_left_padded(config: LlavaProcessorConfig, *, encoder, source):
    plain = build_processor(config, encoder=encoder, source=source)
    return LeftPaddedLlava(config, plain.tokenizer, encoder)


class UndeclaredProjector(Projector):
    """Forgets to declare `in_features` / `out_features`."""

    def __init__(self, config, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(features)))


class PlainEncoder(nn.Module):
    """A working SigLIP wrapper that does not subclass vlzoo_core.VisionEncoder."""

    def __init__(self, config: SiglipEncoderConfig) -> None:
        super().__init__()
        self.inner = SiglipEncoder(config)
        self.hidden_size, self.layer_cls = self.inner.hidden_size, self.inner.layer_cls

    def forward(self, pixel_values, **image_inputs):
        return self.inner(pixel_values, **image_inputs)


class BrokenComponents:
    """A test plugin: registers each broken component under its own name, plus two bad LoRA rule sets."""

    @hookimpl
    def vlzoo_register(self, register):
        for name, factory in (("unnormalised", "UnnormalisedHead"), ("leaky", "LeakyHead"),
                              ("padding_mean", "PaddingMeanHead"), ("bypass", "BypassHead"),
                              ("unsaved_scale", "UnsavedScaleHead")):
            register.component("head", name, f"{MODULE}:{factory}", HeadConfig, f"broken head {name}")
        register.component("head", "loose_config", "vlzoo_core.model.heads:MultiVectorHead", LooseHeadConfig,
                           "a fine head with a config that ignores unknown keys")
        register.component("backbone", "mask_blind_qwen2", f"{MODULE}:MaskBlindQwen2", Qwen2BackboneConfig,
                           "Qwen2 that ignores the attention mask")
        register.component("processor", "left_padded_llava", f"{MODULE}:build_left_padded", LlavaProcessorConfig,
                           "LLaVA processor with left padding and mask-derived position ids")
        register.component("projector", "undeclared", f"{MODULE}:UndeclaredProjector", LlavaProjectorConfig,
                           "projector without in_features / out_features")
        register.component("encoder", "plain_siglip", f"{MODULE}:PlainEncoder", SiglipEncoderConfig,
                           "SigLIP that is not a VisionEncoder")
        register.lora_rules({"name": "silent_typo", "rules": [
            {"name": "lm_attention", "component": "language_model",
             "pattern": r"model\.layer\.\d+\.self_attn\.(q|k|v|o)_proj"},  # 'layer', not 'layers'
            {"name": "projector", "component": "projector", "pattern": r"linear_[12]"},
        ]})
        register.lora_rules({"name": "lora_on_embedding", "rules": [
            {"name": "embeddings", "component": "language_model", "pattern": r"model\.embed_tokens"},
        ]})


@pytest.fixture
def registry(isolated_registry):
    return isolated_registry(plugins=[("colllava", "colllava.plugin"), ("broken", BrokenComponents())],
                             catalogs=[vlzoo.catalog_path()])


def heads(name: str) -> dict:
    return {"query_head": {"name": name}, "document_head": {"name": name}}


# ---- it passes -----------------------------------------------------------------------------------------


def test_colllava_tiny_passes_every_check(registry):
    state = torch.random.get_rng_state()
    report = check_components("colllava_tiny", registry=registry)
    assert torch.equal(torch.random.get_rng_state(), state), "the seeded build must not move the caller's RNG"
    assert report.passed == list(CHECKS)
    assert report.skipped == {}
    assert report.multi_vector is True and report.dim == 128
    assert report.query_shape[0] == 4 and report.query_shape[2] == 128
    assert report.page_shape == (4, 26, 128)  # 16 image tokens + the prompt around them
    assert report.lora == {"rule_set": "colllava_default", "matches": {"lm_attention": 8, "projector": 2, "heads": 2},
                           "trainable": report.lora["trainable"], "total": report.lora["total"]}
    assert 0 < report.lora["trainable"] < report.lora["total"]
    assert "colllava_tiny: multi-vector, dim 128" in str(report)


def test_left_padding_is_padding_invariant_but_cannot_be_split_into_chunks(registry):
    """The control for the mask-blind case below: with left padding, position ids from the mask and a backbone
    that honours the mask, a query embeds the same alone and padded; but the trainer's GradCache trims each chunk
    at the right, which cuts valid tokens of a left-padded row, and `row_split` says so."""
    with pytest.raises(AssertionError) as info:
        check_components("colllava_tiny", registry=registry, overrides={"processor": {"name": "left_padded_llava"}},
                         **SMALL)
    assert info.value.check == "row_split"
    assert "right-padded" in str(info.value)


def test_check_retriever_on_a_built_model(registry):
    torch.manual_seed(0)
    model = vlzoo.build("colllava_tiny").train()
    report = check_retriever(model, registry=registry, **SMALL)
    assert report.passed == [c for c in CHECKS if c != "configs"]
    assert "configs" in report.skipped
    assert model.training, "the check restores the model's mode"
    with pytest.raises(AssertionError, match="'interfaces' failed.*expected a vlzoo_core.Retriever"):
        check_retriever(nn.Linear(2, 2), registry=registry)


# ---- it fails, naming the check ------------------------------------------------------------------------

BROKEN = [
    pytest.param(heads("unnormalised"), None, "unit_norm", "expected 1", id="head-does-not-normalise"),
    pytest.param(heads("leaky"), None, "padding_zeros", "not zero although the mask is off", id="head-leaks-padding"),
    pytest.param(heads("padding_mean"), None, "query_padding_invariance", "alone vs in a padded batch",
                 id="pooled-head-averages-padding"),
    pytest.param({"backbone": {"name": "mask_blind_qwen2"}, "processor": {"name": "left_padded_llava"}}, None,
                 "query_padding_invariance", "embeddings differ", id="backbone-ignores-mask-with-left-padding"),
    pytest.param(heads("bypass"), None, "lora_targets_used", "heads.custom_text_proj.proj",
                 id="head-bypasses-its-linear"),
    pytest.param(heads("unsaved_scale"), None, "round_trip", "differ after save_pretrained -> load",
                 id="head-state-not-saved"),
    pytest.param(heads("loose_config"), None, "configs", "accepts unknown keys", id="config-ignores-unknown-keys"),
    pytest.param({"projector": {"name": "undeclared"}}, None, "interfaces", "no positive int 'in_features'",
                 id="projector-declares-no-in-features"),
    pytest.param({"encoder": {"name": "plain_siglip"}}, None, "interfaces", "not a vlzoo_core.VisionEncoder",
                 id="encoder-is-not-a-vision-encoder"),
    pytest.param({}, "silent_typo", "lora_rules", "rule 'lm_attention'", id="rule-matches-nothing"),
    pytest.param({"lora": "lora_on_embedding"}, None, "lora_rules", "nn.Linear modules only",
                 id="recipe-rule-set-selects-no-linear"),
]


@pytest.mark.parametrize(("overrides", "lora", "check", "fragment"), BROKEN)
def test_broken_component_fails_its_check(registry, overrides, lora, check, fragment):
    with pytest.raises(AssertionError) as info:
        check_components("colllava_tiny", registry=registry, overrides=overrides, lora=lora, **SMALL)
    error = info.value
    assert isinstance(error, ConformanceError)
    assert error.check == check, str(error)
    message = str(error)
    assert message.startswith(f"conformance check {check!r} failed for model 'colllava_tiny': "), message
    assert fragment in message, message


def test_mask_blind_backbone_is_caught_only_with_left_padding(registry):
    """With right padding a causal backbone never sees the pads after a token, so ignoring the mask is harmless
    for valid tokens, and the check must not flag it."""
    report = check_components("colllava_tiny", registry=registry, round_trip=False,
                              overrides={"backbone": {"name": "mask_blind_qwen2"}}, **SMALL)
    assert "query_padding_invariance" in report.passed


# ---- plugin loading and hook modules --------------------------------------------------------------------


class ExplodingPlugin:
    @hookimpl
    def vlzoo_register(self, register):
        raise RuntimeError("boom while registering")


def test_plugin_registry_fails_on_a_plugin_that_does_not_load():
    registry = plugin_registry(("colllava", "colllava.plugin"))
    assert ("encoder", "siglip") in registry.components
    with pytest.raises(AssertionError, match=r"'plugin_load' failed for 'exploding'.*boom while registering"):
        plugin_registry(("colllava", "colllava.plugin"), ("exploding", ExplodingPlugin()))


def test_check_hook_module(tmp_path, monkeypatch):
    check_hook_module("colllava.plugin")
    (tmp_path / "heavy_hooks.py").write_text(
        "import torch\nfrom vlzoo_core import hookimpl\n\n@hookimpl\ndef vlzoo_register(register):\n    pass\n")
    (tmp_path / "no_hooks.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AssertionError, match=r"'hook_module' failed for hook module 'heavy_hooks'.*imports torch"):
        check_hook_module("heavy_hooks")
    with pytest.raises(AssertionError, match=r"'hook_module' failed.*no `vlzoo_register`"):
        check_hook_module("no_hooks")
    with pytest.raises(AssertionError, match=r"'hook_module' failed.*importing it failed"):
        check_hook_module("no_such_module_anywhere")


def test_importing_vlzoo_core_does_not_import_testing_or_torch(tmp_path):
    import subprocess

    code = ("import sys, vlzoo_core\n"
            "print(sorted(m for m in sys.modules if m in ('torch', 'vlzoo_core.testing')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
