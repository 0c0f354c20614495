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


def __getattr__(name: str) -> Any:
    if name == "Index":  # imports torch, so only on first use
        from vlzoo_core.index.index import Index

        return Index
    raise AttributeError(f"module 'vlzoo' has no attribute {name!r}")


__all__ = ["Index", "build", "catalog_path", "list_models", "load", "recipe", "registry"]
