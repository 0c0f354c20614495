"""Conformance checks for plugin authors: one call tells whether a recipe's components keep vlzoo's contracts.

    from vlzoo_core.testing import check_components

    def test_my_recipe():
        report = check_components("my_retriever_tiny")  # builds it (random init, seeded) and checks it
        print(report)

`check_components(NAME)` builds a registered recipe and runs every check; `check_retriever(model)` runs the
same checks on a retriever you built yourself. A failed check raises `ConformanceError`, an `AssertionError`
whose message starts with `conformance check 'NAME' failed for model '...'`, so pytest shows what broke.
`plugin_registry(...)` makes an isolated registry (entry-point autoload off) and fails if a plugin did not load;
`check_hook_module(MODULE)` checks, in a fresh interpreter, that a hook module defines `vlzoo_register` and
imports no torch.

This module imports torch; `import vlzoo_core` does not import it, so import `vlzoo_core.testing` explicitly.

The checks, in the order they run (`CHECKS`):

- `configs`: every component's config class is a pydantic model that forbids unknown keys.
- `interfaces`: the factories build with the documented signatures; each component subclasses its interface
  and declares its attributes (`hidden_size`, `layer_cls` with at least one such layer inside,
  `in_features`/`out_features` that fit the encoder and backbone, `multi_vector`, `dim`, `image_token_id`,
  `get_input_embeddings()` of the backbone's width).
- `batch_contract`: processor batches are dicts of tensors whose first dimension is the row; `input_ids` and
  `attention_mask` are (B, L); `position_ids`, if present, (B, L) or (B, 3, L); pages carry `pixel_values`.
- `component_shapes`: encoder features end in `hidden_size`, the projector's in `out_features`, and the
  backbone returns (B, L, hidden_size).
- `embedding_shapes`: `embed_queries` / `embed_images` give (n, L, dim) for multi-vector heads, (n, dim) for
  pooled ones, and the forward output lines up with the attention mask.
- `unit_norm`: unit vectors wherever the mask is on; `padding_zeros`: exact zeros wherever it is off.
- `query_padding_invariance`: a query alone equals the same query in a padded batch (valid tokens, to `tol`).
- `page_padding_invariance`: a page alone equals the same page in a batch of pages of other sizes.
- `row_split`: one row split out of a batch the way the trainer's GradCache chunks batches (every tensor
  sliced to `[i:i+1]`, `input_ids` / `attention_mask` / `position_ids` trimmed to the chunk's longest row)
  embeds like that row in the batch. Batches must be split by rows without knowing the family, and text must
  be right-padded.
- `lora_rules`: every rule of the LoRA rule set (the recipe's, or the one passed) matches at least one module.
- `lora_targets_used`: every module the rules select is called when queries and pages are embedded (a forward
  that bypasses a Linear's `__call__` would leave its adapter untrained).
- `lora_parameters`: on the model built on the meta device (as `vlzoo lora` / `vlzoo validate` do), peft's
  trainable parameter count equals the analytic sum: r * (in + out) per adapted Linear plus every parameter of
  fully trained modules.
- `round_trip`: `save_pretrained` then `load_retriever` (what `vlzoo.load` does) gives identical embeddings.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from vlzoo_core.model.builder import apply_overrides, assemble
from vlzoo_core.config import LoraRuleSet, Recipe
from vlzoo_core.errors import VlzooError, describe_validation_error
from vlzoo_core.hooks import PROJECT_NAME
from vlzoo_core.interfaces import LanguageBackbone, Processor, Projector, RetrievalHead, VisionEncoder
from vlzoo_core.registry import ComponentSpec, Registry
from vlzoo_core.model.retriever import Retriever
from vlzoo_core.training.gradcache import split_batch

TOL = 1e-5

CHECKS = (
    "configs",
    "interfaces",
    "batch_contract",
    "component_shapes",
    "embedding_shapes",
    "unit_norm",
    "padding_zeros",
    "query_padding_invariance",
    "page_padding_invariance",
    "row_split",
    "lora_rules",
    "lora_targets_used",
    "lora_parameters",
    "round_trip",
)
LORA_CHECKS = ("lora_rules", "lora_targets_used", "lora_parameters")

SAMPLE_QUERIES = ("red circle", "a small blue square left of a green star", "x", "glyph AB 12")
# Appended (after the longest query) to the queries' batch, so that every query is padded in it.
PADDING_QUERY = "which page shows a big red circle and a tiny blue letter K in the top left corner of a table chart"
PAGE_SIZES = ((64, 48), (20, 90), (120, 120), (14, 14))

TEXT_INPUTS = ("input_ids", "attention_mask", "position_ids")

__all__ = [
    "CHECKS", "ConformanceError", "ConformanceReport", "PAGE_SIZES", "SAMPLE_QUERIES", "TOL",
    "check_components", "check_hook_module", "check_retriever", "plugin_registry", "sample_pages",
]


class ConformanceError(AssertionError):
    """A failed conformance check. `check` is its name (one of `CHECKS`, or `plugin_load` / `hook_module`)."""

    def __init__(self, check: str, subject: str, detail: str) -> None:
        self.check, self.subject, self.detail = check, subject, detail
        super().__init__(f"conformance check {check!r} failed for {subject}: {detail}")


@dataclass
class ConformanceReport:
    """What was checked, and what the model looks like."""

    model: str
    multi_vector: bool | None = None
    dim: int | None = None
    query_shape: tuple[int, ...] = ()  # embed_queries(SAMPLE_QUERIES or yours)
    page_shape: tuple[int, ...] = ()  # embed_images(sample_pages() or yours)
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why
    lora: dict[str, Any] = field(default_factory=dict)  # rule_set, matches per rule, trainable, total

    def __str__(self) -> str:
        kind = "multi-vector" if self.multi_vector else "single-vector"
        lines = [f"{self.model}: {kind}, dim {self.dim}; queries {tuple(self.query_shape)}, "
                 f"pages {tuple(self.page_shape)}",
                 f"  passed:  {', '.join(self.passed) or '-'}"]
        for check, why in self.skipped.items():
            lines.append(f"  skipped: {check} ({why})")
        if self.lora:
            per_rule = ", ".join(f"{rule} {count}" for rule, count in self.lora["matches"].items())
            lines.append(f"  LoRA {self.lora['rule_set']!r}: {per_rule}; {self.lora['trainable']:,} trainable "
                         f"of {self.lora['total']:,} parameters")
        return "\n".join(lines)


# ---- inputs ----------------------------------------------------------------------------------------------


def sample_pages(sizes: Sequence[tuple[int, int]] = PAGE_SIZES, seed: int = 0) -> list[Any]:
    """Deterministic RGB pages of different sizes and aspect ratios: noise with a coloured block."""
    from PIL import Image

    pages = []
    for index, (width, height) in enumerate(sizes):
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
        pixels[height // 4 : max(height // 2, height // 4 + 1), width // 4 : max(width // 2, width // 4 + 1)] = (
            torch.tensor([200, 30, 30], dtype=torch.uint8)
        )
        pages.append(Image.fromarray(pixels.numpy()))  # uint8 (H, W, 3): RGB
    return pages


# ---- entry points ----------------------------------------------------------------------------------------


def check_components(
    model: str | Recipe | Mapping[str, Any],
    *,
    registry: Registry | None = None,
    overrides: Mapping[str, Any] | None = None,
    lora: str | LoraRuleSet | Mapping[str, Any] | None = None,
    queries: Sequence[str] | None = None,
    pages: Sequence[Any] | None = None,
    tol: float = TOL,
    seed: int = 0,
    round_trip: bool = True,
) -> ConformanceReport:
    """Build `model` (a registered name or alias, a `Recipe`, or a recipe mapping) with random init and check it.

    registry: where names resolve (default: `vlzoo.registry()`, the process-wide one).
    overrides: recipe changes, as for `vlzoo.build(name, **overrides)`.
    lora: the rule set to check (a registered name, a `LoraRuleSet` or a mapping); default: the recipe's.
    queries / pages: inputs (default: `SAMPLE_QUERIES`, `sample_pages()`); use at least two of each.
    seed: the random init is seeded, without changing the caller's random state.
    """
    registry = registry if registry is not None else _default_registry()
    recipe = apply_overrides(_resolve_recipe(registry, model), overrides or {})
    subject = f"model {recipe.name!r}"
    report = ConformanceReport(recipe.name)
    specs = _component_specs(registry, recipe, subject)
    _check_configs(specs, subject)
    report.passed.append("configs")
    with _guard("interfaces", subject, "building the components"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        retriever = assemble(registry, recipe)
    with _isolated(retriever):
        return _checks(retriever, registry, report, specs=specs, lora=lora, queries=queries, pages=pages, tol=tol,
                       round_trip=round_trip)


def check_retriever(
    retriever: Retriever,
    *,
    registry: Registry | None = None,
    lora: str | LoraRuleSet | Mapping[str, Any] | None = None,
    queries: Sequence[str] | None = None,
    pages: Sequence[Any] | None = None,
    tol: float = TOL,
    round_trip: bool = True,
) -> ConformanceReport:
    """Run the checks on a retriever you built (e.g. with `vlzoo.build` or `vlzoo.load`); it is not modified.

    The `configs` check needs the registered specs and is skipped here; `registry` resolves the LoRA rule set,
    the meta-device build and the reload (default: `vlzoo.registry()`). Tolerances assume float32.
    """
    if not isinstance(retriever, Retriever):
        raise ConformanceError("interfaces", type(retriever).__name__,
                               f"expected a vlzoo_core.Retriever, got {type(retriever).__qualname__} "
                               "(unwrap peft models with vlzoo_core.model.persist.unwrap)")
    registry = registry if registry is not None else _default_registry()
    report = ConformanceReport(retriever.recipe.name)
    report.skipped["configs"] = "needs the registered component specs: use check_components"
    with _isolated(retriever):
        return _checks(retriever, registry, report, specs=None, lora=lora, queries=queries, pages=pages, tol=tol,
                       round_trip=round_trip)


def plugin_registry(
    *plugins: str | tuple[str, object],
    catalogs: Sequence[str | Path] = (),
    autoload: bool = False,
) -> Registry:
    """An isolated registry with exactly these plugins (entry-point autoload off unless `autoload=True`).

    Each plugin is a hook module's name (`"myplugin.plugin"`) or a `(name, module_or_object)` pair. A recipe
    that uses another plugin's components needs that plugin too, e.g.
    `plugin_registry("colllava.plugin", ("mine", "myplugin.plugin"))`. The `Registry` itself reports a plugin
    that fails to import or register instead of raising; this raises `ConformanceError('plugin_load')`.
    """
    pairs = [(plugin, plugin) if isinstance(plugin, str) else plugin for plugin in plugins]
    registry = Registry(plugins=pairs, catalogs=[Path(path) for path in catalogs], autoload=autoload)
    failed = registry.failures
    if failed:
        raise ConformanceError("plugin_load", ", ".join(repr(p.name) for p in failed),
                               "; ".join(f"{p.name}: {p.error}" for p in failed))
    return registry


def check_hook_module(module: str, *, timeout: float = 120) -> None:
    """In a fresh interpreter: `module` imports, defines a `vlzoo_register` hook implementation, imports no torch.

    The child sees the caller's `sys.path`. Raises `ConformanceError('hook_module')`.
    """
    code = (
        "import importlib, json, sys\n"
        "module = importlib.import_module(sys.argv[1])\n"
        "hook = getattr(module, 'vlzoo_register', None)\n"
        f"marked = hook is not None and getattr(hook, {PROJECT_NAME + '_impl'!r}, None) is not None\n"
        "torch = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('VLZOO-HOOK-MODULE ' + json.dumps({'hook': marked, 'torch': torch[:3]}))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
    subject = f"hook module {module!r}"
    result = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, env=env,
                            timeout=timeout, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("VLZOO-HOOK-MODULE ")]
    if result.returncode != 0 or len(lines) != 1:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConformanceError("hook_module", subject, f"importing it failed: {tail}")
    found = json.loads(lines[0].split(" ", 1)[1])
    if not found["hook"]:
        raise ConformanceError("hook_module", subject,
                               "defines no `vlzoo_register` marked with `@vlzoo_core.hookimpl`")
    if found["torch"]:
        raise ConformanceError("hook_module", subject,
                               f"imports torch ({', '.join(found['torch'])}); registrations must be lazy "
                               "'module:attribute' references so that `vlzoo list` stays fast")


# ---- helpers ---------------------------------------------------------------------------------------------


def _default_registry() -> Registry:
    import vlzoo

    return vlzoo.registry()


def _resolve_recipe(registry: Registry, model: str | Recipe | Mapping[str, Any]) -> Recipe:
    if isinstance(model, Recipe):
        return model
    if isinstance(model, str):
        return registry.recipe(model)
    try:
        return Recipe.model_validate(dict(model))
    except ValidationError as exc:
        raise VlzooError(describe_validation_error(exc, "recipe")) from exc


@contextlib.contextmanager
def _guard(check: str, subject: str, doing: str) -> Iterator[None]:
    """Turn an exception raised by plugin code into a ConformanceError naming the check."""
    try:
        yield
    except ConformanceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the component under test is the check's failure
        raise ConformanceError(check, subject, f"{doing} raised {type(exc).__name__}: {exc}") from exc


def _fail(check: str, subject: str, problems: list[str]) -> None:
    if problems:
        raise ConformanceError(check, subject, "; ".join(problems))


SLOTS = (  # (registry kind, recipe field, retriever attribute or None)
    ("encoder", "encoder", "vision_tower"),
    ("projector", "projector", "projector"),
    ("backbone", "backbone", "language_model"),
    ("head", "query_head", "query_head"),
    ("head", "document_head", "document_head"),
    ("processor", "processor", None),
)


def _component_specs(registry: Registry, recipe: Recipe, subject: str) -> dict[str, ComponentSpec]:
    specs = {}
    for kind, field_name, _ in SLOTS:
        with _guard("interfaces", subject, f"resolving {field_name}"):
            specs[field_name] = registry.component(kind, getattr(recipe, field_name).name)
    return specs


def _check_configs(specs: Mapping[str, ComponentSpec], subject: str) -> None:
    problems = []
    for field_name, spec in specs.items():
        config = spec.config
        what = f"{field_name} {spec.name!r} config {getattr(config, '__qualname__', config)!r}"
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            problems.append(f"{what} is not a pydantic model")
        elif config.model_config.get("extra") != "forbid":
            problems.append(f"{what} accepts unknown keys; subclass vlzoo_core.StrictModel (extra='forbid') "
                            "so that a typo in a recipe is an error")
    _fail("configs", subject, problems)


def _describe(field_name: str, obj: object, specs: Mapping[str, ComponentSpec] | None) -> str:
    if specs is not None and field_name in specs:
        return f"{field_name} {specs[field_name].name!r} ({specs[field_name].factory})"
    return f"{field_name} ({type(obj).__module__}.{type(obj).__qualname__})"


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_interfaces(retriever: Retriever, specs: Mapping[str, ComponentSpec] | None, subject: str) -> Processor:
    problems: list[str] = []
    interfaces = {"encoder": VisionEncoder, "projector": Projector, "backbone": LanguageBackbone,
                  "query_head": RetrievalHead, "document_head": RetrievalHead}
    components = {field_name: getattr(retriever, attribute) for _, field_name, attribute in SLOTS if attribute}
    for field_name, interface in interfaces.items():
        if not isinstance(components[field_name], interface):
            problems.append(f"{_describe(field_name, components[field_name], specs)} is a "
                            f"{type(components[field_name]).__qualname__}, not a vlzoo_core.{interface.__name__}")
    _fail("interfaces", subject, problems)

    def declared(field_name: str, attribute: str) -> Any:
        value = getattr(components[field_name], attribute, None)
        if not _positive_int(value):
            problems.append(f"{_describe(field_name, components[field_name], specs)} declares no positive int "
                            f"{attribute!r} (got {value!r})")
        return value

    for field_name in ("encoder", "backbone"):
        component = components[field_name]
        declared(field_name, "hidden_size")
        layer_cls = getattr(component, "layer_cls", None)
        if not (isinstance(layer_cls, type) and issubclass(layer_cls, nn.Module)):
            problems.append(f"{_describe(field_name, component, specs)} declares no `layer_cls` (the repeated "
                            f"nn.Module block, for FSDP wrapping and gradient checkpointing), got {layer_cls!r}")
        elif not any(isinstance(module, layer_cls) for module in component.modules()):
            problems.append(f"{_describe(field_name, component, specs)}: no {layer_cls.__qualname__} inside it, "
                            "although it is its `layer_cls`")
    encoder_width = components["encoder"].hidden_size
    backbone_width = components["backbone"].hidden_size
    projector = components["projector"]
    for attribute, expected, what in (("in_features", encoder_width, "the encoder's hidden_size"),
                                      ("out_features", backbone_width, "the backbone's hidden_size")):
        value = declared("projector", attribute)
        if _positive_int(value) and value != expected:
            problems.append(f"{_describe('projector', projector, specs)}: {attribute} {value} is not {what} "
                            f"{expected}")
    with _guard("interfaces", subject, "backbone.get_input_embeddings()"):
        embedding = components["backbone"].get_input_embeddings()
    if not isinstance(embedding, nn.Embedding):
        problems.append(f"{_describe('backbone', components['backbone'], specs)}: get_input_embeddings() returns "
                        f"{type(embedding).__qualname__}, not an nn.Embedding")
    elif embedding.embedding_dim != backbone_width:
        problems.append(f"{_describe('backbone', components['backbone'], specs)}: input embeddings are "
                        f"{embedding.embedding_dim} wide, hidden_size is {backbone_width}")
    for field_name in ("query_head", "document_head"):
        head = components[field_name]
        if not isinstance(getattr(head, "multi_vector", None), bool):
            problems.append(f"{_describe(field_name, head, specs)} declares no bool `multi_vector`")
        declared(field_name, "dim")
    _fail("interfaces", subject, problems)

    with _guard("interfaces", subject, "building the processor"):
        processor = retriever.processor
    if not isinstance(processor, Processor):
        problems.append(f"{_describe('processor', processor, specs)} builds a {type(processor).__qualname__}, "
                        "not a vlzoo_core.Processor")
    elif getattr(processor, "image_token_id", None) != retriever.image_token_id:
        problems.append(f"{_describe('processor', processor, specs)}: image_token_id "
                        f"{getattr(processor, 'image_token_id', None)!r} is not the retriever's "
                        f"{retriever.image_token_id}")
    _fail("interfaces", subject, problems)
    return processor


def _check_batch(batch: object, what: str, rows: int, pages: bool) -> list[str]:
    if not isinstance(batch, Mapping):
        return [f"{what} returned a {type(batch).__qualname__}, not a dict of tensors"]
    problems = []
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            problems.append(f"{what}[{key!r}] is a {type(value).__qualname__}, not a tensor")
        elif value.dim() == 0 or value.shape[0] != rows:
            problems.append(f"{what}[{key!r}] has shape {tuple(value.shape)}: not row-major (first dimension "
                            f"should be the {rows} rows; pad per-image data to (B, max, ...))")
    for key in ("input_ids", "attention_mask", *(("pixel_values",) if pages else ())):
        if key not in batch:
            problems.append(f"{what} has no {key!r}")
    if problems:
        return problems
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.dim() != 2 or mask.shape != ids.shape:
        problems.append(f"{what}: input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)} should both "
                        "be (B, L)")
    elif not torch.all((mask == 0) | (mask == 1)) or not torch.all(mask.sum(dim=1) > 0):
        problems.append(f"{what}: attention_mask should be 0/1 with at least one 1 per row")
    positions = batch.get("position_ids")
    if positions is not None and tuple(positions.shape) not in {tuple(ids.shape), (ids.shape[0], 3, ids.shape[1])}:
        problems.append(f"{what}: position_ids {tuple(positions.shape)} should be (B, L) or (B, 3, L) for "
                        f"input_ids {tuple(ids.shape)}")
    return problems


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


class _Encoded:
    """One batch through the retriever: float32 embeddings and the token mask they follow (None if pooled)."""

    def __init__(self, retriever: Retriever, batch: Mapping[str, torch.Tensor], pages: bool) -> None:
        with torch.no_grad():
            self.embeddings = retriever(**_to(batch, retriever.device)).float().cpu()
        if self.embeddings.dim() == 2:
            self.mask = None
        elif pages and retriever.recipe.document_path == "vision":
            self.mask = torch.ones(self.embeddings.shape[:2], dtype=torch.bool)
        else:
            self.mask = batch["attention_mask"].bool().cpu()

    def row(self, index: int) -> torch.Tensor:
        """Row `index`'s valid vectors (multi-vector) or its vector (pooled)."""
        if self.mask is None:
            return self.embeddings[index]
        return self.embeddings[index][self.mask[index]]


def _compare(check: str, subject: str, what: str, expected: torch.Tensor, actual: torch.Tensor, tol: float,
             hint: str = "") -> None:
    if expected.shape != actual.shape:
        raise ConformanceError(check, subject, f"{what}: {tuple(expected.shape)} valid values, but "
                                               f"{tuple(actual.shape)} in the batch" + (f" ({hint})" if hint else ""))
    difference = float((expected - actual).abs().max()) if expected.numel() else 0.0
    if not difference <= tol:  # also catches NaN
        raise ConformanceError(check, subject, f"{what}: embeddings differ by up to {difference:.3g} (tolerance "
                                               f"{tol:g})")


def _check_norms(encoded: _Encoded, what: str, subject: str, tol: float) -> None:
    norms = encoded.embeddings.norm(dim=-1)
    valid = torch.ones_like(norms, dtype=torch.bool) if encoded.mask is None else encoded.mask
    if not torch.all(torch.isfinite(encoded.embeddings)):
        raise ConformanceError("unit_norm", subject, f"{what} embeddings contain NaN or inf")
    bad = ((norms - 1).abs() > tol) & valid
    if bool(bad.any()):
        position = tuple(int(i) for i in bad.nonzero()[0])
        raise ConformanceError("unit_norm", subject,
                               f"{what} embedding at {position} has norm {float(norms[position]):.6g}, expected 1 "
                               f"(± {tol:g}) where the mask is on; L2-normalise the head's output")
    if encoded.mask is not None:
        leaked = (encoded.embeddings != 0).any(dim=-1) & ~encoded.mask
        if bool(leaked.any()):
            position = tuple(int(i) for i in leaked.nonzero()[0])
            raise ConformanceError("padding_zeros", subject,
                                   f"{what} embedding at {position} is not zero although the mask is off there "
                                   f"(norm {float(norms[position]):.3g}); multiply the head's output by the mask")


@contextlib.contextmanager
def _isolated(retriever: Retriever):
    """Eval mode and a forked RNG while the checks run (reloads and meta builds draw random inits), so the
    caller's model mode and random state are left as they were."""
    was_training = retriever.training
    devices = [retriever.device.index or 0] if retriever.device.type == "cuda" else []
    retriever.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        retriever.train(was_training)


def _checks(
    retriever: Retriever,
    registry: Registry,
    report: ConformanceReport,
    *,
    specs: Mapping[str, ComponentSpec] | None,
    lora: str | LoraRuleSet | Mapping[str, Any] | None,
    queries: Sequence[str] | None,
    pages: Sequence[Any] | None,
    tol: float,
    round_trip: bool,
) -> ConformanceReport:
    queries = list(SAMPLE_QUERIES if queries is None else queries)
    pages = list(sample_pages() if pages is None else pages)
    if len(queries) < 2 or len(pages) < 2:
        raise ValueError("pass at least two queries and two pages")
    subject = f"model {report.model!r}"
    processor = _check_interfaces(retriever, specs, subject)
    report.passed.append("interfaces")
    report.multi_vector, report.dim = retriever.multi_vector, retriever.query_head.dim

    # batch contract: queries batched with a longer one, so that every sample query is padded
    batch_queries = [*queries, f"{max(queries, key=len)} {PADDING_QUERY}"]
    with _guard("batch_contract", subject, "process_queries"):
        query_batch = processor.process_queries(batch_queries)
    with _guard("batch_contract", subject, "process_images"):
        page_batch = processor.process_images(pages)
    _fail("batch_contract", subject,
          _check_batch(query_batch, "process_queries", len(queries) + 1, pages=False)
          + _check_batch(page_batch, "process_images", len(pages), pages=True))
    report.passed.append("batch_contract")

    _check_component_shapes(retriever, query_batch, page_batch, subject)
    report.passed.append("component_shapes")

    with _guard("embedding_shapes", subject, "encoding the batches"):
        query_out = _Encoded(retriever, query_batch, pages=False)
        page_out = _Encoded(retriever, page_batch, pages=True)
    _check_embedding_shapes(retriever, queries, pages, query_out, page_out, query_batch, page_batch, report,
                            subject)
    report.passed.append("embedding_shapes")

    _check_norms(query_out, "query", subject, tol)
    _check_norms(page_out, "page", subject, tol)
    report.passed.append("unit_norm")
    if retriever.multi_vector:
        report.passed.append("padding_zeros")
    else:
        report.skipped["padding_zeros"] = "pooled heads have no padding positions"

    mask = query_batch["attention_mask"]
    if not bool((mask[: len(queries)].sum(dim=1) < mask.shape[1]).any()):
        raise ConformanceError("query_padding_invariance", subject,
                               "no query was padded in the batch (all truncated to the same length?); "
                               "pass shorter queries")
    with _guard("query_padding_invariance", subject, "encoding single queries"):
        for i in range(len(queries)):
            alone = _Encoded(retriever, processor.process_queries([queries[i]]), pages=False)
            _compare("query_padding_invariance", subject, f"query {i} ({queries[i]!r}) alone vs in a padded "
                     "batch", alone.row(0), query_out.row(i), tol)
    report.passed.append("query_padding_invariance")

    with _guard("page_padding_invariance", subject, "encoding single pages"):
        for i, page in enumerate(pages):
            alone = _Encoded(retriever, processor.process_images([page]), pages=True)
            _compare("page_padding_invariance", subject,
                     f"page {i} (size {getattr(page, 'size', '?')}) alone vs in a batch", alone.row(0),
                     page_out.row(i), tol)
    report.passed.append("page_padding_invariance")

    with _guard("row_split", subject, "encoding rows split from a batch"):
        for what, batch, out, is_pages in (("query", query_batch, query_out, False),
                                           ("page", page_batch, page_out, True)):
            # exactly as the trainer's GradCache chunks a batch: rows sliced, text trimmed to the longest row
            for i, chunk in enumerate(split_batch({"query": dict(batch)}, 1)):
                sliced = _Encoded(retriever, chunk["query"], pages=is_pages)
                _compare("row_split", subject, f"{what} row {i} split from the batch (as GradCache chunks it) vs "
                         "in the batch", sliced.row(0), out.row(i), tol,
                         hint="text must be right-padded: a chunk is trimmed to its longest row at the right")
    report.passed.append("row_split")

    _check_lora(retriever, registry, lora, query_batch, page_batch, report, subject)

    if round_trip:
        _check_round_trip(retriever, registry, batch_queries, pages, query_batch, page_batch, query_out, page_out,
                          subject)
        report.passed.append("round_trip")
    else:
        report.skipped["round_trip"] = "round_trip=False"
    return report


def _check_component_shapes(retriever: Retriever, query_batch: Mapping[str, torch.Tensor],
                            page_batch: Mapping[str, torch.Tensor], subject: str) -> None:
    check = "component_shapes"
    encoder, projector, backbone = retriever.vision_tower, retriever.projector, retriever.language_model
    page_batch = _to(page_batch, retriever.device)
    query_batch = _to(query_batch, retriever.device)
    image_inputs = {k: v for k, v in page_batch.items() if k not in (*TEXT_INPUTS, "pixel_values")}
    with torch.no_grad():
        with _guard(check, subject, "the encoder"):
            features = encoder(page_batch["pixel_values"].to(retriever.dtype), **image_inputs)
        if not isinstance(features, torch.Tensor) or features.shape[-1] != encoder.hidden_size:
            raise ConformanceError(check, subject, f"the encoder returned {_shape(features)}, expected features "
                                                   f"ending in hidden_size {encoder.hidden_size}")
        with _guard(check, subject, "the projector"):
            projected = projector(features)
        if not isinstance(projected, torch.Tensor) or projected.shape[-1] != projector.out_features:
            raise ConformanceError(check, subject, f"the projector returned {_shape(projected)} for "
                                                   f"{tuple(features.shape)} features, expected the last "
                                                   f"dimension to be out_features {projector.out_features}")
        ids, mask = query_batch["input_ids"], query_batch["attention_mask"]
        with _guard(check, subject, "the backbone"):
            hidden = backbone(backbone.get_input_embeddings()(ids), mask, query_batch.get("position_ids"))
        expected = (*ids.shape, backbone.hidden_size)
        if not isinstance(hidden, torch.Tensor) or tuple(hidden.shape) != expected:
            raise ConformanceError(check, subject, f"the backbone returned {_shape(hidden)}, expected {expected} "
                                                   "(B, L, hidden_size) hidden states")


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__qualname__


def _check_embedding_shapes(retriever: Retriever, queries: list[str], pages: list[Any], query_out: _Encoded,
                            page_out: _Encoded, query_batch: Mapping[str, torch.Tensor],
                            page_batch: Mapping[str, torch.Tensor], report: ConformanceReport, subject: str) -> None:
    check = "embedding_shapes"
    dim, multi = retriever.query_head.dim, retriever.multi_vector
    kind = "multi-vector (B, L, dim)" if multi else "pooled (B, dim)"
    for what, out, batch in (("query", query_out, query_batch), ("page", page_out, page_batch)):
        rows = batch["input_ids"].shape[0]
        shape = tuple(out.embeddings.shape)
        if out.embeddings.dim() != (3 if multi else 2) or shape[0] != rows or shape[-1] != dim:
            raise ConformanceError(check, subject, f"{what} forward gave {shape} for {rows} rows; the heads declare "
                                                   f"{kind} with dim {dim}")
        if out.mask is not None and tuple(out.mask.shape) != shape[:2]:
            raise ConformanceError(check, subject, f"{what} embeddings {shape} do not line up with the mask "
                                                   f"{tuple(out.mask.shape)}")
    with _guard(check, subject, "embed_queries / embed_images"):
        embedded_queries = retriever.embed_queries(queries, batch_size=len(queries))
        embedded_pages = retriever.embed_images(pages, batch_size=len(pages))
    for what, embedded, n in (("embed_queries", embedded_queries, len(queries)),
                              ("embed_images", embedded_pages, len(pages))):
        shape = tuple(embedded.shape)
        if len(shape) != (3 if multi else 2) or shape[0] != n or shape[-1] != dim:
            raise ConformanceError(check, subject, f"{what} gave {shape} for {n} inputs, expected {kind} with dim "
                                                   f"{dim}")
    report.query_shape, report.page_shape = tuple(embedded_queries.shape), tuple(embedded_pages.shape)


def _resolve_rule_set(registry: Registry, retriever: Retriever, lora: Any, subject: str) -> LoraRuleSet | None:
    if lora is None:
        lora = retriever.recipe.lora
    if lora is None or isinstance(lora, LoraRuleSet):
        return lora
    with _guard("lora_rules", subject, "resolving the LoRA rule set"):
        return registry.rule_set(lora) if isinstance(lora, str) else LoraRuleSet.model_validate(dict(lora))


def _check_lora(retriever: Retriever, registry: Registry, lora: Any, query_batch: Mapping[str, torch.Tensor],
                page_batch: Mapping[str, torch.Tensor], report: ConformanceReport, subject: str) -> None:
    from vlzoo_core.model.lora import apply_lora, count_parameters, plan_lora

    rule_set = _resolve_rule_set(registry, retriever, lora, subject)
    if rule_set is None:
        for check in LORA_CHECKS:
            report.skipped[check] = "the recipe names no LoRA rule set and none was passed"
        return
    with _guard("lora_rules", subject, f"planning LoRA rule set {rule_set.name!r}"):
        plan = plan_lora(retriever, rule_set)
    rules = {rule.name: rule for rule in rule_set.rules}
    _fail("lora_rules", subject, [
        f"LoRA rule set {rule_set.name!r}: rule {name!r} ({rules[name].component}: /{rules[name].pattern}/, "
        f"{rules[name].mode}) matched no module" + ("" if rules[name].mode == "full" else " (LoRA rules select "
                                                    "nn.Linear modules only)")
        for name in plan.unmatched
    ])
    report.passed.append("lora_rules")

    targets = [*plan.targets("lora"), *plan.targets("full")]
    modules = dict(retriever.named_modules())
    called: set[str] = set()
    handles = [modules[name].register_forward_hook(lambda *_, name=name: called.add(name)) for name in targets]
    try:
        with _guard("lora_targets_used", subject, "encoding with hooks on the selected modules"), torch.no_grad():
            retriever(**_to(query_batch, retriever.device))
            retriever(**_to(page_batch, retriever.device))
    finally:
        for handle in handles:
            handle.remove()
    unused = [name for name in targets if name not in called]
    _fail("lora_targets_used", subject, [
        f"{len(unused)} module(s) selected by LoRA rule set {rule_set.name!r} are never called when queries and "
        f"pages are embedded, e.g. {unused[:3]} (a forward that reads `.weight` directly bypasses the adapter)"
    ] if unused else [])
    report.passed.append("lora_targets_used")

    with _guard("lora_parameters", subject, "building the model on the meta device (as `vlzoo lora` does)"):
        skeleton = assemble(registry, retriever.recipe, device="meta")
    with _guard("lora_parameters", subject, f"applying LoRA rule set {rule_set.name!r} with peft"):
        skeleton_plan = plan_lora(skeleton, rule_set)
        expected = skeleton_plan.expected_trainable_parameters(skeleton)
        trainable, total = count_parameters(apply_lora(skeleton, rule_set))
    if trainable != expected:
        raise ConformanceError("lora_parameters", subject,
                               f"LoRA rule set {rule_set.name!r}: {trainable:,} trainable parameters after peft, "
                               f"but the analytic r*(in+out) + fully trained sum is {expected:,}")
    report.passed.append("lora_parameters")
    report.lora = {"rule_set": rule_set.name, "matches": {name: len(found) for name, found in plan.matches.items()},
                   "trainable": trainable, "total": total}


def _check_round_trip(retriever: Retriever, registry: Registry, queries: list[str], pages: list[Any],
                      query_batch: Mapping[str, torch.Tensor], page_batch: Mapping[str, torch.Tensor],
                      query_out: _Encoded, page_out: _Encoded, subject: str) -> None:
    from vlzoo_core.model.persist import load_retriever

    check = "round_trip"
    with tempfile.TemporaryDirectory(prefix="vlzoo-conformance-") as directory:
        with _guard(check, subject, "save_pretrained"):
            retriever.save_pretrained(directory)
        with _guard(check, subject, "loading the saved folder (vlzoo.load)"):
            loaded = load_retriever(registry, directory, device=retriever.device).eval()
        with _guard(check, subject, "processing with the reloaded processor"):
            reloaded_batches = (loaded.processor.process_queries(queries),
                                loaded.processor.process_images(pages))
        for what, before, after in zip(("queries", "pages"), (query_batch, page_batch), reloaded_batches):
            different = sorted(k for k in set(before) | set(after)
                               if k not in before or k not in after or not torch.equal(before[k], after[k]))
            if different:
                raise ConformanceError(check, subject, f"the reloaded processor gives other {what} inputs "
                                                       f"({', '.join(different)}); save every file it needs")
        with _guard(check, subject, "encoding with the reloaded model"):
            reloaded = (_Encoded(loaded, query_batch, pages=False), _Encoded(loaded, page_batch, pages=True))
        for what, before, after in zip(("query", "page"), (query_out, page_out), reloaded):
            if before.embeddings.shape != after.embeddings.shape:
                raise ConformanceError(check, subject, f"{what} embeddings change shape after save_pretrained -> "
                                                       f"load: {tuple(before.embeddings.shape)} -> "
                                                       f"{tuple(after.embeddings.shape)}")
            if not torch.equal(before.embeddings, after.embeddings):
                difference = float((before.embeddings - after.embeddings).abs().max())
                raise ConformanceError(check, subject, f"{what} embeddings differ after save_pretrained -> load "
                                                       f"(max difference {difference:.3g}); is some state not a "
                                                       "saved parameter or persistent buffer?")
