"""The `vlzoo` command line. Usage errors print one line and exit with code 2; listing never imports torch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from vlzoo.cli_eval import add_eval_parser
from vlzoo.cli_index import add_index_parsers, route_index_actions
from vlzoo_core.errors import VlzooError

EXIT_USAGE = 2


def _registry():
    import vlzoo

    return vlzoo.registry()


def cmd_list(args: argparse.Namespace) -> int:
    recipes = _registry().list_recipes(args.pattern)
    if not recipes:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    width = max(len(r.name) for r in recipes)
    for recipe in recipes:
        aliases = f" (alias: {', '.join(recipe.aliases)})" if recipe.aliases else ""
        print(f"{recipe.name:<{width}}  {recipe.description}{aliases}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    registry = _registry()
    recipe = registry.recipe(args.name)
    print(f"{recipe.name}: {recipe.description}")
    print(f"  aliases:       {', '.join(recipe.aliases) or '-'}")
    print(f"  registered by: {recipe.plugin}")
    print(f"  weights:       {recipe.weights.source if recipe.weights and recipe.weights.source else '(random init only)'}")
    if recipe.weights and recipe.weights.adapter:
        print(f"  adapter:       {recipe.weights.adapter} (merged with weights='pretrained')")
    print(f"  LoRA rules:    {recipe.lora or '-'}")
    print(f"  document path: {recipe.document_path}")
    slots = [("encoder", "encoder"), ("projector", "projector"), ("backbone", "backbone"),
             ("head", "query_head"), ("head", "document_head"), ("processor", "processor")]
    for kind, field in slots:
        ref = getattr(recipe, field)
        spec = registry.component(kind, ref.name)
        module = f" as {ref.module}" if hasattr(ref, "module") else ""
        print(f"  {field + ':':<14} {ref.name}{module} [{spec.plugin}] {json.dumps(ref.config)}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry()
    for plugin in registry.plugins:
        origin = f"{plugin.distribution} {plugin.version}" if plugin.distribution else "built in"
        status = f"ERROR: {plugin.error}" if plugin.error else f"{len(plugin.registered)} registrations"
        print(f"{plugin.name}  ({origin})  hooks: {', '.join(plugin.hooks) or '-'}  {status}")
        if args.verbose and plugin.registered:
            for item in plugin.registered:
                print(f"    {item}")
    return 0


def cmd_lora(args: argparse.Namespace) -> int:
    import vlzoo
    from vlzoo_core.model.lora import apply_lora, check_plan, count_parameters, plan_lora

    registry = vlzoo.registry()
    recipe = registry.recipe(args.name)
    rule_set_name = args.rules or recipe.lora
    if rule_set_name is None:
        raise VlzooError(f"model {recipe.name!r} names no LoRA rule set; pass --rules NAME")
    rule_set = registry.rule_set(rule_set_name)
    model = vlzoo.build(recipe.name, device="meta")  # structure only: no memory, no download
    plan = plan_lora(model, rule_set)
    for rule in rule_set.rules:
        found = plan.matches[rule.name]
        print(f"rule {rule.name!r} ({rule.mode}, {rule.component}: /{rule.pattern}/): {len(found)} modules")
        if args.verbose:
            for name in found:
                print(f"    {name}")
    check_plan(plan)
    expected = plan.expected_trainable_parameters(model)
    peft_model = apply_lora(model, rule_set)
    trainable, total = count_parameters(peft_model)
    print(f"adapted modules: {len(plan.targets('lora'))} (LoRA), {len(plan.targets('full'))} (fully trained)")
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")
    print(f"analytic r*(in+out) sum: {expected:,} ({'matches' if expected == trainable else 'MISMATCH'})")
    return 0 if expected == trainable else 1


def _run_config(args: argparse.Namespace):
    from pathlib import Path

    from vlzoo_core.training.run_config import load_run_config

    path = Path(args.config)
    return load_run_config(path, model=args.model, output=getattr(args, "output", None)), path.resolve().parent


def cmd_validate(args: argparse.Namespace) -> int:
    from vlzoo_core.training.run import validate

    config, base_dir = _run_config(args)
    checked = validate(config, _registry(), base_dir=base_dir)
    for line in checked.report:
        print(line)
    print(f"{args.config}: OK")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from vlzoo_core.training.run_config import RunConfig

    print(json.dumps(RunConfig.model_json_schema(), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from vlzoo_core.training.run import train

    config, base_dir = _run_config(args)
    metrics = train(config, _registry(), base_dir=base_dir, resume=args.resume, overwrite=args.overwrite)
    for phase in ("before", "after"):
        if phase in metrics:
            print(f"eval {phase + ':':<7} " + "  ".join(f"{k} {v:.3f}" for k, v in metrics[phase].items()))
    if metrics.get("skipped_rows"):
        print(f"skipped {metrics['skipped_rows']} bad rows")
    print(f"saved to {metrics['output_dir']}")
    return 0


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML run config, e.g. examples/quickstart.yaml")
    parser.add_argument("--model", help="registered model name; overrides model.name in the config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlzoo",
        description="A zoo of late-interaction vision-language document retrievers.",
        epilog="Models come from registry.toml and installed plugins (entry-point group 'vlzoo').",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("list", help="list registered models", description="List registered models.")
    p.add_argument("pattern", nargs="?", default="*", metavar="GLOB", help="filter names, e.g. 'colllava*'")
    p.set_defaults(func=cmd_list)

    p = commands.add_parser("info", help="show a model's recipe", description="Show a model's recipe.")
    p.add_argument("name", help="model name or alias")
    p.set_defaults(func=cmd_info)

    p = commands.add_parser("plugins", help="show loaded plugins and their errors",
                            description="Show each plugin's distribution, version, hooks and status.")
    p.add_argument("-v", "--verbose", action="store_true", help="also list each plugin's registrations")
    p.set_defaults(func=cmd_plugins)

    p = commands.add_parser("lora", help="show what a LoRA rule set adapts",
                            description="Build the full-size model on the meta device (no weights, no memory), "
                            "apply its LoRA rules and report adapted modules and parameter counts.")
    p.add_argument("name", help="model name or alias")
    p.add_argument("--rules", help="LoRA rule set (default: the model's own)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every adapted module")
    p.set_defaults(func=cmd_lora)

    p = commands.add_parser("train", help="fine-tune a retriever from a YAML run config",
                            description="Train per CONFIG (see `vlzoo schema`). Multi-GPU: "
                            "`accelerate launch -m vlzoo train ...`; the global batch is "
                            "per_device_batch_size x gradient_accumulation_steps x processes.")
    _add_config_arguments(p)
    p.add_argument("--output", metavar="DIR", help="output folder; overrides output.dir in the config")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output.dir")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in output.dir")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("validate", help="check a run config without training",
                            description="Check that the model, LoRA rules, loss, files and dataset columns in "
                            "CONFIG resolve, without loading weights or images.")
    _add_config_arguments(p)
    p.set_defaults(func=cmd_validate)

    p = commands.add_parser("schema", help="print the JSON schema of run configs",
                            description="Print the JSON schema of run configs (for editors and linters).")
    p.set_defaults(func=cmd_schema)

    add_index_parsers(commands)
    add_eval_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(route_index_actions(list(sys.argv[1:] if argv is None else argv)))
    try:
        return args.func(args)
    except VlzooError as exc:
        print(f"vlzoo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
