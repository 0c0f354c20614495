"""Finding and loading checkpoints: local folders or Hub ids, safetensors only, keys mapped by plugins."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlzoo_core.errors import CheckpointError
from vlzoo_core.interfaces import CheckpointFormat

CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def resolve_source(source: str | Path, revision: str | None = None) -> Path:
    """A local folder as is; anything else is a Hub repo id, downloaded (safetensors and configs only)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(source).startswith((".", "/", "~")) or str(source).count("/") != 1:
        raise CheckpointError(f"weights {str(source)!r}: not a folder and not a Hub id of the form 'owner/name'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), revision=revision, allow_patterns=CHECKPOINT_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, auth: all are the user's to fix
        raise CheckpointError(f"weights {str(source)!r}: cannot download from the Hub: {type(exc).__name__}: {exc}") from exc


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON: {exc}") from exc


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise CheckpointError(f"{index}: names shard(s) {missing[:3]} that are not in {folder}")
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors weights (pickled .bin checkpoints are not loaded)")
    return files


class PrefixKeyMap:
    """Rename checkpoint keys by their longest matching prefix; a target of None drops the key."""

    def __init__(self, prefixes: Mapping[str, str | None]) -> None:
        self._prefixes = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)

    def __call__(self, key: str) -> str | None:
        for source, target in self._prefixes:
            if key.startswith(source):
                return None if target is None else target + key[len(source) :]
        return key


def load_checkpoint(
    model: nn.Module,
    folder: Path,
    checkpoint_format: CheckpointFormat,
    *,
    allow_missing: Iterable[str] = (),
    files: Iterable[Path] | None = None,
) -> list[str]:
    """Load every safetensors file in `folder` into `model`, mapping keys with the checkpoint format.

    Fails on any unexpected key, and on any missing key that does not start with one of `allow_missing`
    (parameters that are new in the retriever, such as its heads). `files` limits which safetensors files
    are read (default: the folder's index, else every *.safetensors). Returns the missing keys.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    sources: dict[str, str] = {}
    for file in safetensors_files(folder) if files is None else files:
        try:
            tensors = load_file(str(file))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"{file}: cannot read safetensors: {exc}") from exc
        for key, tensor in tensors.items():
            target = checkpoint_format.map_key(key)
            if target is None:
                continue
            if target in sources:
                raise CheckpointError(f"{folder}: keys {sources[target]!r} and {key!r} both map to {target!r}")
            sources[target] = key
            if target not in expected:
                unexpected.append(key)
                continue
            if tensor.shape != expected[target].shape:
                raise CheckpointError(
                    f"{folder}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[target].shape)}"
                )
            state[target] = tensor
    allowed = tuple(allow_missing)
    missing = sorted(set(expected) - set(state))
    blocking = [key for key in missing if not key.startswith(allowed)]
    if unexpected or blocking:
        raise CheckpointError(
            f"{folder}: checkpoint does not fit the model: "
            f"{len(blocking)} missing (e.g. {blocking[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    model.load_state_dict(state, strict=False)
    return missing
