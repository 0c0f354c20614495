"""Page sources for `vlzoo index`: PDFs, image files, folders and tables turned into RGB pages with a stable id.

`iter_pages` checks every source up front (paths exist, folders hold something, tables have the columns),
then renders pages lazily, one at a time. A bad input (a corrupt PDF, an unreadable image, ...) is skipped
and counted in a `SkipReport`, or with `strict=True` raised as a VlzooError that names it.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pypdfium2 as pdfium
from PIL import Image

from vlzoo_core.data.tables import TABLE_SUFFIXES, TableReader, open_hub, open_table_files
from vlzoo_core.errors import VlzooError

DEFAULT_DPI = 150
MAX_DPI = 1200
MAX_PAGE_PIXELS = 40_000_000
"""Largest rendered or decoded page, in pixels; a bigger one is skipped as a "huge image"."""

PDF_SUFFIXES = frozenset({".pdf"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
HUB_PREFIX = "hub:"
IMAGE_COLUMNS = ("image", "page", "page_image", "img")
ID_COLUMNS = ("id", "page_id", "doc_id", "image_filename", "corpus-id")


@dataclass(frozen=True)
class Page:
    """One RGB page. `id` is unique across the sources of one call: "<source>#<page>" for files, the id
    column's value for table rows. `sha256` hashes the pixels (mode, size, bytes), not the file."""

    id: str
    source: str
    page: int
    sha256: str
    image: Image.Image
    metadata: Mapping[str, Any]


@dataclass
class SkipReport:
    """Counts of skipped inputs by reason, with the first example of each."""

    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, where: str, detail: str) -> None:
        self.counts[reason] += 1
        detail = " ".join(detail.split())
        self.first.setdefault(reason, f"{where}: {detail}" if detail else where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line naming each reason with its count and first example; "" when nothing was skipped."""
        total = self.total
        if not total:
            return ""
        parts = [f"{count} {reason} (first: {self.first[reason]})" for reason, count in self.counts.most_common()]
        return f"skipped {total} input{'' if total == 1 else 's'}: {', '.join(parts)}"

    def as_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.counts), "first": dict(self.first)}


@dataclass(frozen=True)
class TableOptions:
    """Table columns (None: detected from IMAGE_COLUMNS / ID_COLUMNS; no id column: the row number) and the
    split of a Hub dataset."""

    image_column: str | None = None
    id_column: str | None = None
    split: str = "train"


_Skip = Callable[[str, str, str], None]
"""skip(reason, where, detail): count a bad input, or raise it in strict mode."""


class _Unusable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# ---- pixels ----------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image: transparency composited onto white, 16-bit and float greys scaled to 8 bit.

    "I;16*" is divided by 256; "I" is taken as 8-bit if its values fit 0..255, as 16-bit if they fit
    0..65535, else scaled by its maximum; "F" is taken as 0..1. Negative values become 0.
    """
    if image.mode.startswith("I") or image.mode == "F":
        image = _grey_to_l(image)
    has_alpha = (
        image.mode in ("RGBA", "LA", "PA", "La", "RGBa")
        or "transparency" in image.info
        or (image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA")
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    if image.mode == "F":
        scaled = np.rint(np.nan_to_num(values.astype(np.float64)).clip(0, 1) * 255)
    else:
        values = values.astype(np.int64).clip(0, None)
        top = int(values.max(initial=0))
        if image.mode != "I" or 255 < top <= 65535:  # "I;16*", or "I" holding 16-bit values
            scaled = values // 256
        elif top <= 255:
            scaled = values
        else:
            scaled = np.rint(values * (255 / top))
    return Image.fromarray(scaled.astype(np.uint8))


def _sha256(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PAGE_PIXELS:
        raise _Unusable("huge image", f"{width}x{height} pixels, over the limit of {MAX_PAGE_PIXELS:,}")


def _open_image(data: Path | io.BytesIO) -> Image.Image:
    """Image.open (lazy: only the header is read)."""
    try:
        return Image.open(data)
    except Image.DecompressionBombError as exc:
        raise _Unusable("huge image", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        raise _Unusable("unreadable image", str(exc) or type(exc).__name__) from exc


def _decode(image: Image.Image, frame: int = 0) -> Image.Image:
    """Frame `frame` of an opened image as RGB, its size checked before any pixel is decoded."""
    try:
        image.seek(frame)
    except Exception as exc:  # noqa: BLE001
        raise _Unusable("unreadable image", str(exc) or type(exc).__name__) from exc
    _check_pixels(*image.size)
    try:
        image.load()
        return to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise _Unusable("huge image", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001
        raise _Unusable("unreadable image", str(exc) or type(exc).__name__) from exc


# ---- the plan: every source checked before the first page ----------------------------------------------


@dataclass(frozen=True)
class _Table:
    reader: TableReader
    image_column: str
    id_column: str | None

    @property
    def source(self) -> str:
        return self.reader.source


@dataclass(frozen=True)
class _File:
    path: Path
    source: str
    kind: str | None  # "pdf", "image", or None when unsupported
    note: str = ""


def _kind(path: PurePath) -> str | None:
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return "pdf"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in TABLE_SUFFIXES:
        return "table"
    return None


def _folder_files(folder: Path) -> list[_File]:
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        relative = Path(root).relative_to(folder)
        names.extend((relative / name).as_posix() for name in files if not name.startswith("."))
    found = []
    for name in sorted(names):
        kind = _kind(PurePath(name))
        if kind == "table":
            found.append(_File(folder / name, name, None, "tables inside folders are not read; pass the table itself"))
        else:
            found.append(_File(folder / name, name, kind))
    if not any(item.kind for item in found):
        raise VlzooError(f"{folder}: the folder has no PDF or image files")
    return found


def _table(reader: TableReader, options: TableOptions) -> _Table:
    image_column = reader.column("image", options.image_column, IMAGE_COLUMNS)
    if image_column is None:
        raise VlzooError(
            f"{reader.source}: no image column (looked for {', '.join(IMAGE_COLUMNS)}; columns found: "
            f"{', '.join(reader.columns) or 'none'}); name the image column"
        )
    id_column = reader.column("id", options.id_column, ID_COLUMNS)
    if reader.rows == 0:
        raise VlzooError(f"{reader.source}: the table has no rows")
    return _Table(reader, image_column, id_column)


def _hub_table(source: str, options: TableOptions) -> _Table:
    name = source[len(HUB_PREFIX):]
    if not name:
        raise VlzooError(f"{source!r}: write a Hub dataset as hub:owner/name")
    return _table(open_hub(name, split=options.split, source=source), options)


def _plan(sources: Sequence[str | Path], options: TableOptions) -> list[_File | _Table]:
    items: list[_File | _Table] = []
    for source in sources:
        if isinstance(source, str) and source.startswith(HUB_PREFIX):
            items.append(_hub_table(source, options))
            continue
        path = Path(source)
        if path.is_dir():
            items.extend(_folder_files(path))
        elif not path.is_file():
            raise VlzooError(f"source not found: {str(source)!r}")
        elif path.suffix.lower() in TABLE_SUFFIXES:
            items.append(_table(open_table_files([path]), options))
        else:
            items.append(_File(path, path.name, _kind(path)))
    first: dict[str, Path] = {}
    for item in items:
        if isinstance(item, _File) and item.kind:
            if item.source in first:
                raise VlzooError(
                    f"two inputs have the same page source {item.source!r} ({first[item.source]} and "
                    f"{item.path}), so their page ids would collide"
                )
            first[item.source] = item.path
    return items


# ---- pages -----------------------------------------------------------------------------------------------


def _zero_page_pdf(path: Path) -> bool:
    # pypdfium2 refuses a zero-page document with a PdfiumError whose pdfium error code is stale (a
    # successful load does not reset it), so open it with the raw API to tell this case apart.
    raw = pdfium.raw.FPDF_LoadDocument((str(path) + "\x00").encode("utf-8", "surrogateescape"), None)
    if not raw:
        return False
    try:
        return pdfium.raw.FPDF_GetPageCount(raw) == 0
    finally:
        pdfium.raw.FPDF_CloseDocument(raw)


def _pdf_pages(path: Path, where: str, dpi: int, skip: _Skip) -> Iterator[tuple[int, Image.Image]]:
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if _zero_page_pdf(path):
            skip("zero-page PDF", where, "the document has no pages")
        elif "password" in str(exc).lower():
            skip("encrypted PDF", where, str(exc))
        else:
            skip("corrupt PDF", where, str(exc))
        return
    scale = dpi / 72
    try:
        for index in range(len(document)):
            try:
                page = document[index]
                try:
                    width, height = page.get_size()
                    # Same rounding as PdfPage.render, so nothing over the limit is ever rasterised.
                    _check_pixels(math.ceil(width * scale), math.ceil(height * scale))
                    bitmap = page.render(scale=scale)
                    try:
                        image = to_rgb(bitmap.to_pil())
                    finally:
                        bitmap.close()
                finally:
                    page.close()
            except _Unusable as exc:
                skip(exc.reason, where, f"page {index + 1} at {dpi} dpi: {exc.detail}")
                continue
            except pdfium.PdfiumError as exc:
                skip("corrupt PDF", where, f"page {index + 1}: {exc}")
                continue
            yield index + 1, image
    finally:
        document.close()


def _image_file_pages(path: Path, where: str, skip: _Skip) -> Iterator[tuple[int, Image.Image]]:
    try:
        opened = _open_image(path)
    except _Unusable as exc:
        skip(exc.reason, where, exc.detail)
        return
    with opened:
        try:
            frames = opened.n_frames if opened.format == "TIFF" else 1
        except Exception as exc:  # noqa: BLE001
            skip("unreadable image", where, str(exc) or type(exc).__name__)
            return
        for index in range(frames):
            try:
                image = _decode(opened, index)
            except _Unusable as exc:
                skip(exc.reason, where, f"page {index + 1}: {exc.detail}" if frames > 1 else exc.detail)
                continue
            yield index + 1, image


def _cell_image(cell: Any, folder: Path | None) -> Image.Image:
    if isinstance(cell, dict):
        cell = cell.get("bytes") or cell.get("path")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        data: Path | io.BytesIO = io.BytesIO(cell)
    elif isinstance(cell, str) and cell:
        data = Path(cell) if folder is None else folder / cell
    else:
        raise _Unusable("unreadable image", "empty cell" if cell is None else f"a {type(cell).__name__} cell")
    with _open_image(data) as opened:
        return _decode(opened)


def _table_pages(table: _Table, skip: _Skip) -> Iterator[tuple[int, str, Image.Image]]:
    wanted = [table.image_column] + ([table.id_column] if table.id_column else [])
    row = 0
    for batch in table.reader.batches(wanted):
        keys = batch[table.id_column] if table.id_column else None
        for position, cell in enumerate(batch[table.image_column]):
            row += 1
            key = str(row) if keys is None else keys[position]
            if key is None:
                skip("missing id", table.source, f"row {row}: no {table.id_column!r} value")
                continue
            try:
                image = _cell_image(cell, table.reader.folder)
            except _Unusable as exc:
                skip(exc.reason, table.source, f"row {row}: {exc.detail}")
                continue
            yield row, str(key), image


def cell_pages(
    cells: Iterable[tuple[str, Any]],
    *,
    source: str,
    folder: Path | None = None,
    strict: bool = False,
    skipped: SkipReport | None = None,
) -> Iterator[Page]:
    """Pages from (id, image cell) pairs, e.g. a dataset's corpus: cells as tables hold them (bytes, a path
    relative to `folder`, or a `{"bytes", "path"}` dict). A bad cell is skipped and counted in `skipped`
    (or raised with `strict`); ids must be unique. `Page.page` is the pair's position, from 1."""
    report = skipped if skipped is not None else SkipReport()
    seen: set[str] = set()
    for number, (page_id, cell) in enumerate(cells, start=1):
        if page_id in seen:
            raise VlzooError(f"{source}: duplicate page id {page_id!r}")
        seen.add(page_id)
        try:
            image = _cell_image(cell, folder)
        except _Unusable as exc:
            if strict:
                raise VlzooError(f"{source}: {exc.reason}: page {page_id!r}: {exc.detail}") from exc
            report.add(exc.reason, source, f"page {page_id!r}: {exc.detail}")
            continue
        yield Page(page_id, source, number, _sha256(image), image, {})


def iter_pages(
    sources: Sequence[str | Path],
    *,
    dpi: int = DEFAULT_DPI,
    strict: bool = False,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    table: TableOptions = TableOptions(),
    skipped: SkipReport | None = None,
) -> Iterator[Page]:
    """The pages of `sources` (files, folders, `.parquet`/`.arrow` tables, `hub:owner/name`), in order.

    Every source is checked when this is called; pages are then rendered as they are consumed.
    `metadata` maps a `Page.source` to the metadata its pages carry.
    """
    if not 1 <= dpi <= MAX_DPI:
        raise VlzooError(f"dpi must be between 1 and {MAX_DPI}, got {dpi}")
    items = _plan(sources, table)
    return _pages(items, sources, dpi, strict, metadata or {}, skipped if skipped is not None else SkipReport())


def _pages(
    items: list[_File | _Table],
    sources: Sequence[str | Path],
    dpi: int,
    strict: bool,
    metadata: Mapping[str, Mapping[str, Any]],
    report: SkipReport,
) -> Iterator[Page]:
    def skip(reason: str, where: str, detail: str) -> None:
        if strict:
            raise VlzooError(f"{where}: {reason}" + (f": {detail}" if detail else ""))
        report.add(reason, where, detail)

    skipped_before = report.total
    seen: dict[str, str] = {}  # page id -> where it came from, to name both ends of a collision

    def page(page_id: str, source: str, number: int, image: Image.Image, where: str, extra: dict) -> Page:
        if page_id in seen:
            raise VlzooError(f"duplicate page id {page_id!r}: from {seen[page_id]} and {where}")
        seen[page_id] = where
        return Page(page_id, source, number, _sha256(image), image, extra)

    for item in items:
        extra = dict(metadata.get(item.source, {}))
        if isinstance(item, _Table):
            for row, key, image in _table_pages(item, skip):
                yield page(key, item.source, row, image, f"{item.source} row {row}", extra)
            continue
        where = str(item.path)
        if item.kind is None:
            skip("unsupported file type", where, item.note)
            continue
        if item.kind == "pdf":
            numbered = _pdf_pages(item.path, where, dpi, skip)
        else:
            numbered = _image_file_pages(item.path, where, skip)
        for number, image in numbered:
            yield page(f"{item.source}#{number}", item.source, number, image, where, extra)
    if not seen and report.total == skipped_before:
        shown = ", ".join(str(source) for source in sources[:3])
        if len(sources) > 3:
            shown += f" and {len(sources) - 3} more"
        raise VlzooError(f"no pages found in {shown or '(no sources given)'}")
