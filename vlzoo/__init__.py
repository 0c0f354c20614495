"""vlzoo: a plugin-based zoo of vision-language document retrievers.

    import vlzoo
    model = vlzoo.build("colllava_tiny")
    q = model.embed_queries(["red circle"])
    d = model.embed_images([page])
    scores = model.score(q, d)

Importing vlzoo does not import torch; `build` and `load` do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlzoo_core.config import Recipe
from vlzoo_core.registry import Registry

if TYPE_CHECKING:
    import torch

    from vlzoo_core.model.retriever import Retriever

__version__ = "0.1.0"

_registry: Registry | None = None


def catalog_path() -> Path:
    """The built-in `registry.toml`: packaged next to this module, or at the source tree's root."""
    packaged = Path(__file__).with_name("registry.toml")
    return packaged if packaged.exists() else Path(__file__).resolve().parent.parent / "registry.toml"


def registry() -> Registry:
    """The process-wide registry: entry-point plugins plus the built-in catalog, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = Registry(catalogs=[catalog_path()])
    return _registry


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a glob, e.g. `list_models("colllava*")`."""
    return [recipe.name for recipe in registry().list_recipes(pattern)]


def recipe(name: str) -> Recipe:
    return registry().recipe(name)


def build(
    name: str,
    weights: str | Path | None = None,
    *,
    adapter: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> Retriever:
    """Build a registered retriever.

    weights: None for random init (nothing is downloaded), "pretrained" for the recipe's own weights
    (and its published adapter, if any), or a local folder / Hub id of a checkpoint in the recipe's format.
    adapter: a folder / Hub id of a PEFT LoRA adapter trained on those weights, merged after loading
    (e.g. a colpali-engine base folder plus its adapter folder).
    overrides: recipe fields to change, e.g. `document_path="vision"` or
    `query_head={"name": "mean_pooled"}`; nested dicts merge into the recipe.
    """
    from vlzoo_core.model.builder import build_retriever

    reg = registry()
    return build_retriever(reg, reg.recipe(name), weights=weights, adapter=adapter, device=device, dtype=dtype,
                           overrides=overrides)


def load(
    directory: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
) -> Retriever:
    """Load a retriever written by `Retriever.save_pretrained`."""
    from vlzoo_core.model.persist import load_retriever

    return load_retriever(registry(), directory, device=device, dtype=dtype)


def evaluate(
    model: Retriever | str | Path | None = None,
    dataset: str | Path | None = None,
    *,
    benchmark: str | None = None,
    tasks: list[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate a retriever on a dataset (a Hub id, or a ViDoRe v1 table / BEIR folder on disk) or on a ViDoRe
    benchmark ("vidore-v1", "vidore-v2", "vidore-v3"), with MTEB's metrics; what `vlzoo eval` writes.

    `model`: a `Retriever`, a registered name or a `vlzoo train` output folder. `options` go to
    `vlzoo_core.evaluation.runner.evaluate` (split, format, columns, subsets, revision, settings, index,
    cache_dir, batch_size, per_query, ...). A dataset gives its task result in MTEB's layout; a benchmark
    gives {"tasks": [...], "task_scores", "mean_task", "mean_public"}.
    """
    from vlzoo_core.evaluation.benchmarks import run_benchmark
    from vlzoo_core.evaluation.runner import evaluate as evaluate_dataset

    if isinstance(model, (str, Path)):
        from vlzoo_core.index.models import load_model

        model, options["identity"] = load_model(str(model), device=options.pop("device", None))
    if (dataset is None) == (benchmark is None):
        raise ValueError("give a dataset or a benchmark")
    if benchmark is not None:
        return run_benchmark(model, benchmark, tasks=tasks, **options)
    return evaluate_dataset(model, dataset, **options)


def __getattr__(name: str) -> Any:
    if name == "Index":  # imports torch, so only on first use
        from vlzoo_core.index.index import Index

        return Index
    raise AttributeError(f"module 'vlzoo' has no attribute {name!r}")


__all__ = ["Index", "build", "catalog_path", "evaluate", "list_models", "load", "recipe", "registry"]
