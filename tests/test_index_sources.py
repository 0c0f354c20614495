"""Page sources for `vlzoo index`: PDFs, images, folders and tables; identity, skips, errors and RGB conversion."""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pypdfium2 as pdfium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from tests.index_corpus import encrypted_pdf, raw_pdf, zero_page_pdf
from vlzoo_core.errors import VlzooError
from vlzoo_core.index import sources
from vlzoo_core.index.sources import Page, SkipReport, TableOptions, iter_pages, to_rgb

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)


# ---- fixtures made here -----------------------------------------------------------------------------------


def png(path, size=(20, 10), color=RED, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def png_bytes(size=(8, 6), color=RED) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def pdf(path, pages=((100, 50, RED), (30, 40, BLUE))):
    """A PDF with one page per (width, height, colour), each page width x height points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.new("RGB", (w, h), color) for w, h, color in pages]
    images[0].save(path, "PDF", save_all=True, append_images=images[1:], resolution=72)
    return path


def parquet(path, columns: dict[str, list], types: dict[str, pa.DataType] | None = None):
    types = types or {}
    table = pa.table({name: pa.array(values, type=types.get(name)) for name, values in columns.items()})
    pq.write_table(table, path)
    return path


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def pages_of(srcs, **kwargs) -> list[Page]:
    return list(iter_pages(srcs, **kwargs))


def centre(image: Image.Image) -> tuple[int, ...]:
    return image.getpixel((image.width // 2, image.height // 2))


def close_to(actual, expected, tolerance=3) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# ---- PDFs, images, folders ----------------------------------------------------------------------------------


def test_pdf_pages_are_numbered_and_rendered_at_the_dpi(tmp_path):
    path = pdf(tmp_path / "doc.pdf")
    pages = pages_of([path], dpi=72)
    assert [(p.id, p.source, p.page) for p in pages] == [("doc.pdf#1", "doc.pdf", 1), ("doc.pdf#2", "doc.pdf", 2)]
    assert [p.image.size for p in pages] == [(100, 50), (30, 40)]
    assert all(p.image.mode == "RGB" for p in pages)
    assert close_to(centre(pages[0].image), RED, 8) and close_to(centre(pages[1].image), BLUE, 8)
    assert pages[0].metadata == {}
    for dpi in (36, 144, sources.DEFAULT_DPI):
        sizes = [p.image.size for p in pages_of([path], dpi=dpi)]
        assert sizes == [(math.ceil(w * dpi / 72), math.ceil(h * dpi / 72)) for w, h in [(100, 50), (30, 40)]]


def test_identity_is_stable_across_runs_and_independent_of_cwd(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    pdf(corpus / "reports" / "q1.pdf")
    png(corpus / "scan.png")
    key = lambda pages: [(p.id, p.source, p.page, p.sha256) for p in pages]  # noqa: E731
    first = key(pages_of([corpus]))
    assert [row[0] for row in first] == ["reports/q1.pdf#1", "reports/q1.pdf#2", "scan.png#1"]
    assert key(pages_of([corpus])) == first
    monkeypatch.chdir(tmp_path)
    assert key(pages_of(["corpus"])) == first
    monkeypatch.chdir(corpus / "reports")
    assert key(pages_of([".."])) == first
    direct = key(pages_of(["q1.pdf"]))  # a file given directly is named by its file name
    assert [row[:3] for row in direct] == [("q1.pdf#1", "q1.pdf", 1), ("q1.pdf#2", "q1.pdf", 2)]
    assert [row[3] for row in direct] == [row[3] for row in first[:2]]


def test_sha256_follows_the_pixels_only(tmp_path):
    base = png(tmp_path / "a.png", (6, 4), GREEN)
    shutil.copy(base, tmp_path / "copy.png")
    changed = Image.new("RGB", (6, 4), GREEN)
    changed.putpixel((5, 3), (0, 161, 0))
    changed.save(tmp_path / "changed.png")
    transparent = Image.new("RGBA", (6, 4), (0, 160, 0, 255))
    transparent.putpixel((0, 0), (12, 34, 56, 0))  # invisible: becomes white
    transparent.save(tmp_path / "alpha.png")
    whitened = Image.new("RGB", (6, 4), GREEN)
    whitened.putpixel((0, 0), (255, 255, 255))
    whitened.save(tmp_path / "white.png")
    hashes = {p.source: p.sha256 for p in pages_of([tmp_path])}
    assert hashes["a.png"] == hashes["copy.png"]
    assert hashes["changed.png"] != hashes["a.png"]
    assert hashes["alpha.png"] == hashes["white.png"] != hashes["a.png"]
    (page,) = pages_of([base])
    assert page.sha256 == hashlib.sha256(b"RGB 6x4\n" + page.image.tobytes()).hexdigest()


def test_folder_walk_is_recursive_sorted_and_skips_hidden(tmp_path):
    root = tmp_path / "root"
    for name in ["a.png", "a0.png", "a/b.png", "a-b.png", "sub/deep/c.pdf", "Z.JPG"]:
        if name.endswith(".pdf"):
            pdf(root / name, [(10, 10, RED)])
        else:
            png(root / name)
    png(root / ".hidden.png")
    png(root / ".git" / "x.png")
    (root / "notes.docx").write_bytes(b"not a page")
    parquet(root / "table.parquet", {"image": [png_bytes()]})
    report = SkipReport()
    pages = pages_of([root], skipped=report)
    # Sorted by relative posix path ("." < "/" < "0"), not directory by directory.
    assert [p.source for p in pages] == ["Z.JPG", "a-b.png", "a.png", "a/b.png", "a0.png", "sub/deep/c.pdf"]
    assert report.counts == {"unsupported file type": 2}
    assert report.first["unsupported file type"] == str(root / "notes.docx")


def test_sources_are_read_in_the_order_given(tmp_path):
    one, two = png(tmp_path / "x" / "one.png"), png(tmp_path / "y" / "two.png")
    assert [p.id for p in pages_of([two, one])] == ["two.png#1", "one.png#1"]


def test_metadata_is_attached_by_source(tmp_path):
    png(tmp_path / "docs" / "a.png")
    png(tmp_path / "docs" / "b.png")
    table = parquet(tmp_path / "t.parquet", {"image": [png_bytes()], "id": ["row-1"]})
    meta = {"a.png": {"title": "A", "year": 2020}, "t.parquet": {"origin": "table"}}
    pages = {p.id: p.metadata for p in pages_of([tmp_path / "docs", table], metadata=meta)}
    assert pages == {"a.png#1": {"title": "A", "year": 2020}, "b.png#1": {}, "row-1": {"origin": "table"}}


def test_multiframe_tiff_gives_one_page_per_frame(tmp_path):
    frames = [Image.new("RGB", size, color) for size, color in [((8, 8), RED), ((12, 6), BLUE), ((5, 9), GREEN)]]
    frames[0].save(tmp_path / "scan.tiff", save_all=True, append_images=frames[1:])
    pages = pages_of([tmp_path / "scan.tiff"])
    assert [(p.id, p.page, p.image.size) for p in pages] == [
        ("scan.tiff#1", 1, (8, 8)), ("scan.tiff#2", 2, (12, 6)), ("scan.tiff#3", 3, (5, 9))
    ]
    assert [centre(p.image) for p in pages] == [RED, BLUE, GREEN]


def test_pages_are_rendered_lazily_and_sources_checked_up_front(tmp_path, monkeypatch):
    path = pdf(tmp_path / "doc.pdf", [(10, 10, RED)] * 3)
    calls = []
    real = pdfium.PdfPage.render
    monkeypatch.setattr(pdfium.PdfPage, "render", lambda self, **kw: calls.append(1) or real(self, **kw))
    pages = iter_pages([path])
    assert calls == []
    next(pages)
    assert len(calls) == 1
    with pytest.raises(VlzooError, match="missing.pdf"):
        iter_pages([path, tmp_path / "missing.pdf"])  # raised on the call, before any page


# ---- tables --------------------------------------------------------------------------------------------------


def test_parquet_table_with_image_dicts_and_an_id_column(tmp_path):
    cells = [{"bytes": png_bytes((8, 6), RED), "path": None}, {"bytes": png_bytes((4, 4), BLUE), "path": "x.png"}]
    path = parquet(tmp_path / "pages.parquet", {"image": cells, "id": ["p-7", "p-9"], "text": ["a", "b"]},
                   {"image": IMAGE_STRUCT})
    pages = pages_of([path])
    assert [(p.id, p.source, p.page, p.image.size) for p in pages] == [
        ("p-7", "pages.parquet", 1, (8, 6)), ("p-9", "pages.parquet", 2, (4, 4))
    ]
    assert [centre(p.image) for p in pages] == [RED, BLUE]
    assert [p.sha256 for p in pages] == [p.sha256 for p in pages_of([path])]


def test_table_columns_are_detected_or_named(tmp_path):
    detected = parquet(tmp_path / "d.parquet", {"corpus-id": [11, 12], "page_image": [png_bytes(), png_bytes()]})
    assert [p.id for p in pages_of([detected])] == ["11", "12"]
    named = parquet(tmp_path / "n.parquet", {"scan": [png_bytes()], "key": ["k"], "image": [b"unused"]})
    (page,) = pages_of([named], table=TableOptions(image_column="scan", id_column="key"))
    assert page.id == "k"
    no_id = parquet(tmp_path / "no_id.parquet", {"img": [png_bytes(), png_bytes(), png_bytes()]})
    assert [(p.id, p.page) for p in pages_of([no_id])] == [("1", 1), ("2", 2), ("3", 3)]


def test_table_image_paths_are_relative_to_the_table(tmp_path):
    png(tmp_path / "data" / "imgs" / "a.png", (7, 3), BLUE)
    path = parquet(tmp_path / "data" / "t.parquet",
                   {"image": ["imgs/a.png", None], "id": ["a", "b"]})
    report = SkipReport()
    pages = pages_of([path], skipped=report)
    assert [(p.id, p.image.size) for p in pages] == [("a", (7, 3))]
    assert report.counts == {"unreadable image": 1}
    assert report.first["unreadable image"] == "t.parquet: row 2: empty cell"


@pytest.mark.parametrize("stream", [False, True], ids=["ipc-file", "ipc-stream"])
def test_arrow_tables_in_both_formats(tmp_path, stream):
    first = pa.record_batch({"image": pa.array([png_bytes((3, 2))] * 3), "doc_id": pa.array(["x", "y", "z"])})
    second = pa.record_batch({"image": pa.array([png_bytes((2, 5))]), "doc_id": pa.array(["w"])})
    path = tmp_path / "t.arrow"
    with pa.OSFile(str(path), "wb") as sink:
        writer = (pa.ipc.new_stream if stream else pa.ipc.new_file)(sink, first.schema)
        writer.write_batch(first)
        writer.write_batch(second)
        writer.close()
    pages = pages_of([path])
    assert [(p.id, p.source, p.page, p.image.size) for p in pages] == [
        ("x", "t.arrow", 1, (3, 2)), ("y", "t.arrow", 2, (3, 2)), ("z", "t.arrow", 3, (3, 2)),
        ("w", "t.arrow", 4, (2, 5)),
    ]


def test_table_column_and_row_errors(tmp_path):
    path = parquet(tmp_path / "t.parquet", {"picture": [png_bytes()], "name": ["n"]})
    with pytest.raises(VlzooError, match=r"t.parquet: no image column .*columns found: picture, name"):
        iter_pages([path])
    with pytest.raises(VlzooError, match=r"no id column 'key' \(columns found: picture, name\)"):
        iter_pages([path], table=TableOptions(image_column="picture", id_column="key"))
    with pytest.raises(VlzooError, match=r"no image column 'scan' \(columns found: picture, name\)"):
        iter_pages([path], table=TableOptions(image_column="scan"))
    empty = parquet(tmp_path / "empty.parquet", {"image": [], "id": []}, {"image": pa.binary(), "id": pa.string()})
    with pytest.raises(VlzooError, match="empty.parquet: the table has no rows"):
        iter_pages([empty])
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(VlzooError, match="cannot read table .*broken.parquet"):
        iter_pages([tmp_path / "broken.parquet"])


def test_bad_table_rows_are_skipped_one_by_one(tmp_path):
    path = parquet(tmp_path / "t.parquet", {"image": [png_bytes(), os.urandom(64), png_bytes(), png_bytes()],
                                            "id": ["a", "b", None, "d"]})
    report = SkipReport()
    assert [(p.id, p.page) for p in pages_of([path], skipped=report)] == [("a", 1), ("d", 4)]
    assert report.counts == {"unreadable image": 1, "missing id": 1}
    assert report.first["unreadable image"].startswith("t.parquet: row 2: ")
    with pytest.raises(VlzooError, match="t.parquet: unreadable image: row 2"):
        pages_of([path], strict=True)


def test_duplicate_ids_inside_a_table(tmp_path):
    path = parquet(tmp_path / "t.parquet", {"image": [png_bytes()] * 3, "id": ["a", "b", "a"]})
    with pytest.raises(VlzooError, match="duplicate page id 'a': from t.parquet row 1 and t.parquet row 3"):
        pages_of([path])


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(VlzooError, match="cannot load Hub dataset 'hub:owner/name'"):
        iter_pages(["hub:owner/name"])
    with pytest.raises(VlzooError, match="hub:owner/name"):
        iter_pages(["hub:"])


def test_hub_dataset_rows_become_pages(monkeypatch):
    import datasets

    images = [Image.new("RGB", (5, 4), RED), Image.new("RGB", (3, 3), BLUE)]
    fake = datasets.Dataset.from_dict(
        {"image": images, "page_id": ["q", "r"]},
        features=datasets.Features({"image": datasets.Image(), "page_id": datasets.Value("string")}),
    )
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split, revision: asked.append((name, split)) or fake)
    pages = pages_of(["hub:owner/name"], table=TableOptions(split="test"), metadata={"hub:owner/name": {"k": 1}})
    assert asked == [("owner/name", "test")]
    assert [(p.id, p.source, p.page, p.image.size, p.metadata) for p in pages] == [
        ("q", "hub:owner/name", 1, (5, 4), {"k": 1}), ("r", "hub:owner/name", 2, (3, 3), {"k": 1})
    ]


# ---- bad inputs: skipped and counted, or raised in strict mode ------------------------------------------------


def _corrupt_pdf(tmp_path, monkeypatch):
    (tmp_path / "bad.pdf").write_bytes(os.urandom(400))
    return tmp_path / "bad.pdf"


def _encrypted(tmp_path, monkeypatch):
    return encrypted_pdf(tmp_path / "locked.pdf")


def _zero_pages(tmp_path, monkeypatch):
    return zero_page_pdf(tmp_path / "empty.pdf")


def _garbage_image(tmp_path, monkeypatch):
    (tmp_path / "noise.png").write_bytes(os.urandom(300))
    return tmp_path / "noise.png"


def _truncated_image(tmp_path, monkeypatch):
    data = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(data, "PNG")
    (tmp_path / "cut.png").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    return tmp_path / "cut.png"


def _huge_pdf_page(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_PAGE_PIXELS", 100 * 50 * 4 - 1)  # the page is 100x50 pt: 200x100 px at 144 dpi

    def render(self, **kwargs):
        raise AssertionError("a page over the limit must not be rendered")

    monkeypatch.setattr(pdfium.PdfPage, "render", render)
    return pdf(tmp_path / "poster.pdf", [(100, 50, RED)])


def _huge_image(tmp_path, monkeypatch):
    from PIL import BmpImagePlugin

    def load(self):
        raise AssertionError("an image over the limit must not be decoded")

    monkeypatch.setattr(sources, "MAX_PAGE_PIXELS", 999)
    monkeypatch.setattr(BmpImagePlugin.BmpImageFile, "load", load)
    return png(tmp_path / "big.bmp", (40, 25))


def _decompression_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses to open more than twice this
    return png(tmp_path / "bomb.png", (30, 30))


def _unsupported(tmp_path, monkeypatch):
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    return tmp_path / "notes.docx"


BAD_INPUTS = [
    (_corrupt_pdf, "corrupt PDF"),
    (_encrypted, "encrypted PDF"),
    (_zero_pages, "zero-page PDF"),
    (_garbage_image, "unreadable image"),
    (_truncated_image, "unreadable image"),
    (_huge_pdf_page, "huge image"),
    (_huge_image, "huge image"),
    (_decompression_bomb, "huge image"),
    (_unsupported, "unsupported file type"),
]


@pytest.mark.parametrize("make, reason", BAD_INPUTS, ids=[make.__name__[1:] for make, _ in BAD_INPUTS])
@pytest.mark.parametrize("in_folder", [False, True], ids=["file", "in-folder"])
def test_bad_inputs_are_skipped_or_raised(tmp_path, monkeypatch, make, reason, in_folder):
    folder = tmp_path / "in"
    folder.mkdir()
    good = png(folder / "good.png", (4, 4))  # tiny: under every patched limit
    bad = make(folder, monkeypatch)
    srcs = [folder] if in_folder else [good, bad]
    report = SkipReport()
    pages = pages_of(srcs, dpi=144, skipped=report)
    assert [p.id for p in pages] == ["good.png#1"]
    assert report.counts == {reason: 1} and report.total == 1
    assert report.first[reason].startswith(str(bad))
    assert report.summary().startswith(f"skipped 1 input: 1 {reason} (first: {bad}")
    with pytest.raises(VlzooError) as raised:
        pages_of(srcs, dpi=144, strict=True)
    assert str(bad) in str(raised.value) and reason in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_encrypted_fixture_really_is_encrypted(tmp_path):
    path = encrypted_pdf(tmp_path / "locked.pdf")
    with pytest.raises(pdfium.PdfiumError, match="password"):
        pdfium.PdfDocument(path)
    document = pdfium.PdfDocument(path, password="secret")
    assert len(document) == 1
    document.close()


def test_zero_page_pdf_is_told_apart_after_a_password_failure(tmp_path):
    # pdfium's last-error code is stale after a failed load; the zero-page check must not trust it.
    srcs = [encrypted_pdf(tmp_path / "a.pdf"), zero_page_pdf(tmp_path / "b.pdf"), png(tmp_path / "c.png")]
    report = SkipReport()
    pages_of(srcs, skipped=report)
    assert report.counts == {"encrypted PDF": 1, "zero-page PDF": 1}


def test_everything_skipped_is_not_an_error(tmp_path):
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 garbage")
    report = SkipReport()
    assert pages_of([tmp_path / "bad.pdf"], skipped=report) == []
    assert report.total == 1


# ---- user errors ----------------------------------------------------------------------------------------------


def test_user_errors_name_the_thing(tmp_path):
    with pytest.raises(VlzooError, match="source not found: .*nowhere"):
        iter_pages([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VlzooError, match="empty: the folder has no PDF or image files"):
        iter_pages([tmp_path / "empty"])
    only_junk = tmp_path / "junk"
    png(only_junk / ".hidden.png")
    (only_junk / "notes.txt").write_text("x")
    with pytest.raises(VlzooError, match="junk: the folder has no PDF or image files"):
        iter_pages([only_junk])
    good = png(tmp_path / "a.png")
    for dpi in (0, -5, 1201):
        with pytest.raises(VlzooError, match=f"dpi must be between 1 and 1200, got {dpi}"):
            iter_pages([good], dpi=dpi)
    with pytest.raises(VlzooError, match=r"no pages found in \(no sources given\)"):
        pages_of([])


def test_same_page_id_from_two_sources_names_both(tmp_path):
    first, second = pdf(tmp_path / "one" / "a.pdf"), pdf(tmp_path / "two" / "a.pdf")
    with pytest.raises(VlzooError) as raised:
        iter_pages([tmp_path / "one", tmp_path / "two"])
    assert str(first) in str(raised.value) and str(second) in str(raised.value)
    table = parquet(tmp_path / "t.parquet", {"image": [png_bytes()], "id": ["a.pdf#2"]})
    with pytest.raises(VlzooError, match=f"duplicate page id 'a.pdf#2': from {first} and t.parquet row 1"):
        pages_of([first, table])


# ---- the skip report --------------------------------------------------------------------------------------------


def test_skip_report_summary_and_dict():
    report = SkipReport()
    assert report.summary() == "" and report.total == 0
    report.add("corrupt PDF", "a.pdf", "Failed to load\n document")
    report.add("unsupported file type", "notes.docx", "")
    report.add("corrupt PDF", "b.pdf", "other")
    assert report.summary() == (
        "skipped 3 inputs: 2 corrupt PDF (first: a.pdf: Failed to load document), "
        "1 unsupported file type (first: notes.docx)"
    )
    assert report.as_dict() == {
        "total": 3,
        "by_reason": {"corrupt PDF": 2, "unsupported file type": 1},
        "first": {"corrupt PDF": "a.pdf: Failed to load document", "unsupported file type": "notes.docx"},
    }


# ---- to_rgb against an independent numpy reference ------------------------------------------------------------

MODES = ["1", "L", "LA", "P", "P+transparent-index", "P+alpha-table", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    return a * rgb + (1 - a) * 255


@st.composite
def images_with_reference(draw):
    mode = draw(st.sampled_from(MODES))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    size = (w, h)
    u8 = lambda *shape: draw(arrays(np.uint8, shape))  # noqa: E731
    if mode == "1":
        bits = draw(arrays(np.bool_, (h, w)))
        return Image.fromarray(bits), np.repeat(bits[..., None] * 255.0, 3, axis=2)
    if mode == "L":
        grey = u8(h, w)
        return Image.fromarray(grey), np.repeat(grey[..., None].astype(float), 3, axis=2)
    if mode in ("LA", "RGB", "RGBA", "CMYK"):
        channels = {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
        data = u8(h, w, channels)
        image = Image.frombytes(mode, size, data.tobytes())
        d = data.astype(np.float64)
        if mode == "LA":
            return image, _over_white(np.repeat(d[..., :1], 3, axis=2), data[..., 1])
        if mode == "RGBA":
            return image, _over_white(d[..., :3], data[..., 3])
        if mode == "CMYK":
            return image, (255 - d[..., :3]) * (255 - d[..., 3:]) / 255
        return image, d
    if mode.startswith("P"):
        palette, index = u8(256, 3), u8(h, w)
        image = Image.frombytes("P", size, index.tobytes())
        image.putpalette(palette.tobytes())
        rgb = palette[index].astype(np.float64)
        if mode == "P":
            return image, rgb
        if mode == "P+transparent-index":
            hidden = int(draw(st.sampled_from(index.ravel().tolist())))
            image.info["transparency"] = hidden
            alphas = np.full(256, 255, np.uint8)
            alphas[hidden] = 0
        else:
            alphas = u8(256)
            image.info["transparency"] = alphas.tobytes()
        return image, _over_white(rgb, alphas[index])
    if mode == "I;16":
        values = draw(arrays(np.uint16, (h, w)))
        image = Image.frombytes("I;16", size, values.astype("<u2").tobytes())
        return image, np.repeat((values // 256)[..., None].astype(float), 3, axis=2)
    if mode == "I":
        low, high = draw(st.sampled_from([(0, 255), (0, 65535), (-1000, 2**31 - 1)]))
        values = draw(arrays(np.int32, (h, w), elements=st.integers(low, high)))
        image = Image.fromarray(values)
        v = np.clip(values.astype(np.float64), 0, None)
        top = v.max()
        grey = v if top <= 255 else np.floor(v / 256) if top <= 65535 else v * 255 / top
        return image, np.repeat(grey[..., None], 3, axis=2)
    values = draw(arrays(np.float32, (h, w), elements=st.floats(-0.5, 1.5, width=32)))
    grey = np.clip(values.astype(np.float64), 0, 1) * 255
    return Image.fromarray(values), np.repeat(grey[..., None], 3, axis=2)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images_with_reference())
def test_to_rgb_matches_a_numpy_reference(case):
    image, expected = case
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == image.size and out is not image
    difference = np.abs(np.asarray(out, dtype=np.float64) - expected)
    assert difference.max() <= 2, (image.mode, difference.max())


def test_to_rgb_gives_white_for_transparent_backgrounds():
    clear = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    assert (np.asarray(to_rgb(clear)) == 255).all()
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 1
    assert (np.asarray(to_rgb(palette)) == 255).all()
