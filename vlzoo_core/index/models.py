"""Which model an index belongs to: building it from a name or a run folder, identifying it, loading it again."""

from __future__ import annotations

from pathlib import Path

import torch

from vlzoo_core.errors import SearchIndexError
from vlzoo_core.index.manifest import ModelIdentity, processor_fingerprint, weights_fingerprint
from vlzoo_core.model.retriever import CONFIG_FILE, Retriever


def identify(model: Retriever, *, source: str = "recipe", weights: str | None = None,
             adapter: str | None = None) -> ModelIdentity:
    return ModelIdentity(recipe=model.recipe.name, source=source, weights=weights, adapter=adapter,
                         fingerprint=weights_fingerprint(model),
                         processor=processor_fingerprint(model.recipe, model.processor))


def is_run_dir(spec: str | Path) -> bool:
    return (Path(spec) / CONFIG_FILE).is_file()


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    adapter: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[Retriever, ModelIdentity]:
    """A retriever from a registered name (with optional weights and adapter) or a vlzoo folder
    (`vlzoo train` output or `save_pretrained`), and its identity."""
    import vlzoo

    if is_run_dir(spec):
        if weights is not None or adapter is not None:
            raise SearchIndexError(f"{spec} is a trained model folder; --weights and --adapter apply to registered "
                                   "model names only")
        folder = str(Path(spec).resolve())
        model = vlzoo.load(folder, device=device, dtype=dtype)
        return model, identify(model, source="run_dir", weights=folder)
    if Path(spec).is_dir():
        raise SearchIndexError(f"{spec}: a folder without {CONFIG_FILE}; pass a `vlzoo train` output folder or a "
                               "registered model name (with --weights for a checkpoint)")
    model = vlzoo.build(spec, weights=weights, adapter=adapter, device=device, dtype=dtype)
    resolved = str(Path(weights).resolve()) if weights is not None and Path(weights).exists() else weights
    adapter = str(Path(adapter).resolve()) if adapter is not None and Path(adapter).exists() else adapter
    return model, identify(model, weights=resolved, adapter=adapter)


def reload_model(identity: ModelIdentity, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | str | None = None) -> Retriever:
    """The model an index was built with, loaded again from what its manifest records."""
    if identity.weights is None:
        raise SearchIndexError(f"the index was built with a random-init {identity.recipe}, which cannot be loaded "
                               "again; pass the same model object (Python) or index with trained weights")
    spec = identity.weights if identity.source == "run_dir" else identity.recipe
    weights = None if identity.source == "run_dir" else identity.weights
    model, found = load_model(spec, weights=weights, adapter=identity.adapter, device=device, dtype=dtype)
    check_same_model(identity, found, where="the model recorded in the manifest")
    return model


def check_same_model(expected: ModelIdentity, actual: ModelIdentity, *, where: str = "this model") -> None:
    if not expected.same_model(actual):
        raise SearchIndexError(f"the index was built with {expected.describe()}, but {where} is "
                               f"{actual.describe()}; search with the model that built the index")
