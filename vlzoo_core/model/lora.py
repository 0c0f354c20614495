"""LoRA from data: rules select modules per component; a rule that matches nothing fails the build."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from vlzoo_core.config import COMPONENT_SLOTS, LoraRuleSet
from vlzoo_core.errors import LoraRuleError


@dataclass
class LoraPlan:
    """Which modules each rule selects in a given model, before anything is wrapped."""

    rule_set: LoraRuleSet
    matches: dict[str, list[str]] = field(default_factory=dict)  # rule name -> full module names

    @property
    def unmatched(self) -> list[str]:
        return [name for name, modules in self.matches.items() if not modules]

    def targets(self, mode: str) -> list[str]:
        rules = {rule.name: rule for rule in self.rule_set.rules}
        return sorted({m for name, found in self.matches.items() if rules[name].mode == mode for m in found})

    def expected_trainable_parameters(self, model: nn.Module) -> int:
        """The analytic count: r * (in + out) per adapted Linear, plus every parameter of fully trained modules."""
        modules = dict(model.named_modules())
        r = self.rule_set.r
        lora = sum(r * (modules[name].in_features + modules[name].out_features) for name in self.targets("lora"))
        full = sum(p.numel() for name in self.targets("full") for p in modules[name].parameters())
        return lora + full


def plan_lora(model: nn.Module, rule_set: LoraRuleSet) -> LoraPlan:
    plan = LoraPlan(rule_set)
    for rule in rule_set.rules:
        component = getattr(model, rule.component, None)
        if component is None:
            raise LoraRuleError(f"rule {rule.name!r}: the model has no component {rule.component!r} {COMPONENT_SLOTS}")
        pattern = re.compile(rule.pattern)
        found = []
        for relative, module in component.named_modules():
            if not pattern.fullmatch(relative):
                continue
            if rule.mode == "lora" and not isinstance(module, nn.Linear):
                continue
            found.append(f"{rule.component}.{relative}" if relative else rule.component)
        plan.matches[rule.name] = found
    lora, full = plan.targets("lora"), plan.targets("full")
    clashes = {m for m in lora for f in full if _within(m, f)} | {m for m in full for f in full if m != f and _within(m, f)}
    if clashes:
        raise LoraRuleError(f"modules selected twice (LoRA inside or equal to a fully trained module, "
                            f"or nested full rules): {sorted(clashes)[:3]}")
    return plan


def _within(module: str, container: str) -> bool:
    return module == container or module.startswith(container + ".")


def check_plan(plan: LoraPlan) -> None:
    if plan.unmatched:
        rules = {rule.name: rule for rule in plan.rule_set.rules}
        described = ", ".join(
            f"{name!r} ({rules[name].component}: /{rules[name].pattern}/)" for name in plan.unmatched
        )
        raise LoraRuleError(f"LoRA rule set {plan.rule_set.name!r}: rule(s) matched no module: {described}")


def apply_lora(model: nn.Module, rule_set: LoraRuleSet):
    """Wrap `model` in a peft model per `rule_set`; everything not selected is frozen.

    A rule set with only `full` rules needs no adapter: the model itself comes back with just those
    modules trainable.

    Raises if a rule matches nothing, or if peft wrapped anything other than exactly the planned modules.
    """
    from peft import LoraConfig, get_peft_model

    plan = plan_lora(model, rule_set)
    check_plan(plan)
    full = plan.targets("full")
    if not plan.targets("lora"):  # only full training: peft has nothing to add
        model.requires_grad_(False)
        _unfreeze(model, full)
        return model
    init = True if rule_set.init == "default" else rule_set.init
    config = LoraConfig(
        r=rule_set.r,
        lora_alpha=rule_set.alpha,
        lora_dropout=rule_set.dropout,
        init_lora_weights=init,
        target_modules=plan.targets("lora"),
    )
    peft_model = get_peft_model(model, config)
    wrapped = sorted(adapted_modules(peft_model))
    if wrapped != plan.targets("lora"):
        raise LoraRuleError(f"peft adapted {len(wrapped)} modules, the rules selected {len(plan.targets('lora'))}")
    _unfreeze(model, full)
    return peft_model


def _unfreeze(model: nn.Module, names: list[str]) -> None:
    """Fully trained modules are unfrozen in place (not copied, as peft's modules_to_save would)."""
    modules = dict(model.named_modules())
    for name in names:
        modules[name].requires_grad_(True)


def adapted_modules(peft_model: nn.Module) -> list[str]:
    """Names (relative to the retriever) of the modules that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    return [name for name, module in base.named_modules() if isinstance(module, LoraLayer)]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
