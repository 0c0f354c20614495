"""`vlzoo train` and `vlzoo validate`: a run config becomes a trained retriever in its output folder."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlzoo_core.config import LoraRule, LoraRuleSet, Recipe
from vlzoo_core.errors import CheckpointError, ConfigError, UnknownNameError, VlzooError
from vlzoo_core.registry import Registry
from vlzoo_core.training.run_config import LoraSection, RunConfig, SyntheticSource

RUN_CONFIG_FILE = "run_config.yaml"
METRICS_FILE = "metrics.json"


def _named(field: str, action: Callable[[], Any]) -> Any:
    """Run `action`, prefixing a name error with the config field it came from."""
    try:
        return action()
    except UnknownNameError as exc:
        raise ConfigError(f"{field}: {exc}") from exc


def resolve_rule_set(section: LoraSection, recipe: Recipe, registry: Registry) -> LoraRuleSet:
    """The rule set a run trains with: a registered one, or one generated from per-component modes."""
    if section.components is not None:
        rules = []
        for slot, mode in section.components.items():
            if mode == "lora":  # every Linear layer of the component
                rules.append(LoraRule(name=f"{slot}_lora", component=slot, pattern=".*", mode="lora"))
            elif mode == "full":  # the component itself
                rules.append(LoraRule(name=f"{slot}_full", component=slot, pattern="", mode="full"))
        base = {"name": "per_component", "rules": rules}
    else:
        name = section.rules or recipe.lora
        if name is None:
            raise ConfigError(f"lora.rules: model {recipe.name!r} has no default rule set; set lora.rules or "
                              "lora.components")
        base = _named("lora.rules", lambda: registry.rule_set(name)).model_dump()
    updates = {key: value for key in ("r", "alpha", "dropout", "init")
               if (value := getattr(section, key)) is not None}
    return LoraRuleSet.model_validate({**base, **updates})


def build_loss(registry: Registry, config: RunConfig):
    spec = _named("loss.name", lambda: registry.component("loss", config.loss.name))
    return spec.load()(spec.parse_config(config.loss.params, "loss.params"))


@dataclass
class Checked:
    """What `validate` resolved: reused by `train` so both check the same things."""

    recipe: Recipe
    rule_set: LoraRuleSet
    report: list[str]


def validate(config: RunConfig, registry: Registry, *, base_dir: Path | None = None) -> Checked:
    """Check that every name, rule, file and column in `config` resolves, without loading weights or images."""
    from vlzoo_core.model.builder import apply_overrides, assemble
    from vlzoo_core.data.sources import check_source
    from vlzoo_core.model.lora import check_plan, count_parameters, plan_lora
    from vlzoo_core.training.arguments import check_batch_fits

    report = []
    recipe = _named("model.name", lambda: registry.recipe(config.model.name))
    recipe = apply_overrides(recipe, config.model.overrides, where="model.overrides")
    weights = config.model.weights
    if weights == "pretrained" and (recipe.weights is None or recipe.weights.source is None):
        raise ConfigError(f"model.weights: model {recipe.name!r} has no pretrained weights")
    if weights not in (None, "pretrained"):
        path = (base_dir / weights) if base_dir and not Path(weights).is_absolute() else Path(weights)
        if str(weights).startswith((".", "/", "~")) and not path.is_dir():
            raise ConfigError(f"model.weights: folder {weights!r} does not exist")
    report.append(f"model: {recipe.name} (weights: {weights or 'random init'})")

    # structure only: nothing allocated or downloaded
    skeleton = assemble(registry, recipe, device="meta", where="model.overrides")
    rule_set = resolve_rule_set(config.lora, recipe, registry)
    plan = plan_lora(skeleton, rule_set)
    try:
        check_plan(plan)
    except VlzooError as exc:
        raise ConfigError(f"lora: {exc}") from exc
    total = count_parameters(skeleton)[1]
    trainable = plan.expected_trainable_parameters(skeleton)
    report.append(f"lora: {len(plan.targets('lora'))} adapted, {len(plan.targets('full'))} fully trained modules; "
                  f"{trainable:,} trainable of {total:,} parameters")

    loss = build_loss(registry, config)
    if loss.multi_vector != skeleton.multi_vector:
        kind = "multi-vector" if skeleton.multi_vector else "single-vector"
        raise ConfigError(f"loss.name: {config.loss.name!r} does not take the model's {kind} embeddings")
    if loss.uses_negatives and config.data.train.columns.negatives is None:
        raise ConfigError(f"data.train.columns.negatives: loss {config.loss.name!r} needs hard negatives")
    report.append(f"loss: {config.loss.name}")

    report.append("data.train: " + check_source(config.data.train, base_dir=base_dir, where="data.train"))
    if config.data.train.kind == "synthetic":
        pages = (config.data.train.synthetic or SyntheticSource()).pages
        check_batch_fits(config, min(pages, config.data.train.limit or pages))
    if config.data.eval is not None:
        report.append("data.eval: " + check_source(config.data.eval, base_dir=base_dir, where="data.eval"))
    for backend in config.logging.report_to:
        if backend != "none" and importlib.util.find_spec(backend) is None:
            raise ConfigError(f"logging.report_to: {backend!r} is not installed (pip install {backend})")
    if config.optim.optimizer == "adamw_8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("optim.optimizer: 'adamw_8bit' needs bitsandbytes, which is not installed "
                          "(pip install bitsandbytes)")
    return Checked(recipe, rule_set, report)


def _prepare_output(directory: Path, *, resume: bool, overwrite: bool) -> None:
    from transformers.trainer_utils import get_last_checkpoint

    from vlzoo_core.training.trainer import STAGING_DIR

    if resume:
        if not directory.is_dir() or get_last_checkpoint(str(directory)) is None:
            raise ConfigError(f"--resume: no checkpoint in {directory}")
        shutil.rmtree(directory / STAGING_DIR, ignore_errors=True)  # a save interrupted by a crash
        return
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"output.dir: {directory} is a file, not a folder")
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise ConfigError(f"output.dir: {directory} is not empty; pass --resume to continue its run, "
                              "--overwrite to replace it, or choose another folder")
        if not (directory / RUN_CONFIG_FILE).exists():
            raise ConfigError(f"output.dir: {directory} holds files that are not a vlzoo run; not overwriting")
        shutil.rmtree(directory)


def train(
    config: RunConfig,
    registry: Registry,
    *,
    base_dir: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train per `config`; write the model, the resolved config and metrics.json into `config.output.dir`."""
    import yaml
    from transformers import set_seed

    from vlzoo_core.model.builder import build_retriever
    from vlzoo_core.data.collator import ContrastiveCollator, eval_pairs
    from vlzoo_core.data.sources import load_source
    from vlzoo_core.model.lora import apply_lora
    from vlzoo_core.training.arguments import training_arguments
    from vlzoo_core.training.evaluation import EvalSet
    from vlzoo_core.training.trainer import ContrastiveModel, RetrievalTrainer

    checked = validate(config, registry, base_dir=base_dir)
    output = (config.output.dir if base_dir is None else base_dir / config.output.dir).resolve()
    _prepare_output(output, resume=resume, overwrite=overwrite)

    set_seed(config.optim.seed)  # before building: a random-init base must be the same on resume
    weights = config.model.weights
    if weights not in (None, "pretrained") and base_dir is not None and (base_dir / weights).is_dir():
        weights = str(base_dir / weights)
    try:
        retriever = build_retriever(registry, registry.recipe(config.model.name), weights=weights,
                                    overrides=config.model.overrides)
    except CheckpointError as exc:
        raise ConfigError(f"model.weights: {exc}") from exc
    if config.optim.gradient_checkpointing:
        retriever.gradient_checkpointing_enable()
    model = apply_lora(retriever, checked.rule_set)
    loss_fn = build_loss(registry, config)

    train_data = load_source(config.data.train, base_dir=base_dir)
    eval_set = None
    if config.data.eval is not None:
        queries, pages = eval_pairs(load_source(config.data.eval, base_dir=base_dir, where="data.eval"),
                                    strict=config.data.strict)
        eval_set = EvalSet.from_rows(queries, pages)
    collator = ContrastiveCollator(retriever.processor, strict=config.data.strict,
                                   with_negatives=loss_fn.uses_negatives)
    args, chunk_size = training_arguments(config, output, len(train_data))
    # "pretrained" is kept as is, so reloading rebuilds the base with the recipe's published adapter too
    base_weights = None if weights is None else str(weights)
    trainer = RetrievalTrainer(
        model=ContrastiveModel(model), args=args, train_dataset=train_data, data_collator=collator,
        loss_fn=loss_fn, chunk_size=chunk_size, eval_set=eval_set, eval_metrics=list(config.eval.metrics),
        eval_batch_size=config.eval.batch_size, base_weights=base_weights, rule_set=checked.rule_set,
    )
    output.mkdir(parents=True, exist_ok=True)
    (output / RUN_CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
                                          encoding="utf-8")
    metrics: dict[str, Any] = {}
    previous = output / METRICS_FILE
    if resume and previous.exists():
        metrics = json.loads(previous.read_text(encoding="utf-8"))
    elif eval_set is not None:
        metrics["before"] = _strip(trainer.evaluate(metric_key_prefix="before"), "before_")
        if trainer.is_world_process_zero():  # kept if the run is killed and resumed
            previous.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    metrics["train"] = result.metrics
    if eval_set is not None:
        metrics["after"] = _strip(trainer.evaluate(metric_key_prefix="after"), "after_")
    metrics["skipped_rows"] = collator.skipped
    metrics["output_dir"] = str(output)
    trainer.save_model(str(output))
    if trainer.is_world_process_zero():
        previous.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _strip(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {key.removeprefix(prefix): value for key, value in metrics.items()}
