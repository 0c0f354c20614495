"""`vlzoo index` / `vlzoo search` through the CLI: the bad-input table, info, rm, compact, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vlzoo
from tests.helpers import one_error_line, subprocess_env, vlzoo_script
from tests.helpers import run_in_process as run
from tests.index_corpus import encrypted_pdf, make_corpus, synthetic_pages, write_pdf, zero_page_pdf


# ---- inputs that are skipped, counted and reported (or errors with --strict) ---------------------------


def _bad_inputs(folder: Path) -> dict[str, tuple[str, str]]:
    """Writes one bad file per case next to two good pages; case -> (file name, reason reported)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    synthetic_pages(1, 3)[0].save(folder / "good.png")
    write_pdf(folder / "good.pdf", synthetic_pages(1, 4))
    (folder / "corrupt.pdf").write_bytes(os.urandom(2048))
    zero_page_pdf(folder / "empty.pdf")
    encrypted_pdf(folder / "locked.pdf")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    Image.new("L", (9000, 9000), 255).save(folder / "huge.png")
    (folder / "notes.docx").write_bytes(b"PK\x03\x04 not a page")
    return {
        "corrupt PDF": ("corrupt.pdf", "corrupt PDF"),
        "zero-page PDF": ("empty.pdf", "zero-page PDF"),
        "encrypted PDF": ("locked.pdf", "encrypted PDF"),
        "unreadable image": ("broken.png", "unreadable image"),
        "huge image": ("huge.png", "huge image"),
        "unsupported type": ("notes.docx", "unsupported file type"),
    }


def test_bad_inputs_are_skipped_counted_and_reported_in_one_line(capsys, model_dir, tmp_path, monkeypatch):
    from vlzoo_core.index import sources

    monkeypatch.setattr(sources, "MAX_PAGE_PIXELS", 50_000_000)
    cases = _bad_inputs(tmp_path / "in")
    code, out, err = run(capsys, "index", tmp_path / "in", "--model", model_dir, "--out", tmp_path / "idx")
    assert code == 0, err
    summary = [line for line in out.splitlines() if line.startswith("added")]
    assert len(summary) == 1
    for _, reason in cases.values():
        assert reason in summary[0], (reason, summary[0])
    info = json.loads(run(capsys, "index", "info", tmp_path / "idx", "--json")[1])
    assert info["pages"] == 2
    assert info["last_add_skipped"]["total"] == len(cases)
    assert set(info["last_add_skipped"]["by_reason"]) == {reason for _, reason in cases.values()}


@pytest.mark.parametrize("case", ["corrupt PDF", "encrypted PDF", "zero-page PDF", "unreadable image",
                                  "huge image", "unsupported type"])
def test_strict_mode_makes_each_bad_input_an_error_naming_the_file(capsys, model_dir, tmp_path, case, monkeypatch):
    from vlzoo_core.index import sources

    monkeypatch.setattr(sources, "MAX_PAGE_PIXELS", 50_000_000)
    cases = _bad_inputs(tmp_path / "all")
    name, _ = cases[case]
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / name).write_bytes((tmp_path / "all" / name).read_bytes())
    (folder / "good.png").write_bytes((tmp_path / "all" / "good.png").read_bytes())
    code, _, err = run(capsys, "index", folder, "--model", model_dir, "--out", tmp_path / "idx", "--strict")
    assert code == 2
    assert name in one_error_line(err)
    assert not (tmp_path / "idx" / "COMMIT.json").exists()


# ---- usage errors --------------------------------------------------------------------------------------


def test_usage_errors_are_one_line_with_exit_code_2(capsys, model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    synthetic_pages(1, 0)[0].save(tmp_path / "page.png")
    cases = [
        (["index", tmp_path / "empty", "--model", model_dir, "--out", tmp_path / "a"], "has no PDF or image files"),
        (["index", tmp_path / "missing", "--model", model_dir, "--out", tmp_path / "b"], "source not found"),
        (["index", tmp_path / "page.png", "--model", "colllav", "--out", tmp_path / "c"], "did you mean"),
        (["index", tmp_path / "page.png", "--model", model_dir, "--out", tmp_path / "d", "--pool-factor", "0"],
         "--pool-factor"),
        (["index", tmp_path / "page.png", "--out", tmp_path / "e"], "--model is required"),
        (["search", tmp_path / "nowhere", "query"], "not a vlzoo index"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert message in one_error_line(err), (argv, err)

    assert run(capsys, "index", tmp_path / "page.png", "--model", model_dir, "--out", tmp_path / "idx")[0] == 0
    for argv, message in [
        (["search", tmp_path / "idx", "a red circle", "-k", "0"], "k must be a positive integer"),
        (["search", tmp_path / "idx", "   "], "query 0 is empty"),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in one_error_line(err), (argv, err)

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    manifest["format_version"] = 7
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run(capsys, "search", tmp_path / "idx", "a red circle")
    assert code == 2 and "format version 7" in one_error_line(err)


def test_another_model_is_refused_naming_both(capsys, model_dir, tmp_path):
    synthetic_pages(1, 0)[0].save(tmp_path / "page.png")
    assert run(capsys, "index", tmp_path / "page.png", "--model", model_dir, "--out", tmp_path / "idx")[0] == 0
    torch.manual_seed(5)
    other = tmp_path / "other"
    vlzoo.build("colllava_tiny").save_pretrained(other)
    for argv in (["search", tmp_path / "idx", "red circle", "--model", other],
                 ["index", tmp_path / "page.png", "--model", other, "--out", tmp_path / "idx"]):
        code, _, err = run(capsys, *argv)
        line = one_error_line(err)
        assert code == 2 and line.count("colllava_tiny") == 2 and "built with" in line


def test_a_query_on_an_empty_index_returns_no_results_with_a_note(capsys, model_dir, tmp_path):
    synthetic_pages(1, 0)[0].save(tmp_path / "page.png")
    assert run(capsys, "index", tmp_path / "page.png", "--model", model_dir, "--out", tmp_path / "idx")[0] == 0
    assert run(capsys, "index", "rm", tmp_path / "idx", "page.png#1")[0] == 0
    code, out, err = run(capsys, "search", tmp_path / "idx", "a red circle", "--json")
    assert code == 0 and "no pages" in err
    assert json.loads(out) == [{"query": "a red circle", "results": []}]


# ---- info, search output, rm, compact --------------------------------------------------------------------


def test_info_search_rm_and_compact(capsys, model_dir, tmp_path):
    corpus = make_corpus(tmp_path / "c", pdfs=2, pages_per_pdf=5, images=6)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"doc0.pdf": {"team": "finance"}}))
    code, out, err = run(capsys, "index", corpus, "--model", model_dir, "--out", tmp_path / "idx",
                         "--metadata", meta, "--shard-size", "4")
    assert code == 0, err
    assert "added 16 pages" in out

    code, out, _ = run(capsys, "index", "info", tmp_path / "idx")
    assert code == 0 and "16 from 8 documents" in out and "factor 1" in out and "KiB per page" in out

    code, out, _ = run(capsys, "search", tmp_path / "idx", "red circle", "green cross", "-k", "3")
    lines = [line.split() for line in out.splitlines() if not line.startswith("query:")]
    assert code == 0 and len(lines) == 6 and [line[0] for line in lines[:3]] == ["1", "2", "3"]
    results = json.loads(run(capsys, "search", tmp_path / "idx", "red circle", "-k", "16", "--json")[1])[0]
    assert len(results["results"]) == 16
    hit = next(r for r in results["results"] if r["source"] == "doc0.pdf")
    assert hit["metadata"] == {"team": "finance"} and hit["id"] == f"doc0.pdf#{hit['page']}"

    code, out, _ = run(capsys, "index", "rm", tmp_path / "idx", hit["id"])
    assert code == 0 and "removed 1 pages" in out
    code, _, err = run(capsys, "index", "rm", tmp_path / "idx", "nope#1")
    assert code == 2 and "nope#1" in one_error_line(err)
    code, out, _ = run(capsys, "index", "compact", tmp_path / "idx")
    assert code == 0 and "MiB freed" in out
    results = json.loads(run(capsys, "search", tmp_path / "idx", "red circle", "-k", "16", "--json")[1])[0]
    assert len(results["results"]) == 15 and hit["id"] not in {r["id"] for r in results["results"]}


# ---- SIGKILL during indexing, then a rerun ------------------------------------------------------------------


def _contents(root: Path) -> tuple[list[str], dict[str, bytes]]:
    from vlzoo_core.index.index import Index

    snap = Index.open(root).snapshot()
    vectors = {}
    for ref, record in snap.records():
        row = ref & 0xFFFFFFFF
        vectors[record.id] = snap.shards[ref >> 32].vectors(row, row + 1).numpy().tobytes()
    return [entry.name for entry in snap.commit.shards], vectors


def test_sigkill_mid_index_then_rerun_equals_an_uninterrupted_run(capsys, model_dir, tmp_path):
    corpus = make_corpus(tmp_path / "c", pdfs=2, pages_per_pdf=30, images=20)
    argv = ["index", corpus, "--model", model_dir, "--shard-size", "8", "--batch-size", "2"]
    assert run(capsys, *argv, "--out", tmp_path / "whole")[0] == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen([vlzoo_script(), *map(str, argv), "--out", str(killed)], env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((killed / "shards").glob("*.safetensors"))) < 3:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(list((killed / "shards").glob("*.safetensors")))
    assert 3 <= written < 10, "the run must be killed part-way (10 shards in all)"
    assert not (killed / "COMMIT.json").exists(), "nothing is visible before the commit"
    code, out, err = run(capsys, *argv, "--out", killed)
    assert code == 0, err
    assert f"resumed {written * 8}" in out
    assert _contents(killed) == _contents(tmp_path / "whole")


# ---- several processes ---------------------------------------------------------------------------------


def test_two_processes_give_the_index_of_one(capsys, model_dir, tmp_path):
    corpus = make_corpus(tmp_path / "c", pdfs=2, pages_per_pdf=9, images=7)
    argv = ["index", str(corpus), "--model", str(model_dir), "--shard-size", "5", "--batch-size", "2"]
    assert run(capsys, *argv, "--out", tmp_path / "one")[0] == 0
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "vlzoo", *argv, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("added 25 pages") == 1 and "by 2 processes" in result.stdout  # rank 0 prints
    one_names, one = _contents(tmp_path / "one")
    two_names, two = _contents(tmp_path / "two")
    assert one_names == two_names and one.keys() == two.keys()
    for page_id in one:
        a = torch.frombuffer(bytearray(one[page_id]), dtype=torch.float32)
        b = torch.frombuffer(bytearray(two[page_id]), dtype=torch.float32)
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
