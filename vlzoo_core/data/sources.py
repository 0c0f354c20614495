"""Loading a configured `DataSource` as a `datasets.Dataset` with canonical columns, and checking one cheaply.

Every loaded dataset has the columns `query`, `image` and, when `columns.negatives` is set, `negative`;
other columns are dropped. Images are NOT decoded here: image features are cast to
`datasets.Image(decode=False)` (rows hold `{"bytes": ..., "path": ...}` dicts) and path columns hold path
strings, so iterating the dataset never raises on a corrupt image; `ContrastiveCollator` decodes them and
skips (or, in strict mode, reports) bad rows.
"""

from __future__ import annotations

import difflib
import glob
import importlib
import itertools
import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlzoo_core.errors import ConfigError
from vlzoo_core.training.run_config import DataSource, SyntheticSource

CANONICAL = {"query": "query", "image": "image", "negatives": "negative"}
"""Config field in `Columns` -> the column name it gets in the loaded dataset."""

EXTENSIONS = {"parquet": (".parquet",), "arrow": (".arrow",), "jsonl": (".jsonl",)}
BUILDERS = {"parquet": "parquet", "arrow": "arrow", "jsonl": "json"}
GLOB_CHARS = frozenset("*?[")


# ---- helpers ---------------------------------------------------------------------------------------------


def _configured_columns(source: DataSource) -> dict[str, str]:
    """Config field -> column name in the data, for the columns this source uses."""
    columns = {"query": source.columns.query, "image": source.columns.image}
    if source.columns.negatives is not None:
        columns["negatives"] = source.columns.negatives
    return columns


def _check_columns(available: Iterable[str], source: DataSource, where: str, origin: str = "the data") -> None:
    available = list(available)
    configured = _configured_columns(source)
    if len(set(configured.values())) != len(configured):
        shown = ", ".join(f"{field}={column!r}" for field, column in configured.items())
        raise ConfigError(f"{where}.columns: one column is used for two roles ({shown})")
    for field, column in configured.items():
        if column in available:
            continue
        close = _suggest(column, available)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigError(
            f"{where}.columns.{field}: column {column!r} not in {origin} (columns: {', '.join(available) or 'none'})"
            f"{hint}"
        )


def _suggest(column: str, available: list[str]) -> str | None:
    """The available column most like `column`: a near spelling, another case, a containing name
    ('image' -> 'page_image'), or a shared prefix of 3+ letters ('query' -> 'question')."""
    close = difflib.get_close_matches(column, available, n=1, cutoff=0.6)
    if close:
        return close[0]
    lowered = column.lower()
    names = [(name, name.lower()) for name in available]
    rules = (
        lambda name: name == lowered,
        lambda name: (len(lowered) >= 3 and lowered in name) or (len(name) >= 3 and name in lowered),
        lambda name: len(lowered) >= 3 and name[:3] == lowered[:3],
    )
    for rule in rules:
        found = [name for name, low in names if rule(low)]
        if found:
            return found[0]
    return None


def _resolve_path(path: str, base_dir: Path | None) -> str:
    expanded = os.path.expanduser(path)
    if base_dir is not None and not os.path.isabs(expanded):
        expanded = os.path.join(base_dir, expanded)
    return expanded


def resolve_files(source: DataSource, *, base_dir: Path | None = None, where: str = "data.train") -> list[Path]:
    """The local data files a parquet / arrow / jsonl source names (a file, a folder or a glob), sorted.

    A folder contributes every file with the kind's extension below it. Nothing found is a ConfigError.
    """
    assert source.path is not None and source.kind in EXTENSIONS
    pattern = _resolve_path(source.path, base_dir)
    extensions = EXTENSIONS[source.kind]
    if any(char in pattern for char in GLOB_CHARS):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not files:
            raise ConfigError(f"{where}.path: {source.path!r} matches no files (looked for {pattern!r})")
        return files
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        # Hidden files and datasets' own cache files ("cache-*.arrow") are not data.
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(extensions)
                       and not p.name.startswith("cache-")
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise ConfigError(f"{where}.path: folder {str(path)!r} has no {'/'.join(extensions)} files")
        return files
    raise ConfigError(f"{where}.path: no such file or folder {str(path)!r}")


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk`."""
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _undecoded(feature: Any) -> Any:
    """The same feature with every `datasets.Image` inside it set to decode=False."""
    import datasets

    if isinstance(feature, datasets.Image):
        return datasets.Image(mode=feature.mode, decode=False)
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        inner = _undecoded(feature.feature)
        if inner is feature.feature:
            return feature
        if isinstance(feature, datasets.LargeList):
            return datasets.LargeList(inner)
        return datasets.List(inner, length=feature.length)
    if isinstance(feature, dict):
        changed = {key: _undecoded(value) for key, value in feature.items()}
        if all(changed[key] is feature[key] for key in feature):
            return feature
        return type(feature)(changed) if isinstance(feature, datasets.Features) else changed
    return feature


def _has_string_paths(feature: Any) -> bool:
    """Whether a column holds path strings (a string, or a list of strings)."""
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string")
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return _has_string_paths(feature.feature)
    return False


def _absolute(value: Any, folder: str) -> Any:
    if isinstance(value, str):
        if not value or os.path.isabs(value) or "://" in value:
            return value
        return os.path.join(folder, os.path.expanduser(value))
    if isinstance(value, list):
        return [_absolute(item, folder) for item in value]
    return value


def _resolve_image_paths(dataset, folder: Path):
    """Make relative path strings in the image / negative columns absolute, relative to `folder`."""
    columns = [name for name in ("image", "negative")
               if name in dataset.column_names and _has_string_paths(dataset.features[name])]
    if not columns:
        return dataset
    folder_str = str(folder)

    def resolve(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {name: [_absolute(value, folder_str) for value in batch[name]] for name in columns}

    # In memory: path columns are small, and a `save_to_disk` folder must not get cache files written into it.
    return dataset.map(resolve, batched=True, keep_in_memory=True, desc="resolving image paths")


def _canonical(dataset, source: DataSource, where: str, origin: str = "the data"):
    """Keep the configured columns, renamed to `query`, `image`, `negative`; undecoded images."""
    _check_columns(dataset.column_names, source, where, origin)
    configured = _configured_columns(source)
    dataset = dataset.select_columns(list(configured.values()))
    renames = {column: CANONICAL[field] for field, column in configured.items() if column != CANONICAL[field]}
    if renames:
        dataset = dataset.rename_columns(renames)
    for name, feature in dataset.features.items():
        undecoded = _undecoded(feature)
        if undecoded is not feature:
            dataset = _cast_undecoded(dataset, name, undecoded)
    return dataset


def _cast_undecoded(dataset, name: str, feature: Any):
    """`dataset` with column `name` given the undecoded `feature`.

    For an Image column `cast_column` only swaps the feature. A list of images needs the column rewritten;
    that is done in memory, so nothing (no cache file) is written into the user's data folder.
    """
    if hasattr(feature, "decode_example"):
        return dataset.cast_column(name, feature)
    features = dataset.features.copy()
    features[name] = feature
    return dataset.cast(features, keep_in_memory=True)


def _limit(dataset, limit: int | None):
    if limit is not None and limit < len(dataset):
        return dataset.select(range(limit))
    return dataset


def _describe_exception(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def hub_offline() -> bool:
    """Whether the Hub is out of reach: switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or unreachable.

    Reachability is one short TCP connect, so that `vlzoo validate` on a machine without network answers
    at once instead of waiting out the Hub client's retries.
    """
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError:
        return True
    return False


# ---- loading ---------------------------------------------------------------------------------------------


def load_source(
    source: DataSource,
    *,
    base_dir: Path | None = None,
    where: str = "data.train",
    cache_dir: str | Path | None = None,
):
    """Load `source` as a `datasets.Dataset` with the columns `query`, `image` (and `negative` if configured).

    `base_dir` (the config file's folder) anchors relative paths; `where` ("data.train" / "data.eval") names
    the config section in error messages; `cache_dir` is handed to `datasets.load_dataset`.
    Images stay undecoded: `{"bytes", "path"}` dicts for image features, absolute path strings for jsonl.
    Configuration problems (missing files, unknown columns, unreachable Hub datasets) raise ConfigError.
    """
    if source.kind == "synthetic":
        synthetic = importlib.import_module("vlzoo_core.data.synthetic")
        dataset = synthetic.synthetic_dataset(source.synthetic or SyntheticSource())
        return _canonical(_limit(dataset, source.limit), source, where, "the synthetic data")
    if source.kind == "hub":
        return _load_hub(source, where, cache_dir)
    return _load_local(source, base_dir, where, cache_dir)


def _load_hub(source: DataSource, where: str, cache_dir: str | Path | None):
    import datasets

    try:
        dataset = datasets.load_dataset(source.path, split=source.split, revision=source.revision,
                                        cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as exc:  # noqa: BLE001 - offline, missing, private, unknown split: all user-facing
        field = "split" if "split" in str(exc).lower() and "unknown" in str(exc).lower() else "path"
        offline = " (offline: HF_HUB_OFFLINE is set and it is not in the local cache)" if hub_offline() else ""
        revision = f", revision {source.revision!r}" if source.revision else ""
        raise ConfigError(
            f"{where}.{field}: cannot load Hub dataset {source.path!r} (split {source.split!r}{revision})"
            f"{offline}: {_describe_exception(exc)}"
        ) from exc
    if not isinstance(dataset, datasets.Dataset):
        raise ConfigError(f"{where}.path: Hub dataset {source.path!r} did not give a single split "
                          f"(got {type(dataset).__name__}); set 'split'")
    dataset = _limit(dataset, source.limit)
    return _canonical(dataset, source, where, f"Hub dataset {source.path!r}")


def _load_local(source: DataSource, base_dir: Path | None, where: str, cache_dir: str | Path | None):
    import datasets

    path = Path(_resolve_path(source.path or "", base_dir))
    if source.kind == "arrow" and _is_saved_dataset(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{where}.path: cannot read saved dataset {str(path)!r}: "
                              f"{_describe_exception(exc)}") from exc
        if isinstance(loaded, datasets.DatasetDict):
            if source.split not in loaded:
                raise ConfigError(f"{where}.split: {source.split!r} not in {str(path)!r} "
                                  f"(splits: {', '.join(loaded)})")
            loaded = loaded[source.split]
        return _canonical(_limit(loaded, source.limit), source, where, repr(str(path)))

    files = resolve_files(source, base_dir=base_dir, where=where)
    # Files are loaded a folder at a time (consecutive runs, keeping the sorted order) so relative image
    # paths resolve against their own file's folder.
    groups = [(folder, [str(file) for file in run]) for folder, run in itertools.groupby(files, key=lambda f: f.parent)]
    parts = []
    remaining = source.limit
    for folder, group in groups:
        try:
            dataset = datasets.load_dataset(BUILDERS[source.kind], data_files=group, split="train",
                                            cache_dir=None if cache_dir is None else str(cache_dir))
        except Exception as exc:  # noqa: BLE001 - malformed files are a user-facing problem
            shown = group[0] if len(group) == 1 else f"{len(group)} files in {str(folder)!r}"
            raise ConfigError(f"{where}.path: cannot read {source.kind} data {shown!r}: "
                              f"{_describe_exception(exc)}") from exc
        origin = repr(group[0]) if len(group) == 1 else f"the files in {str(folder)!r}"
        dataset = _canonical(_limit(dataset, remaining), source, where, origin)
        dataset = _resolve_image_paths(dataset, folder)
        parts.append(dataset)
        if remaining is not None:
            remaining -= len(dataset)
            if remaining <= 0:
                break
    if len(parts) == 1:
        return parts[0]
    return datasets.concatenate_datasets(parts)


# ---- checking --------------------------------------------------------------------------------------------


def _arrow_schema_names(file: Path) -> list[str]:
    import pyarrow as pa

    with pa.memory_map(str(file)) as stream:
        try:
            return list(pa.ipc.open_stream(stream).schema.names)
        except pa.ArrowInvalid:
            stream.seek(0)
            return list(pa.ipc.open_file(stream).schema.names)


def _first_json_line(file: Path, where: str) -> dict[str, Any]:
    with file.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{where}.path: {str(file)!r} line {number} is not JSON: {exc.msg}") from exc
                if not isinstance(row, dict):
                    raise ConfigError(f"{where}.path: {str(file)!r} line {number} is not a JSON object")
                return row
    raise ConfigError(f"{where}.path: {str(file)!r} is empty")


def check_source(source: DataSource, *, base_dir: Path | None = None, where: str = "data.train") -> str:
    """Check `source` cheaply for `vlzoo validate`: files exist, configured columns exist.

    Reads only schemas (parquet footers, arrow stream headers) or the first line of jsonl files; never
    decodes an image or loads the data. Hub sources are not contacted when offline (HF_HUB_OFFLINE /
    HF_DATASETS_OFFLINE): a note says so. Returns one human-readable line; raises ConfigError on problems.
    """
    limit = f", first {source.limit} rows" if source.limit else ""
    columns = ", ".join(f"{field}={column!r}" for field, column in _configured_columns(source).items())
    if source.kind == "synthetic":
        from vlzoo_core.data.synthetic import COLUMNS, check_options

        options = source.synthetic or SyntheticSource()
        check_options(options, f"{where}.synthetic")
        _check_columns(list(COLUMNS), source, where, "the synthetic data")
        return f"synthetic: {options.pages} pages, seed {options.seed}, {options.split} split{limit}"
    if source.kind == "hub":
        return _check_hub(source, where, columns, limit)

    path = Path(_resolve_path(source.path or "", base_dir))
    if source.kind == "arrow" and _is_saved_dataset(path):
        try:
            info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{where}.path: cannot read {str(path / 'dataset_info.json')!r}: {exc}") from exc
        names = list((info.get("features") or {}).keys())
        _check_columns(names, source, where, repr(str(path)))
        return f"arrow: saved dataset {str(path)!r}; columns {columns}{limit}"

    files = resolve_files(source, base_dir=base_dir, where=where)
    rows = None
    for file in files:
        try:
            if source.kind == "parquet":
                import pyarrow.parquet as pq

                metadata = pq.read_metadata(str(file))
                names = list(metadata.schema.to_arrow_schema().names)
                rows = (rows or 0) + metadata.num_rows
            elif source.kind == "arrow":
                names = _arrow_schema_names(file)
            else:
                names = list(_first_json_line(file, where))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a file of the wrong format
            raise ConfigError(f"{where}.path: cannot read {source.kind} file {str(file)!r}: "
                              f"{_describe_exception(exc)}") from exc
        _check_columns(names, source, where, repr(str(file)))
    count = f"{len(files)} file" + ("s" if len(files) != 1 else "")
    size = f", {rows} rows" if rows is not None else ""
    return f"{source.kind}: {count} at {str(path)!r}{size}; columns {columns}{limit}"


def _check_hub(source: DataSource, where: str, columns: str, limit: str) -> str:
    described = f"hub: {source.path!r} split {source.split!r}" + (
        f" revision {source.revision!r}" if source.revision else "")
    if hub_offline():
        return f"{described}; columns {columns}{limit}; not checked (offline: the Hub is switched off or unreachable)"
    import datasets

    try:
        builder = datasets.load_dataset_builder(source.path, revision=source.revision)
    except datasets.exceptions.DatasetNotFoundError as exc:
        raise ConfigError(f"{where}.path: Hub dataset {source.path!r} not found or not accessible: "
                          f"{_describe_exception(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - no network, rate limits: report, don't fail validation
        return f"{described}; not checked (Hub not reachable: {_describe_exception(exc)})"
    info = builder.info
    if info.splits and source.split not in info.splits:
        raise ConfigError(f"{where}.split: {source.split!r} not in Hub dataset {source.path!r} "
                          f"(splits: {', '.join(info.splits)})")
    if info.features is None:
        return f"{described}; columns {columns}{limit}; columns not checked (the Hub lists no features)"
    _check_columns(list(info.features), source, where, f"Hub dataset {source.path!r}")
    return f"{described}; columns {columns}{limit}; checked on the Hub"
