"""Tests of the example plugin, the way a plugin author writes them: `vlzoo_core.testing` does the heavy lifting.

Run: python -m pytest -q examples/vlzoo-plugin-example/tests
"""

from __future__ import annotations

import importlib.metadata
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from vlzoo_core import ConfigError
from vlzoo_core.model.builder import apply_overrides, assemble
from vlzoo_core.model.lora import apply_lora, check_plan, count_parameters, plan_lora
from vlzoo_core.testing import CHECKS, check_components, check_hook_module, plugin_registry
from vlzoo_plugin_example.configs import MlpHeadConfig
from vlzoo_plugin_example.heads import MlpHead

TINY = "example_mlp_head_tiny"


@pytest.fixture(scope="module")
def registry():
    """An isolated registry: this plugin and colllava (whose components the recipes use), no entry points."""
    return plugin_registry(("colllava", "colllava.plugin"), ("example", "vlzoo_plugin_example.plugin"))


def test_hook_module_registers_lazily_without_torch():
    check_hook_module("vlzoo_plugin_example.plugin")


def test_registrations(registry):
    plugin = next(p for p in registry.plugins if p.name == "example")
    assert plugin.registered == ["head:mlp_head", "lora:example_mlp_head", "model:example_mlp_head_tiny",
                                 "model:example_mlp_head_interleave", "model:example_mix_tiny"]
    assert registry.component("head", "mlp_head").config is MlpHeadConfig


def test_tiny_recipe_conforms(registry):
    report = check_components(TINY, registry=registry)
    assert report.passed == list(CHECKS)
    assert report.multi_vector and report.dim == 128
    # 2 LM layers x q/k/v/o with LoRA, the projector's 2 Linear layers with LoRA, both MLP heads fully trained
    assert report.lora["matches"] == {"lm_attention": 8, "projector": 2, "mlp_heads": 2}


def test_mlp_head_alone():
    torch.manual_seed(0)
    head = MlpHead(MlpHeadConfig(dim=16, hidden_features=32), in_features=8)
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.out_features) == (8, 32, 16)
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = head(hidden, mask)
    assert out.shape == (2, 5, 16)
    assert torch.allclose(out[mask.bool()].norm(dim=-1), torch.ones(8), atol=1e-6)
    assert torch.all(out[~mask.bool()] == 0)
    assert MlpHead(MlpHeadConfig(), in_features=8).fc1.out_features == 8  # hidden width defaults to the input's


def test_head_options_are_validated(registry):
    recipe = registry.recipe(TINY)
    wider = apply_overrides(recipe, {"query_head": {"config": {"hidden_features": 96}},
                                     "document_head": {"config": {"hidden_features": 96}}})
    model = assemble(registry, wider, device="meta")
    assert model.heads["query_mlp"].fc1.out_features == 96
    typo = apply_overrides(recipe, {"query_head": {"config": {"hiden_features": 96}}})
    with pytest.raises(ConfigError, match="query_head.config.hiden_features: unknown field"):
        assemble(registry, typo, device="meta")


def test_full_size_rule_set_on_the_meta_device(registry):
    """What `vlzoo lora example_mlp_head_interleave` reports, without weights or memory."""
    recipe = registry.recipe("example_mlp_head_interleave")
    rule_set = registry.rule_set(recipe.lora)
    model = assemble(registry, recipe, device="meta")
    plan = plan_lora(model, rule_set)
    check_plan(plan)
    assert {name: len(found) for name, found in plan.matches.items()} == {
        "lm_attention": 96, "projector": 2, "mlp_heads": 2}
    expected = plan.expected_trainable_parameters(model)
    hidden, r = 1024, rule_set.r
    heads = 2 * ((hidden * hidden + hidden) + (hidden * 128 + 128))  # fc1 + fc2 with biases, fully trained
    lora = 24 * 4 * r * (hidden + hidden) + r * (1152 + hidden) + r * (hidden + hidden)
    assert expected == lora + heads
    assert count_parameters(apply_lora(model, rule_set))[0] == expected


def test_installed_entry_point():
    try:
        distribution = importlib.metadata.distribution("vlzoo-plugin-example")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("not installed: pip install ./examples/vlzoo-plugin-example")
    (entry_point,) = [ep for ep in distribution.entry_points if ep.group == "vlzoo"]
    assert (entry_point.name, entry_point.value) == ("example", "vlzoo_plugin_example.plugin")
    assert distribution.version == "0.1.0"
