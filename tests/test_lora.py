"""LoRA rule sets: what gets wrapped, what trains, rejection of bad rules, and merging."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

import vlzoo
from tests.conftest import make_page
from vlzoo_core.config import LoraRule, LoraRuleSet
from vlzoo_core.errors import LoraRuleError
from vlzoo_core.model.lora import adapted_modules, apply_lora, check_plan, count_parameters, plan_lora

TOL = 1e-5
QUERIES = ["red circle", "blue glyph AB 12", "x"]


def fresh_model(seed: int = 0):
    torch.manual_seed(seed)
    return vlzoo.build("colllava_tiny").eval()


def num_layers(model) -> int:
    return model.recipe.backbone.config["num_hidden_layers"]


def alternation(items) -> str:
    return "(" + "|".join(items) + ")"


# ---- rule-set strategy ------------------------------------------------------------------------------------


@st.composite
def rule_sets(draw, layers: int = 2):
    layer_ids = [str(i) for i in range(layers)]

    def layer_pattern():
        chosen = draw(st.lists(st.sampled_from(layer_ids), min_size=1, max_size=layers, unique=True))
        if len(chosen) == layers and draw(st.booleans()):
            return r"\d+"
        return alternation(chosen)

    lora_rules = []
    if draw(st.booleans()):
        projs = draw(st.lists(st.sampled_from("qkvo"), min_size=1, max_size=4, unique=True))
        lora_rules.append(("lm_attention", "language_model",
                           rf"model\.layers\.{layer_pattern()}\.self_attn\.{alternation(projs)}_proj"))
    if draw(st.booleans()):
        mlp = draw(st.lists(st.sampled_from(["gate", "up", "down"]), min_size=1, max_size=3, unique=True))
        lora_rules.append(("lm_mlp", "language_model",
                           rf"model\.layers\.{layer_pattern()}\.mlp\.{alternation(mlp)}_proj"))
    if draw(st.booleans()):
        which = draw(st.lists(st.sampled_from(["1", "2"]), min_size=1, max_size=2, unique=True))
        lora_rules.append(("projector", "projector", rf"linear_{alternation(which)}"))
    lora_heads: list[str] = []
    if draw(st.booleans()):
        lora_heads = draw(st.lists(st.sampled_from(["custom_text_proj", "image_proj"]), min_size=1, max_size=2,
                                   unique=True))
        lora_rules.append(("heads", "heads", rf"{alternation(lora_heads)}\.proj"))
    if not lora_rules:  # at least one LoRA rule; which one is drawn
        lora_rules.append(draw(st.sampled_from([
            ("projector", "projector", r"linear_[12]"),
            ("lm_o", "language_model", r"model\.layers\.\d+\.self_attn\.o_proj"),
            ("heads", "heads", r"image_proj\.proj"),
        ])))
        if lora_rules[0][0] == "heads":
            lora_heads = ["image_proj"]

    rules = [{"name": n, "component": c, "pattern": p} for n, c, p in lora_rules]
    free_heads = [h for h in ("custom_text_proj", "image_proj") if h not in lora_heads]
    if free_heads and draw(st.booleans()):
        head = draw(st.sampled_from(free_heads))
        pattern = head if draw(st.booleans()) else rf"{head}\.proj"  # the whole head, or just its Linear
        rules.append({"name": "full_head", "component": "heads", "pattern": pattern, "mode": "full"})
    rules = draw(st.permutations(rules))
    r = draw(st.sampled_from([1, 2, 4, 8]))
    init = draw(st.sampled_from(["gaussian", "default"]))
    return LoraRuleSet(name="drawn", rules=tuple(rules), r=r, alpha=2 * r, dropout=0.0, init=init)


def independent_selection(model: nn.Module, rule_set: LoraRuleSet) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """(lora targets, full targets) by full name, found by walking named_modules() ourselves."""
    lora: dict[str, nn.Module] = {}
    full: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        for rule in rule_set.rules:
            prefix = rule.component + "."
            if not name.startswith(prefix):
                continue
            if re.fullmatch(rule.pattern, name[len(prefix):]) is None:
                continue
            if rule.mode == "full":
                full[name] = module
            elif isinstance(module, nn.Linear):
                lora[name] = module
    return lora, full


# ---- properties -------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule_sets())
def test_drawn_rule_sets_wrap_exactly_the_matched_modules(rule_set):
    model = fresh_model()
    lora_targets, full_targets = independent_selection(model, rule_set)
    assert lora_targets, "the strategy always draws at least one LoRA rule"
    expected = sum(rule_set.r * (m.in_features + m.out_features) for m in lora_targets.values())
    expected += sum(p.numel() for m in full_targets.values() for p in m.parameters())
    vision_before = {n: p.detach().clone() for n, p in model.vision_tower.named_parameters()}

    plan = plan_lora(model, rule_set)
    assert plan.targets("lora") == sorted(lora_targets)
    assert plan.targets("full") == sorted(full_targets)
    assert plan.expected_trainable_parameters(model) == expected

    peft_model = apply_lora(model, rule_set)
    assert set(adapted_modules(peft_model)) == set(lora_targets)
    trainable, total = count_parameters(peft_model)
    assert trainable == expected

    base = peft_model.get_base_model()
    assert not any(p.requires_grad for p in base.vision_tower.parameters())
    for name, p in base.vision_tower.named_parameters():
        assert torch.equal(p, vision_before[name])
    # every trainable parameter belongs to an adapter on a selected module or to a fully trained module
    for name, p in base.named_parameters():
        if p.requires_grad:
            if "lora_" in name:
                assert name.split(".lora_")[0] in lora_targets, name
            else:
                assert any(name.startswith(f"{full}.") for full in full_targets), name
    # the adapters carry the drawn rank
    for name, module in base.named_modules():
        if name in lora_targets:
            a = module.lora_A["default"].weight
            b = module.lora_B["default"].weight
            assert a.shape == (rule_set.r, lora_targets[name].in_features)
            assert b.shape == (lora_targets[name].out_features, rule_set.r)


# ---- rejection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ghost",
    [
        {"name": "ghost", "component": "language_model", "pattern": r"model\.layers\.\d+\.self_attn\.qkv_proj"},
        {"name": "ghost", "component": "projector", "pattern": r"linear_3"},
        # matches a module, but not a Linear: LoRA has nothing to adapt
        {"name": "ghost", "component": "language_model", "pattern": r"model\.norm"},
        # the vision tower has q_proj, the language model does not at this relative path
        {"name": "ghost", "component": "vision_tower", "pattern": r"model\.layers\.\d+\.self_attn\.q_proj"},
    ],
    ids=["no_such_module", "projector", "not_linear", "wrong_component"],
)
def test_rule_matching_nothing_is_rejected_naming_the_rule(ghost):
    rule_set = LoraRuleSet(name="bad", rules=(
        {"name": "projector_ok", "component": "projector", "pattern": r"linear_1"},
        ghost,
    ), r=2)
    model = fresh_model()
    plan = plan_lora(model, rule_set)
    assert plan.unmatched == ["ghost"]
    with pytest.raises(LoraRuleError) as info:
        check_plan(plan)
    assert "ghost" in str(info.value) and "projector_ok" not in str(info.value)
    with pytest.raises(LoraRuleError) as info:
        apply_lora(fresh_model(), rule_set)
    assert "ghost" in str(info.value)


@pytest.mark.parametrize("pattern", [r"model\.layers\.(\d+", r"linear_[12", r"*proj", r"(?P<x>a)(?P<x>b)"])
def test_invalid_regex_is_rejected_at_construction(pattern):
    with pytest.raises(ValidationError):
        LoraRuleSet(name="bad", rules=({"name": "broken", "component": "projector", "pattern": pattern},))
    with pytest.raises(ValidationError):
        LoraRule(name="broken", component="projector", pattern=pattern)


def test_rule_set_validation():
    with pytest.raises(ValidationError):
        LoraRuleSet(name="empty", rules=())
    with pytest.raises(ValidationError):
        LoraRuleSet(name="dup", rules=(
            {"name": "a", "component": "projector", "pattern": "linear_1"},
            {"name": "a", "component": "projector", "pattern": "linear_2"},
        ))
    with pytest.raises(ValidationError):
        LoraRuleSet(name="badslot", rules=({"name": "a", "component": "lm_head", "pattern": "x"},))


def test_module_selected_for_both_lora_and_full_training_is_rejected():
    rule_set = LoraRuleSet(name="clash", rules=(
        {"name": "lora_head", "component": "heads", "pattern": r"image_proj\.proj"},
        {"name": "full_head", "component": "heads", "pattern": r"image_proj\.proj", "mode": "full"},
    ), r=2)
    with pytest.raises(LoraRuleError):
        plan_lora(fresh_model(), rule_set)
    with pytest.raises(LoraRuleError):
        apply_lora(fresh_model(), rule_set)


def test_lora_inside_a_fully_trained_module_is_rejected():
    """LoRA on heads.image_proj.proj while the whole heads.image_proj is fully trained is contradictory."""
    rule_set = LoraRuleSet(name="nested", rules=(
        {"name": "lora_head", "component": "heads", "pattern": r"image_proj\.proj"},
        {"name": "full_head", "component": "heads", "pattern": r"image_proj", "mode": "full"},
    ), r=2)
    with pytest.raises(LoraRuleError):
        apply_lora(fresh_model(), rule_set)


def test_rule_set_with_only_full_rules():
    """A rule set that only fully trains a head is valid data: it must train exactly that head,
    or be refused with a LoraRuleError (a user-facing error), not crash inside peft."""
    rule_set = LoraRuleSet(name="head_only", rules=(
        {"name": "full_head", "component": "heads", "pattern": r"image_proj", "mode": "full"},
    ), r=2)
    model = fresh_model()
    head_params = sum(p.numel() for p in model.heads.image_proj.parameters())
    try:
        peft_model = apply_lora(model, rule_set)
    except LoraRuleError:
        return
    assert adapted_modules(peft_model) == []
    assert count_parameters(peft_model)[0] == head_params


# ---- the default rule set ---------------------------------------------------------------------------------


def test_default_rule_set_plan_for_tiny():
    """In-process equivalent of `vlzoo lora colllava_tiny`."""
    model = fresh_model()
    assert model.recipe.lora == "colllava_default"
    rule_set = vlzoo.registry().rule_set(model.recipe.lora)
    plan = plan_lora(model, rule_set)
    check_plan(plan)
    layers = num_layers(model)
    expected_names = (
        {f"language_model.model.layers.{i}.self_attn.{p}_proj" for i in range(layers) for p in "qkvo"}
        | {"projector.linear_1", "projector.linear_2", "heads.custom_text_proj.proj", "heads.image_proj.proj"}
    )
    assert len(expected_names) == 2 * 4 + 2 + 2 == 12
    assert set(plan.targets("lora")) == expected_names
    assert plan.targets("full") == []
    modules = dict(model.named_modules())
    expected = sum(rule_set.r * (modules[n].in_features + modules[n].out_features) for n in expected_names)
    assert plan.expected_trainable_parameters(model) == expected

    peft_model = apply_lora(model, rule_set)
    assert set(adapted_modules(peft_model)) == expected_names
    assert count_parameters(peft_model)[0] == expected


def test_merge_and_unload_preserves_adapted_embeddings():
    images = [make_page(11), make_page(12, (30, 80))]
    model = fresh_model(seed=5)
    base_q = model.embed_queries(QUERIES)
    base_d = model.embed_images(images)

    rule_set = vlzoo.registry().rule_set("colllava_default")
    assert rule_set.dropout > 0  # eval mode must switch dropout off for the comparisons to hold
    peft_model = apply_lora(model, rule_set)
    generator = torch.Generator().manual_seed(123)
    perturbed = 0
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
                perturbed += 1
    assert perturbed == 12
    peft_model.eval()
    adapted = peft_model.get_base_model()
    adapted_q = adapted.embed_queries(QUERIES)
    adapted_d = adapted.embed_images(images)
    # the adapter is not a no-op
    assert (adapted_q - base_q).abs().max() > 1e-2
    assert (adapted_d - base_d).abs().max() > 1e-2
    # embedding twice is deterministic (dropout off)
    assert (adapted.embed_queries(QUERIES) - adapted_q).abs().max() == 0

    merged = peft_model.merge_and_unload()
    assert not adapted_modules_in(merged)
    merged.eval()
    merged_q = merged.embed_queries(QUERIES)
    merged_d = merged.embed_images(images)
    assert merged_q.shape == adapted_q.shape and merged_d.shape == adapted_d.shape
    assert (merged_q - adapted_q).abs().max() <= TOL
    assert (merged_d - adapted_d).abs().max() <= TOL
    assert torch.allclose(merged.score(merged_q, merged_d), adapted.score(adapted_q, adapted_d), atol=1e-4)


def adapted_modules_in(model: nn.Module) -> list[str]:
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
