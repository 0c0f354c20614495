"""Turning dataset rows into model batches: the contrastive training collator and the eval-set helper.

Rows come from `load_source` (columns `query`, `image`, optionally `negative`). Image values may be PIL
images, file paths, raw bytes or `datasets.Image` dicts `{"bytes": ..., "path": ...}`; they are decoded
here, so one corrupt page costs one skipped row instead of a crashed run.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from PIL import Image

from vlzoo_core.errors import InputError
from vlzoo_core.model.processing import open_image

logger = logging.getLogger("vlzoo.data")

ROW_INDEX_KEY = "row_index"
"""An optional key in a row dict: the dataset row number to name in warnings and strict-mode errors
(otherwise the row's position in its batch is named)."""


def decode_image(value: Any, index: int = 0, item: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image, a path, bytes or a `{"bytes", "path"}` dict; else InputError."""
    if value is None:
        raise InputError(item, index, "missing (None)")
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            value = data
        elif path:
            value = path
        else:
            raise InputError(item, index, "an image dict with neither bytes nor path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(value))) as opened:
                opened.load()
                value = opened.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
            raise InputError(item, index, f"cannot decode {len(value)} image bytes: {type(exc).__name__}: "
                                          f"{exc}") from exc
    try:
        return open_image(value, index)
    except InputError as exc:
        raise InputError(item, index, exc.reason) from exc


def _first_negative(value: Any) -> Any:
    """One hard negative per row: the value itself, or the first of a list of them."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


class _BadRow(Exception):
    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category, self.reason = category, reason


class ContrastiveCollator:
    """Collate rows `{"query", "image"[, "negative"]}` into `{"query": ..., "document": ...[, "negative": ...]}`.

    Each value is the processor's batch (`process_queries` / `process_images`). A bad row (empty or
    non-string query, missing or unreadable image or negative) is dropped from the batch and counted in
    `skipped` and `skipped_reasons`, with a rate-limited warning on the "vlzoo.data" logger; with
    `strict=True` it raises InputError("row", index, "<field>: <reason>") instead. If no row of a batch is
    usable the result is `{}`: the trainer must treat an empty batch as a no-op (`empty_batches` counts them).

    `with_negatives`: every row must also have a `negative` (a page, or a list of pages of which the first
    is used); the result then has `"negative"`, aligned with `"document"`.

    Counters live in this object; with DataLoader workers (num_workers > 0) each worker has its own copy,
    so the main process's counters stay at zero (the workers' warnings are still logged).
    """

    warn_first = 5
    """How many bad rows are warned about one by one; after that, a summary at 10, 100, 1000, ... rows."""

    def __init__(self, processor, *, strict: bool = False, with_negatives: bool = False) -> None:
        self.processor = processor
        self.strict = strict
        self.with_negatives = with_negatives
        self.skipped = 0
        self.skipped_reasons: Counter[str] = Counter()
        self.empty_batches = 0

    # ---- one row -----------------------------------------------------------------------------------------

    def _prepare(self, row: dict[str, Any]) -> tuple[str, Image.Image, Image.Image | None]:
        query = row.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _BadRow("query: empty or not a string", f"query: expected a non-empty string, got {query!r}")
        page = self._decode(row.get("image"), "image")
        negative = None
        if self.with_negatives:
            negative = self._decode(_first_negative(row.get("negative")), "negative")
        return query, page, negative

    @staticmethod
    def _decode(value: Any, field: str) -> Image.Image:
        if value is None:
            raise _BadRow(f"{field}: missing", f"{field}: missing")
        try:
            return decode_image(value, 0, field)
        except InputError as exc:
            raise _BadRow(f"{field}: unreadable", f"{field}: {exc.reason}") from exc

    def _row_index(self, row: Any, position: int) -> int:
        if isinstance(row, dict) and isinstance(row.get(ROW_INDEX_KEY), int):
            return row[ROW_INDEX_KEY]
        return position

    def _bad_row(self, row: Any, position: int, category: str, reason: str, cause: BaseException | None) -> None:
        index = self._row_index(row, position)
        if self.strict:
            raise InputError("row", index, reason) from cause
        self.skipped += 1
        self.skipped_reasons[category] += 1
        count = self.skipped
        if count <= self.warn_first:
            later = ("; further bad rows are summarised at 10, 100, 1000, ... skipped rows"
                     if count == self.warn_first else "")
            logger.warning("skipping bad row %d: %s%s", index, reason, later)
        elif _is_power_of_ten(count):
            summary = ", ".join(f"{name}: {n}" for name, n in self.skipped_reasons.most_common())
            logger.warning("skipped %d bad rows so far (%s)", count, summary)

    # ---- a batch -----------------------------------------------------------------------------------------

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        prepared: list[tuple[int, Any, tuple[str, Image.Image, Image.Image | None]]] = []
        for position, row in enumerate(rows):
            if not isinstance(row, dict):
                self._bad_row(row, position, "row: not a mapping", f"expected a mapping, got {type(row).__name__}",
                              None)
                continue
            try:
                prepared.append((position, row, self._prepare(row)))
            except _BadRow as exc:
                self._bad_row(row, position, exc.category, exc.reason, exc.__cause__)
        # The processor may still refuse an item (its own checks); drop that row and try again.
        while prepared:
            try:
                return self._process(prepared)
            except _ProcessorRefused as refused:
                position, row, _ = prepared.pop(refused.index)
                self._bad_row(row, position, refused.category, refused.reason, refused.__cause__)
        self.empty_batches += 1
        return {}

    def _process(self, prepared: list[tuple[int, Any, tuple[str, Image.Image, Image.Image | None]]]) -> dict:
        queries = [item[2][0] for item in prepared]
        pages = [item[2][1] for item in prepared]
        steps = [("query", "query", self.processor.process_queries, queries),
                 ("document", "image", self.processor.process_images, pages)]
        if self.with_negatives:
            steps.append(("negative", "negative", self.processor.process_images, [item[2][2] for item in prepared]))
        batch = {}
        for key, field, process, values in steps:
            try:
                batch[key] = process(values)
            except InputError as exc:
                if not 0 <= exc.index < len(prepared):
                    raise
                raise _ProcessorRefused(exc.index, f"{field}: refused by the processor",
                                        f"{field}: {exc.reason}") from exc
        return batch


class _ProcessorRefused(Exception):
    def __init__(self, index: int, category: str, reason: str) -> None:
        super().__init__(reason)
        self.index, self.category, self.reason = index, category, reason


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


# ---- evaluation ----------------------------------------------------------------------------------------------


class PageList(Sequence):
    """Undecoded pages that decode to RGB PIL images on access (one page, or a list for a slice).

    `Retriever.embed_images(pages)` takes it as is, so an eval set never holds every decoded page at once.
    """

    def __init__(self, values: Iterable[Any]) -> None:
        self._values = list(values)

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> list[Image.Image]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [decode_image(value, i) for i, value in zip(range(len(self))[index], self._values[index])]
        return decode_image(self._values[index], index)

    def __iter__(self) -> Iterator[Image.Image]:
        for i, value in enumerate(self._values):
            yield decode_image(value, i)

    @property
    def raw(self) -> list[Any]:
        """The undecoded values (PIL images, paths or `{"bytes", "path"}` dicts)."""
        return list(self._values)


def eval_pairs(dataset: Iterable[dict[str, Any]], *, strict: bool = False) -> tuple[list[str], PageList]:
    """The queries and pages of the usable `query` / `image` rows, row for row.

    Each row's image is its own page (identical images are not merged; see `training.evaluation.EvalSet`
    for how queries and pages pair up). Rows with an empty query or an unreadable image are dropped (logged once
    with the count) or, with `strict`, raise InputError("row", i, ...). Pages are checked once here and
    returned undecoded in a `PageList` that decodes on access.
    """
    if hasattr(dataset, "select_columns") and "negative" in getattr(dataset, "column_names", ()):
        dataset = dataset.select_columns(["query", "image"])
    queries: list[str] = []
    pages: list[Any] = []
    dropped: Counter[str] = Counter()
    for index, row in enumerate(dataset):
        query, page = row.get("query"), row.get("image")
        try:
            if not isinstance(query, str) or not query.strip():
                raise InputError("row", index, f"query: expected a non-empty string, got {query!r}")
            try:
                decode_image(page, index)
            except InputError as exc:
                raise InputError("row", index, f"image: {exc.reason}") from exc
        except InputError as exc:
            if strict:
                raise
            dropped[exc.reason.split(":", 1)[0]] += 1
            if sum(dropped.values()) <= ContrastiveCollator.warn_first:
                logger.warning("eval set: dropping bad %s", exc)
            continue
        queries.append(query)
        pages.append(page)
    if dropped:
        logger.warning("eval set: dropped %d bad rows (%s); %d remain", sum(dropped.values()),
                       ", ".join(f"{k}: {n}" for k, n in dropped.items()), len(queries))
    return queries, PageList(pages)


__all__ = ["ROW_INDEX_KEY", "ContrastiveCollator", "PageList", "decode_image", "eval_pairs"]
