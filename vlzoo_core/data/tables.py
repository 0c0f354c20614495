"""Reading tables column by column, in batches, without decoding images: parquet and Arrow files (one or
several shards) and Hub datasets. The index reads page tables with it, the evaluation reads corpora, queries
and qrels; neither loads a whole table of images into memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlzoo_core.errors import VlzooError

ROWS_PER_BATCH = 64
TABLE_SUFFIXES = (".parquet", ".arrow")


@dataclass(frozen=True)
class TableReader:
    """A table's column names and row count, and its rows in batches of selected columns.

    Image cells come undecoded: bytes, a path string, or a `{"bytes", "path"}` dict; relative paths are
    relative to `folder`.
    """

    source: str
    columns: list[str]
    rows: int
    folder: Path | None
    _batches: Callable[[list[str]], Iterator[dict[str, list]]]

    def batches(self, columns: Sequence[str]) -> Iterator[dict[str, list]]:
        """Batches of rows, each a dict of the named columns."""
        return self._batches(list(columns))

    def column(self, role: str, wanted: str | None, candidates: Sequence[str]) -> str | None:
        """The column for `role`: `wanted` when given (an error naming the columns found if the table has no
        such column), else the first of `candidates` the table has, else None."""
        if wanted is not None:
            if wanted not in self.columns:
                raise VlzooError(f"{self.source}: no {role} column {wanted!r} (columns found: "
                                 f"{', '.join(self.columns) or 'none'})")
            return wanted
        return next((name for name in candidates if name in self.columns), None)

    def read(self, columns: Sequence[str]) -> dict[str, list]:
        """The named columns, whole (for small tables: queries, qrels)."""
        out: dict[str, list] = {column: [] for column in columns}
        for batch in self.batches(columns):
            for column in columns:
                out[column].extend(batch[column])
        return out


def open_parquet(paths: Sequence[Path], source: str | None = None) -> TableReader:
    """One table from parquet files with the same columns (a dataset's shards), read in order."""
    import pyarrow.parquet as pq

    paths = list(paths)
    source = source or paths[0].name
    try:
        metadata = [pq.read_metadata(path) for path in paths]
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise VlzooError(f"cannot read table {_shown(paths)}: {exc}") from exc
    columns = metadata[0].schema.to_arrow_schema().names

    def batches(wanted: list[str]) -> Iterator[dict[str, list]]:
        for path in paths:
            with pq.ParquetFile(path) as reader:
                for batch in reader.iter_batches(batch_size=ROWS_PER_BATCH, columns=wanted):
                    yield batch.to_pydict()

    return TableReader(source, columns, sum(m.num_rows for m in metadata), paths[0].parent, batches)


def _open_arrow(source: Any) -> tuple[Any, Iterator]:
    """The schema and record batches of an Arrow IPC file, in the file or the stream format (datasets
    writes streams)."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        source.seek(0)
        reader = pa.ipc.open_stream(source)
        return reader.schema, iter(reader)


def open_arrow(paths: Sequence[Path], source: str | None = None) -> TableReader:
    """One table from Arrow IPC files (file or stream format) with the same columns, read in order."""
    import pyarrow as pa

    paths = list(paths)
    source = source or paths[0].name
    rows, columns = 0, []
    try:
        for path in paths:
            with pa.memory_map(str(path)) as mapped:
                schema, batches = _open_arrow(mapped)
                rows += sum(batch.num_rows for batch in batches)
                if path == paths[0]:
                    columns = schema.names
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise VlzooError(f"cannot read table {_shown(paths)}: {exc}") from exc

    def row_batches(wanted: list[str]) -> Iterator[dict[str, list]]:
        for path in paths:
            with pa.memory_map(str(path)) as mapped:
                for batch in _open_arrow(mapped)[1]:
                    batch = batch.select(wanted)
                    for start in range(0, batch.num_rows, ROWS_PER_BATCH):
                        yield batch.slice(start, ROWS_PER_BATCH).to_pydict()

    return TableReader(source, columns, rows, paths[0].parent, row_batches)


def open_table_files(paths: Sequence[Path], source: str | None = None) -> TableReader:
    """Parquet or Arrow files, by their suffix (all of one kind)."""
    suffixes = {path.suffix.lower() for path in paths}
    if suffixes == {".parquet"}:
        return open_parquet(paths, source)
    if suffixes == {".arrow"}:
        return open_arrow(paths, source)
    raise VlzooError(f"{_shown(list(paths))}: expected .parquet or .arrow files, all of one kind")


def open_hub(name: str, *, config: str | None = None, split: str, revision: str | None = None,
             source: str | None = None) -> TableReader:
    """A Hub dataset's split (from the local cache when offline)."""
    import datasets

    shown = source or name
    try:
        dataset = datasets.load_dataset(name, config, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - offline, missing, gated, bad split, ...
        message = " ".join(str(exc).split())
        what = f"config {config!r}, split {split!r}" if config else f"split {split!r}"
        raise VlzooError(f"cannot load Hub dataset {shown!r} ({what}): {message}") from exc

    def batches(wanted: list[str]) -> Iterator[dict[str, list]]:
        selected = dataset.select_columns(wanted)
        for column in wanted:
            if isinstance(selected.features[column], datasets.Image):
                # Undecoded, so a page's size is checked before decoding and a bad image costs one row.
                selected = selected.cast_column(column, datasets.Image(decode=False))
        yield from selected.iter(batch_size=ROWS_PER_BATCH)

    return TableReader(shown, list(dataset.column_names), len(dataset), None, batches)


def _shown(paths: list[Path]) -> str:
    return str(paths[0]) + (f" (and {len(paths) - 1} more files)" if len(paths) > 1 else "")
