"""The index manifest: which model wrote the vectors, and how they are stored. Written once, at creation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from vlzoo_core.config import StrictModel
from vlzoo_core.errors import SearchIndexError, describe_validation_error

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


class ModelIdentity(StrictModel):
    """Enough to tell two models apart, and to load the model again when the source allows it."""

    recipe: str
    source: Literal["recipe", "run_dir"] = "recipe"
    weights: str | None = None  # what the model was built from: a Hub id, a folder, a run dir; None = random init
    adapter: str | None = None
    fingerprint: str  # sha256 of a sample of every parameter (see `weights_fingerprint`)
    processor: str  # sha256 of the processor's configuration

    def describe(self) -> str:
        origin = self.weights or "random init"
        adapter = f" + adapter {self.adapter}" if self.adapter else ""
        return f"{self.recipe} ({origin}{adapter}, weights {self.fingerprint[:12]})"

    def same_model(self, other: ModelIdentity) -> bool:
        return (self.recipe, self.fingerprint, self.processor) == (other.recipe, other.fingerprint, other.processor)


class Pooling(StrictModel):
    factor: int = Field(1, ge=1, le=64)
    drop_prompt_tokens: bool = False


class BackendRef(StrictModel):
    name: str = "local"
    config: dict[str, Any] = Field(default_factory=dict)


class Manifest(StrictModel):
    format: Literal["vlzoo-index"] = "vlzoo-index"
    format_version: int = FORMAT_VERSION
    model: ModelIdentity
    dim: int = Field(gt=0)
    multi_vector: bool = True
    dtype: Literal["float16", "float32", "int8"] = "float16"
    pooling: Pooling = Field(default_factory=Pooling)
    backend: BackendRef = Field(default_factory=BackendRef)
    shard_size: int = Field(1024, ge=1)
    dpi: int = Field(150, ge=1, le=1200)


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_FILE
    if not path.exists():
        what = "does not exist" if not root.exists() else f"has no {MANIFEST_FILE}"
        raise SearchIndexError(f"{root}: not a vlzoo index (the folder {what})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SearchIndexError(f"{path}: cannot read the manifest: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != "vlzoo-index":
        raise SearchIndexError(f"{path}: not a vlzoo index manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise SearchIndexError(f"{root}: index format version {data.get('format_version')!r}, but this vlzoo reads "
                          f"version {FORMAT_VERSION}; re-create the index with this version")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise SearchIndexError(describe_validation_error(exc, str(path))) from exc


def weights_fingerprint(model: Any, sample: int = 4096) -> str:
    """sha256 over each parameter's name, shape and first `sample` values rounded to bfloat16.

    Cheap at any model size, and the same for a model loaded in float32 or bfloat16 from the same weights;
    any fine-tuning (a merged adapter, a trained head) changes the first values of the tensors it touched.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        values = tensor.detach().reshape(-1)[:sample].to(torch.bfloat16).view(torch.int16)
        digest.update(values.cpu().numpy().tobytes())
    return digest.hexdigest()


def processor_fingerprint(recipe: Any, processor: Any) -> str:
    """sha256 of the processor's registered name, its configuration and its tokenizer's vocabulary size."""
    tokenizer = getattr(processor, "tokenizer", None)
    payload = {
        "processor": recipe.processor.model_dump(mode="json"),
        "class": type(processor).__qualname__,
        "vocab": len(tokenizer) if tokenizer is not None else None,
        "document_path": recipe.document_path,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
