"""Data sources (`load_source`, `check_source`), the contrastive collator and `eval_pairs`, on local files."""

from __future__ import annotations

import io
import json
import logging
import sys
import types
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image

from tests.conftest import make_page
from vlzoo_core.data import sources
from vlzoo_core.data.collator import ROW_INDEX_KEY, ContrastiveCollator, PageList, decode_image, eval_pairs
from vlzoo_core.data.sources import check_source, load_source
from vlzoo_core.errors import ConfigError, InputError
from vlzoo_core.training.run_config import DataSource, SyntheticSource

CORRUPT = b"\x89PNG\r\n\x1a\n not really a png"


# ---- helpers --------------------------------------------------------------------------------------------


def png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    make_page(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


IMAGE_FEATURES = datasets.Features({"question": datasets.Value("string"), "page": datasets.Image(),
                                    "negatives": datasets.List(datasets.Image()),
                                    "extra": datasets.Value("int64")})


def image_table(queries: list, images: list[bytes], negatives: list[bytes] | None = None) -> datasets.Dataset:
    negatives = negatives or [png(100 + i) for i in range(len(queries))]
    return datasets.Dataset.from_dict(
        {"question": queries, "page": [{"bytes": b, "path": None} for b in images],
         "negatives": [[{"bytes": b, "path": None}] for b in negatives], "extra": list(range(len(queries)))},
        features=IMAGE_FEATURES,
    )


def write_parquet(path: Path, queries: list, images: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image_table(queries, images).to_parquet(str(path))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def source(kind: str, path: str | Path | None, **kwargs) -> DataSource:
    return DataSource(kind=kind, path=None if path is None else str(path), **kwargs)


MAPPED = {"query": "question", "image": "page"}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture(scope="module")
def processor(tiny_model):
    """The tiny model's processor (the session's tiny model is built once, ~2 s)."""
    return tiny_model.processor


@pytest.fixture
def no_image_decoding(monkeypatch):
    """Make every PIL.Image.open, and every load through `datasets.load_dataset`, fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened")

    def refuse_load(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(datasets, "load_dataset", refuse_load)
    monkeypatch.setattr(datasets, "load_from_disk", refuse_load)


# ---- load_source: local kinds ---------------------------------------------------------------------------


def test_parquet_columns_are_mapped_and_images_left_undecoded(tmp_path, cache):
    write_parquet(tmp_path / "train.parquet", ["first", "second"], [png(1), png(2)])
    loaded = load_source(source("parquet", tmp_path / "train.parquet", columns=MAPPED), cache_dir=cache)
    assert sorted(loaded.column_names) == ["image", "query"]
    assert loaded.features["image"] == datasets.Image(decode=False)
    row = loaded[1]
    assert row["query"] == "second"
    assert set(row["image"]) == {"bytes", "path"}
    assert pixels(decode_image(row["image"])) == pixels(make_page(2, (40, 30)))


def test_negatives_column_becomes_negative(tmp_path, cache):
    write_parquet(tmp_path / "train.parquet", ["a", "b"], [png(1), png(2)])
    loaded = load_source(source("parquet", tmp_path / "train.parquet", columns={**MAPPED, "negatives": "negatives"}),
                         cache_dir=cache)
    assert sorted(loaded.column_names) == ["image", "negative", "query"]
    negative = loaded[0]["negative"]
    assert isinstance(negative, list) and isinstance(negative[0], dict)  # a list of undecoded pages
    assert pixels(decode_image(negative[0])) == pixels(make_page(100, (40, 30)))


def test_a_corrupt_image_does_not_raise_while_iterating(tmp_path, cache):
    write_parquet(tmp_path / "train.parquet", ["good", "bad", "good too"], [png(1), CORRUPT, png(3)])
    loaded = load_source(source("parquet", tmp_path / "train.parquet", columns=MAPPED), cache_dir=cache)
    rows = list(loaded)
    assert [row["query"] for row in rows] == ["good", "bad", "good too"]
    assert rows[1]["image"]["bytes"] == CORRUPT


def test_limit_keeps_the_first_rows(tmp_path, cache):
    queries = [f"q{i}" for i in range(6)]
    write_parquet(tmp_path / "train.parquet", queries, [png(i) for i in range(6)])
    limited = load_source(source("parquet", tmp_path / "train.parquet", columns=MAPPED, limit=4), cache_dir=cache)
    assert limited["query"] == queries[:4]
    everything = load_source(source("parquet", tmp_path / "train.parquet", columns=MAPPED, limit=50),
                             cache_dir=cache)
    assert everything["query"] == queries


def test_folder_and_glob_read_every_file_in_order(tmp_path, cache):
    write_parquet(tmp_path / "data" / "part-0.parquet", ["a", "b"], [png(1), png(2)])
    write_parquet(tmp_path / "data" / "part-1.parquet", ["c"], [png(3)])
    write_parquet(tmp_path / "data" / "sub" / "s.parquet", ["s"], [png(4)])
    write_parquet(tmp_path / "data" / "zz.parquet", ["z"], [png(5)])
    (tmp_path / "data" / "notes.txt").write_text("not data")
    folder = load_source(source("parquet", tmp_path / "data", columns=MAPPED), cache_dir=cache)
    assert folder["query"] == ["a", "b", "c", "s", "z"]  # sorted path order, subfolders included
    limited = load_source(source("parquet", tmp_path / "data", columns=MAPPED, limit=4), cache_dir=cache)
    assert limited["query"] == ["a", "b", "c", "s"]
    globbed = load_source(source("parquet", "data/part-1*.parquet", columns=MAPPED), base_dir=tmp_path,
                          cache_dir=cache)
    assert globbed["query"] == ["c"]


def test_relative_paths_resolve_against_base_dir_not_cwd(tmp_path, cache, monkeypatch):
    write_parquet(tmp_path / "config" / "data" / "train.parquet", ["x"], [png(1)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_source(source("parquet", "data/train.parquet", columns=MAPPED), base_dir=tmp_path / "config",
                         cache_dir=cache)
    assert loaded["query"] == ["x"]
    with pytest.raises(ConfigError, match="no such file"):
        load_source(source("parquet", "data/train.parquet", columns=MAPPED), cache_dir=cache)


def test_arrow_file_and_saved_dataset_folder(tmp_path, cache):
    table = image_table(["a", "b", "c"], [png(1), png(2), png(3)], negatives=[png(4), CORRUPT, png(6)])
    table.save_to_disk(str(tmp_path / "saved"))
    before = sorted(p.name for p in (tmp_path / "saved").iterdir())
    columns = {**MAPPED, "negatives": "negatives"}
    saved = load_source(source("arrow", tmp_path / "saved", columns=columns, limit=2), cache_dir=cache)
    assert saved["query"] == ["a", "b"]
    assert sorted(saved.column_names) == ["image", "negative", "query"]
    assert saved.features["image"] == datasets.Image(decode=False)
    assert saved.features["negative"] == datasets.List(datasets.Image(decode=False))
    assert [row["negative"][0]["bytes"] for row in saved] == [png(4), CORRUPT]  # no decoding, no error
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == before  # nothing written into it
    arrow_file = next((tmp_path / "saved").glob("*.arrow"))
    single = load_source(source("arrow", arrow_file, columns=MAPPED), cache_dir=cache)
    assert single["query"] == ["a", "b", "c"]
    assert pixels(decode_image(single[2]["image"])) == pixels(make_page(3, (40, 30)))


def test_jsonl_image_paths_resolve_against_the_jsonl_folder(tmp_path, cache, monkeypatch):
    data = tmp_path / "data"
    (data / "pages").mkdir(parents=True)
    make_page(1).save(data / "pages" / "a.png")
    make_page(2).save(data / "pages" / "b.png")
    absolute = tmp_path / "absolute.png"
    make_page(3).save(absolute)
    write_jsonl(data / "train.jsonl", [
        {"q": "first", "img": "pages/a.png", "neg": ["pages/b.png"], "other": 1},
        {"q": "second", "img": str(absolute), "neg": ["pages/a.png"], "other": 2},
    ])
    monkeypatch.chdir(tmp_path)
    loaded = load_source(source("jsonl", "train.jsonl", columns={"query": "q", "image": "img", "negatives": "neg"}),
                         base_dir=data, cache_dir=cache)
    assert sorted(loaded.column_names) == ["image", "negative", "query"]
    assert loaded["image"] == [str(data / "pages" / "a.png"), str(absolute)]
    assert loaded["negative"] == [[str(data / "pages" / "b.png")], [str(data / "pages" / "a.png")]]
    assert all(isinstance(value, str) for value in loaded["image"])  # paths, opened later by the collator


def test_jsonl_files_in_two_folders_resolve_each_against_its_own(tmp_path, cache):
    for name, seed in (("one", 1), ("two", 2)):
        (tmp_path / name).mkdir()
        make_page(seed).save(tmp_path / name / "page.png")
        write_jsonl(tmp_path / name / "rows.jsonl", [{"query": name, "image": "page.png"}])
    loaded = load_source(source("jsonl", str(tmp_path / "**" / "*.jsonl")), cache_dir=cache)
    assert loaded["query"] == ["one", "two"]
    assert loaded["image"] == [str(tmp_path / "one" / "page.png"), str(tmp_path / "two" / "page.png")]


def test_synthetic_source_goes_through_the_synthetic_module(monkeypatch):
    calls = []

    def synthetic_dataset(options):
        calls.append(options)
        return datasets.Dataset.from_dict(
            {"query": ["p0", "p1", "p2"], "image": [make_page(i) for i in range(3)], "label": [0, 1, 2]},
        )

    fake = types.ModuleType("vlzoo_core.data.synthetic")
    fake.synthetic_dataset = synthetic_dataset
    monkeypatch.setitem(sys.modules, "vlzoo_core.data.synthetic", fake)
    loaded = load_source(source("synthetic", None, limit=2))
    assert calls == [SyntheticSource()]
    assert loaded["query"] == ["p0", "p1"]
    assert sorted(loaded.column_names) == ["image", "query"]
    assert pixels(decode_image(loaded[1]["image"])) == pixels(make_page(1))
    options = SyntheticSource(pages=3, seed=4)
    load_source(source("synthetic", None, synthetic=options))
    assert calls[-1] == options


# ---- load_source: errors ---------------------------------------------------------------------------------


def test_a_missing_file_names_the_field(tmp_path, cache):
    with pytest.raises(ConfigError, match=r"^data\.eval\.path: no such file or folder .*nope\.parquet"):
        load_source(source("parquet", tmp_path / "nope.parquet"), where="data.eval", cache_dir=cache)


def test_a_glob_matching_nothing_and_an_empty_folder(tmp_path, cache):
    with pytest.raises(ConfigError, match=r"^data\.train\.path: '.*\*\.jsonl' matches no files"):
        load_source(source("jsonl", tmp_path / "*.jsonl"), cache_dir=cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^data\.train\.path: folder .* has no \.arrow files"):
        load_source(source("arrow", tmp_path / "empty"), cache_dir=cache)


def test_a_wrong_column_names_the_field_and_suggests_a_close_one(tmp_path, cache):
    write_parquet(tmp_path / "train.parquet", ["a"], [png(1)])
    wrong = source("parquet", tmp_path / "train.parquet", columns={"query": "questoin", "image": "page"})
    with pytest.raises(ConfigError) as caught:
        load_source(wrong, cache_dir=cache)
    message = str(caught.value)
    assert message.startswith("data.train.columns.query: column 'questoin' not in ")
    assert "(columns: question, page, negatives, extra)" in message
    assert message.endswith("did you mean 'question'?")

    no_match = source("parquet", tmp_path / "train.parquet", columns={**MAPPED, "negatives": "zzz"})
    with pytest.raises(ConfigError, match=r"^data\.train\.columns\.negatives: column 'zzz' not in") as caught:
        load_source(no_match, cache_dir=cache)
    assert "did you mean" not in str(caught.value)


def test_one_column_for_two_roles_is_an_error(tmp_path, cache):
    write_parquet(tmp_path / "train.parquet", ["a"], [png(1)])
    twice = source("parquet", tmp_path / "train.parquet", columns={**MAPPED, "negatives": "page"})
    with pytest.raises(ConfigError, match=r"^data\.train\.columns: one column is used for two roles"):
        load_source(twice, cache_dir=cache)
    with pytest.raises(ConfigError, match=r"^data\.train\.columns: one column is used for two roles"):
        check_source(twice)


def test_a_malformed_file_is_a_config_error(tmp_path, cache):
    (tmp_path / "train.parquet").write_bytes(b"definitely not parquet")
    with pytest.raises(ConfigError, match=r"^data\.train\.path: cannot read parquet data"):
        load_source(source("parquet", tmp_path / "train.parquet"), cache_dir=cache)
    with pytest.raises(ConfigError, match=r"^data\.train\.path: cannot read parquet file"):
        check_source(source("parquet", tmp_path / "train.parquet"))


# ---- hub ---------------------------------------------------------------------------------------------------


def test_hub_offline_load_is_a_config_error(cache):
    assert sources.hub_offline()  # conftest switches the Hub off
    hub = source("hub", "vlzoo-test-org/no-such-dataset", split="test")
    with pytest.raises(ConfigError) as caught:
        load_source(hub, where="data.eval", cache_dir=cache)
    message = str(caught.value)
    assert message.startswith("data.eval.path: cannot load Hub dataset 'vlzoo-test-org/no-such-dataset'")
    assert "offline" in message


def test_hub_check_offline_is_a_note_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was contacted")

    monkeypatch.setattr(datasets, "load_dataset_builder", no_network)
    note = check_source(source("hub", "vidore/docvqa_test_subsampled", split="test"))
    assert "not checked (offline" in note
    assert "vidore/docvqa_test_subsampled" in note


def _online(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr("vlzoo_core.data.sources.socket.create_connection", lambda *args, **kwargs: Connection())


def test_hub_load_maps_columns_of_what_load_dataset_returns(monkeypatch):
    _online(monkeypatch)
    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return image_table(["a", "b", "c"], [png(1), CORRUPT, png(3)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_source(source("hub", "org/pages", split="test", revision="abc123", columns=MAPPED, limit=2))
    assert calls[0][0] == "org/pages"
    assert calls[0][1]["split"] == "test" and calls[0][1]["revision"] == "abc123"
    assert loaded["query"] == ["a", "b"]
    assert loaded.features["image"] == datasets.Image(decode=False)
    assert loaded[1]["image"]["bytes"] == CORRUPT
    with pytest.raises(ConfigError, match=r"^data\.train\.columns\.query: column 'query' not in Hub dataset"):
        load_source(source("hub", "org/pages"))


def test_hub_check_online_reads_the_builder_info(monkeypatch):
    _online(monkeypatch)
    info = datasets.DatasetInfo(features=IMAGE_FEATURES,
                                splits=datasets.SplitDict({"test": datasets.SplitInfo(name="test")}))
    monkeypatch.setattr(datasets, "load_dataset_builder", lambda *a, **k: types.SimpleNamespace(info=info))
    assert "checked on the Hub" in check_source(source("hub", "org/pages", split="test", columns=MAPPED))
    with pytest.raises(ConfigError, match=r"^data\.train\.split: 'train' not in Hub dataset"):
        check_source(source("hub", "org/pages", columns=MAPPED))
    with pytest.raises(ConfigError, match="did you mean 'question'"):
        check_source(source("hub", "org/pages", split="test", columns={"query": "questions", "image": "page"}))


# ---- check_source ------------------------------------------------------------------------------------------


def test_check_source_reads_schemas_only(tmp_path, no_image_decoding):
    write_parquet_ok = image_table(["a", "b", "c"], [png(1), CORRUPT, png(3)])
    write_parquet_ok.to_parquet(str(tmp_path / "train.parquet"))
    write_parquet_ok.save_to_disk(str(tmp_path / "saved"))
    arrow_file = next((tmp_path / "saved").glob("*.arrow"))
    write_jsonl(tmp_path / "train.jsonl", [{"q": "a", "img": "missing.png"}])

    described = check_source(source("parquet", "train.parquet", columns=MAPPED), base_dir=tmp_path)
    assert described.startswith("parquet: 1 file") and "3 rows" in described
    assert check_source(source("arrow", arrow_file, columns=MAPPED)).startswith("arrow: 1 file")
    assert check_source(source("arrow", tmp_path / "saved", columns=MAPPED)).startswith("arrow: saved dataset")
    assert check_source(source("jsonl", tmp_path / "train.jsonl", columns={"query": "q", "image": "img"}))
    assert check_source(source("synthetic", None)).startswith("synthetic: 512 pages")


def test_check_source_reports_problems(tmp_path, no_image_decoding):
    write_jsonl(tmp_path / "train.jsonl", [{"question": "a", "image": "x.png"}])
    with pytest.raises(ConfigError, match=r"^data\.eval\.columns\.query: .*did you mean 'question'\?"):
        check_source(source("jsonl", tmp_path / "train.jsonl"), where="data.eval")
    with pytest.raises(ConfigError, match=r"^data\.train\.path: no such file or folder"):
        check_source(source("parquet", tmp_path / "missing.parquet"))
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"^data\.train\.path: .*broken\.jsonl' line 1 is not JSON"):
        check_source(source("jsonl", tmp_path / "broken.jsonl"))
    image_table(["a"], [png(1)]).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ConfigError, match=r"^data\.train\.columns\.image: column 'image' not in"):
        check_source(source("arrow", tmp_path / "saved", columns={"query": "question"}))


# ---- the collator ------------------------------------------------------------------------------------------


def test_collator_decodes_every_image_form(processor, tmp_path):
    make_page(2).save(tmp_path / "two.png")
    make_page(4).save(tmp_path / "four.png")
    rows = [
        {"query": "pil", "image": make_page(1)},
        {"query": "path", "image": str(tmp_path / "two.png")},
        {"query": "bytes dict", "image": {"bytes": png(3, (64, 48)), "path": None}},
        {"query": "path dict", "image": {"bytes": None, "path": str(tmp_path / "four.png")}},
    ]
    batch = ContrastiveCollator(processor)(rows)
    assert set(batch) == {"query", "document"}
    expected = processor.process_images([make_page(i) for i in (1, 2, 3, 4)])
    torch.testing.assert_close(batch["document"]["pixel_values"], expected["pixel_values"])
    torch.testing.assert_close(batch["query"]["input_ids"],
                               processor.process_queries([row["query"] for row in rows])["input_ids"])


def test_bad_rows_are_skipped_counted_and_logged(processor, tmp_path, caplog):
    rows = [
        {"query": "good one", "image": make_page(1)},
        {"query": "corrupt", "image": {"bytes": CORRUPT, "path": None}},
        {"query": "missing file", "image": str(tmp_path / "gone.png")},
        {"query": "   ", "image": make_page(2)},
        {"query": None, "image": make_page(3)},
        {"query": "no image", "image": None},
        {"query": "good two", "image": make_page(4)},
    ]
    collator = ContrastiveCollator(processor)
    with caplog.at_level(logging.WARNING, logger="vlzoo.data"):
        batch = collator(rows)
    assert batch["document"]["pixel_values"].shape[0] == 2
    torch.testing.assert_close(batch["query"]["input_ids"],
                               processor.process_queries(["good one", "good two"])["input_ids"])
    assert collator.skipped == 5
    assert collator.skipped_reasons == {"image: unreadable": 2, "query: empty or not a string": 2,
                                        "image: missing": 1}
    text = caplog.text
    assert "skipping bad row 1: image: cannot decode" in text
    assert "gone.png" in text
    assert "skipping bad row 3: query: expected a non-empty string" in text


def test_warnings_are_rate_limited(processor, caplog):
    collator = ContrastiveCollator(processor)
    bad = [{"query": "", "image": make_page(0)}] * 6
    with caplog.at_level(logging.WARNING, logger="vlzoo.data"):
        for _ in range(5):  # 30 bad rows
            assert collator([*bad, {"query": "fine", "image": make_page(1)}])["query"]["input_ids"].shape[0] == 1
    records = [r for r in caplog.records if r.name == "vlzoo.data"]
    assert collator.skipped == 30
    assert len(records) == 6  # five one by one, then the summary at 10
    assert records[-1].getMessage().startswith("skipped 10 bad rows so far")


def test_strict_mode_raises_naming_the_row(processor):
    collator = ContrastiveCollator(processor, strict=True)
    rows = [{"query": "good", "image": make_page(1)}, {"query": "x", "image": {"bytes": CORRUPT, "path": None}}]
    with pytest.raises(InputError) as caught:
        collator(rows)
    assert (caught.value.item, caught.value.index) == ("row", 1)
    assert caught.value.reason.startswith("image: cannot decode")
    with pytest.raises(InputError, match=r"^row 41: query: expected a non-empty string"):
        collator([{"query": "", "image": make_page(1), ROW_INDEX_KEY: 41}])
    assert collator.skipped == 0


def test_an_all_bad_batch_is_empty(processor):
    collator = ContrastiveCollator(processor)
    assert collator([{"query": "", "image": make_page(1)}, {"query": "x", "image": b"junk"}]) == {}
    assert collator([]) == {}
    assert collator.empty_batches == 2
    assert collator.skipped == 2


def test_negatives(processor, tmp_path):
    collator = ContrastiveCollator(processor, with_negatives=True)
    rows = [
        {"query": "a", "image": make_page(1), "negative": [make_page(11), make_page(12)]},
        {"query": "b", "image": make_page(2), "negative": make_page(13)},
        {"query": "c", "image": make_page(3), "negative": []},
        {"query": "d", "image": make_page(4), "negative": [{"bytes": CORRUPT, "path": None}]},
    ]
    batch = collator(rows)
    assert set(batch) == {"query", "document", "negative"}
    torch.testing.assert_close(batch["negative"]["pixel_values"],
                               processor.process_images([make_page(11), make_page(13)])["pixel_values"])
    assert batch["document"]["pixel_values"].shape[0] == 2
    assert collator.skipped_reasons == {"negative: missing": 1, "negative: unreadable": 1}
    # without with_negatives the column is ignored
    assert set(ContrastiveCollator(processor)(rows)) == {"query", "document"}


def test_a_row_the_processor_refuses_is_dropped():
    class Picky:
        def process_queries(self, queries):
            for index, query in enumerate(queries):
                if query == "refused":
                    raise InputError("query", index, "too long")
            return {"n": len(queries), "queries": list(queries)}

        def process_images(self, images):
            return {"n": len(images)}

    collator = ContrastiveCollator(Picky())
    batch = collator([{"query": q, "image": make_page(i)} for i, q in enumerate(["ok", "refused", "fine"])])
    assert batch["query"]["queries"] == ["ok", "fine"] and batch["document"]["n"] == 2
    assert collator.skipped_reasons == {"query: refused by the processor": 1}
    with pytest.raises(InputError, match=r"^row 1: query: too long"):
        ContrastiveCollator(Picky(), strict=True)([{"query": q, "image": make_page(0)} for q in ["ok", "refused"]])


def test_loaded_parquet_through_a_dataloader(processor, tmp_path, cache):
    write_parquet(tmp_path / "train.parquet", ["a", "b", "c", "d", "e"], [png(1), CORRUPT, png(3), png(4), png(5)])
    loaded = load_source(source("parquet", tmp_path / "train.parquet", columns=MAPPED), cache_dir=cache)
    collator = ContrastiveCollator(processor)
    loader = torch.utils.data.DataLoader(loaded, batch_size=2, collate_fn=collator)
    sizes = [batch["document"]["pixel_values"].shape[0] for batch in loader]
    assert sizes == [1, 2, 1]
    assert collator.skipped == 1


# ---- eval_pairs --------------------------------------------------------------------------------------------


def test_eval_pairs(tmp_path, cache, tiny_model, caplog):
    write_parquet(tmp_path / "eval.parquet", ["a", "", "c", "d"], [png(1), png(2), CORRUPT, png(4)])
    loaded = load_source(source("parquet", tmp_path / "eval.parquet", columns=MAPPED), cache_dir=cache)
    with caplog.at_level(logging.WARNING, logger="vlzoo.data"):
        queries, pages = eval_pairs(loaded)
    assert queries == ["a", "d"]
    assert isinstance(pages, PageList) and len(pages) == 2
    assert pixels(pages[1]) == pixels(make_page(4, (40, 30)))
    assert [pixels(p) for p in pages[0:2]] == [pixels(make_page(1, (40, 30))), pixels(make_page(4, (40, 30)))]
    assert "dropped 2 bad rows" in caplog.text
    assert tiny_model.embed_images(pages, batch_size=1).shape[0] == 2
    with pytest.raises(InputError, match=r"^row 1: query"):
        eval_pairs(loaded, strict=True)


def test_eval_pairs_each_row_is_its_own_page():
    same = make_page(7)
    queries, pages = eval_pairs([{"query": "x", "image": same}, {"query": "y", "image": same},
                                 {"query": "x", "image": make_page(8)}])
    assert queries == ["x", "y", "x"] and len(pages) == 3
