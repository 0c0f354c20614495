"""`vlzoo eval`: datasets in both ViDoRe layouts built here with PIL pages, metrics against pytrec_eval on the
same run, one number for one model, the corpus cache, benchmarks, and the bad-input table."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytrec_eval
import torch
import yaml

import vlzoo
from tests.helpers import one_error_line, subprocess_env
from tests.helpers import run_in_process as run
from tests.index_corpus import synthetic_pages
from vlzoo_core.errors import VlzooError
from vlzoo_core.evaluation import benchmarks as benchmarks_module
from vlzoo_core.evaluation.benchmarks import Benchmark, BenchmarkTask, evaluate_task, get_benchmark, run_benchmark
from vlzoo_core.evaluation.datasets import load_dataset
from vlzoo_core.evaluation.metrics import K_VALUES
from vlzoo_core.evaluation.runner import evaluate, task_score
from vlzoo_core.index.index import Index

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PAGES = synthetic_pages(12, seed=3)
MEASURES = {"ndcg": "ndcg_cut", "map": "map_cut", "recall": "recall", "precision": "P", "hit_rate": "success"}


def cell(image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write(path: Path, columns: dict, types: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(name, (types or {}).get(name) or (IMAGE if name == "image" else None)
                         or pa.array(values).type) for name, values in columns.items()])
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def v1_table(path: Path, rows: list[tuple[str, int, str]]) -> Path:
    """rows: (query, page index in PAGES, image_filename)."""
    return write(path, {"query": [q for q, _, _ in rows], "image": [cell(PAGES[p]) for _, p, _ in rows],
                        "image_filename": [f for _, _, f in rows]})


def beir_folder(root: Path, corpus: dict, queries: dict, qrels: list[tuple], *, languages: dict | None = None,
                split: str = "test", prefix: str = "") -> Path:
    """corpus: id -> page index; queries: id -> text; qrels: (query id, corpus id, score). Hub-style files."""
    write(root / f"{prefix}corpus" / f"{split}-00000-of-00001.parquet",
          {"corpus-id": list(corpus), "image": [cell(PAGES[p]) for p in corpus.values()]})
    query_columns = {"query-id": list(queries), "query": list(queries.values())}
    if languages:
        query_columns["language"] = [languages[q] for q in queries]
    write(root / f"{prefix}queries" / f"{split}-00000-of-00001.parquet", query_columns)
    write(root / f"{prefix}qrels" / f"{split}-00000-of-00001.parquet",
          {"query-id": [q for q, _, _ in qrels], "corpus-id": [d for _, d, _ in qrels],
           "score": [s for _, _, s in qrels]})
    return root


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlzoo.build("colllava_tiny").eval()


def direct_pytrec(model, result: dict, texts: dict[str, str], qrels: dict) -> dict[str, float]:
    """pytrec_eval on the run that the index behind `result` gives for the queries: the reference numbers."""
    index = Index.open(result["vlzoo"]["index"], model)
    judged = {q: docs for q, docs in qrels.items() if docs}
    ids = [q for q in texts if q in judged]
    found = index.search([texts[q] for q in ids], k=min(1000, len(index)))
    run_dict = {q: {hit.id: hit.score for hit in hits} for q, hits in zip(ids, found, strict=True)}
    cut = ",".join(str(k) for k in K_VALUES)
    per_query = pytrec_eval.RelevanceEvaluator(judged, {f"{m}.{cut}" for m in MEASURES.values()}).evaluate(run_dict)
    return {f"{kind}_at_{k}": sum(v[f"{m}_{k}"] for v in per_query.values()) / len(per_query)
            for kind, m in MEASURES.items() for k in K_VALUES}


# ---- metrics equal pytrec_eval on the same run --------------------------------------------------------------

# Pages 0 and 1 are the same image under two ids (their scores tie for every query); 2..7 differ.
V1_ROWS = [("red circle and blue letter K", 0, "a.png"), ("red circle and blue letter K", 2, "c.png"),  # duplicated
           ("green square", 1, "b.png"), ("green square", 3, "d.png"), ("green square", 4, "e.png"),  # several pages
           ("yellow cross", 5, "f.png"), ("black letter O", 5, "f.png"), ("white triangle", 6, "g.png"),
           ("", 7, "h.png")]  # a page without a query stays in the corpus
CASES = {
    "v1-ties-duplicate-query-several-pages": ("v1", None),
    "beir-graded": ("beir", dict(corpus={"0": 0, "1": 1, "2": 2, "3": 3, "10": 4, "11": 5},
                                  queries={"0": "red circle", "1": "green square", "2": "yellow cross"},
                                  qrels=[("0", "0", 2), ("0", "1", 1), ("0", "10", 3), ("1", "2", 1), ("1", "3", 0),
                                         ("2", "11", 1), ("2", "3", 2)])),
    "beir-overlapping-ids": ("beir-as-is", dict(corpus={"p1": 0, "p2": 1, "q1": 2, "p4": 3},
                                                 queries={"q1": "red circle", "p2": "blue letter K"},
                                                 qrels=[("q1", "q1", 1), ("q1", "p4", 2), ("p2", "p1", 1)])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_metrics_equal_pytrec_eval_on_the_same_run(model, tmp_path, case):
    kind, spec = CASES[case]
    if kind == "v1":
        data = load_dataset(v1_table(tmp_path / "v1.parquet", V1_ROWS))
        assert len(data.corpus_ids) == 8 and data.format == "vidore-v1"
        (queries,) = data.query_sets
        assert len(queries.ids) == 5  # the duplicated query counts once, with both its pages relevant
        assert queries.qrels[queries.ids[0]] == {"corpus-test-a.png": 1, "corpus-test-c.png": 1}
    else:
        folder = beir_folder(tmp_path / "beir", spec["corpus"], spec["queries"], spec["qrels"])
        data = load_dataset(folder, ids="as-is" if kind == "beir-as-is" else "split-prefixed")
        (queries,) = data.query_sets
    result = evaluate(model, data, cache_dir=tmp_path / "cache")
    (entry,) = result["scores"]["test"]
    texts = dict(zip(queries.ids, queries.texts, strict=True))
    expected = direct_pytrec(model, result, texts, queries.qrels)
    for key, value in expected.items():
        assert entry[key] == pytest.approx(value, abs=1e-9), key
    assert entry["main_score"] == entry["ndcg_at_5"]
    assert result["vlzoo"]["indexed_pages"] == len(data.corpus_ids)


def test_v1_and_beir_versions_of_the_same_data_give_identical_metrics(model, tmp_path):
    result_v1 = evaluate(model, v1_table(tmp_path / "v1.parquet", V1_ROWS), cache_dir=tmp_path / "cache")
    distinct = {f: p for _, p, f in V1_ROWS}
    texts = list(dict.fromkeys(q for q, _, _ in V1_ROWS if q))
    folder = beir_folder(tmp_path / "beir", distinct, {str(i): t for i, t in enumerate(texts)},
                         [(str(texts.index(q)), f, 1) for q, _, f in V1_ROWS if q])
    result_beir = evaluate(model, folder, cache_dir=tmp_path / "cache")
    assert result_beir["vlzoo"]["format"] == "beir"
    (v1,), (beir,) = result_v1["scores"]["test"], result_beir["scores"]["test"]
    assert {k: v for k, v in v1.items() if k != "queries_without_judgments"} == \
        {k: v for k, v in beir.items() if k != "queries_without_judgments"}


# ---- one number for one model: training's eval and vlzoo eval ------------------------------------------------


def test_in_training_eval_and_vlzoo_eval_agree_on_the_same_run(tmp_path, capsys):
    eval_rows = [(q, i, f"p{i}") for i, q in enumerate(["red circle", "blue square", "green letter K", "black cross",
                                                        "yellow triangle", "red circle", "white letter O"])]
    eval_table = write(tmp_path / "eval.parquet", {"query": [q for q, _, _ in eval_rows],
                                                   "image": [cell(PAGES[i]) for _, i, _ in eval_rows]})
    config = yaml.safe_load((Path(__file__).parent.parent / "examples" / "quickstart.yaml").read_text())
    config["data"] = {"train": {"kind": "synthetic", "synthetic": {"pages": 16, "seed": 0}},
                      "eval": {"kind": "parquet", "path": str(eval_table)}}
    config["optim"].update(max_steps=2, epochs=None, per_device_batch_size=4, gradient_accumulation_steps=1)
    config["eval"] = {"metrics": ["ndcg@5", "ndcg@10", "map@10", "recall@1", "mrr@10", "hit_rate@3"],
                      "batch_size": 4}
    config["output"] = {"dir": str(tmp_path / "run"), "save_interval": None}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code, _, err = run(capsys, "train", "--model", "colllava_tiny", tmp_path / "run.yaml")
    assert code == 0, err
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())["after"]
    code, out, err = run(capsys, "eval", "--model", tmp_path / "run", "--dataset", eval_table, "--batch-size", 4,
                         "--query-batch-size", 4, "--cache-dir", tmp_path / "cache", "--output", tmp_path / "out")
    assert code == 0, err
    (task,) = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    (entry,) = task["scores"]["test"]
    assert entry["queries"] == 6  # "red circle" twice: one query, two relevant pages
    for name, value in trained.items():
        assert entry[name.replace("@", "_at_")] == pytest.approx(value, abs=1e-9), name


# ---- the cache -----------------------------------------------------------------------------------------------


def test_a_second_eval_encodes_no_page_and_a_changed_page_only_that_page(model, tmp_path, monkeypatch):
    from vlzoo_core.index import encode

    encoded = []
    original = encode.PageEncoder.encode
    monkeypatch.setattr(encode.PageEncoder, "encode", lambda self, images: encoded.append(len(images)) or
                        original(self, images))
    table = v1_table(tmp_path / "v1.parquet", V1_ROWS)
    first = evaluate(model, table, cache_dir=tmp_path / "cache")
    assert first["vlzoo"]["encoded_pages"] == 8 and sum(encoded) == 8
    second = evaluate(model, table, cache_dir=tmp_path / "cache")
    assert second["vlzoo"]["encoded_pages"] == 0 and sum(encoded) == 8
    assert second["scores"] == first["scores"]
    changed = [(q, 9 if f == "g.png" else p, f) for q, p, f in V1_ROWS]
    third = evaluate(model, v1_table(tmp_path / "v1.parquet", changed), cache_dir=tmp_path / "cache")
    assert third["vlzoo"]["encoded_pages"] == 1 and sum(encoded) == 9
    assert third["vlzoo"]["index"] == first["vlzoo"]["index"]


def test_pooling_and_storage_settings_get_their_own_index(model, tmp_path):
    table = v1_table(tmp_path / "v1.parquet", V1_ROWS)
    from vlzoo_core.evaluation.runner import IndexSettings

    exact = evaluate(model, table, cache_dir=tmp_path / "cache")
    pooled = evaluate(model, table, cache_dir=tmp_path / "cache", settings=IndexSettings(pool_factor=2,
                                                                                         vector_dtype="float16"))
    assert pooled["vlzoo"]["index"] != exact["vlzoo"]["index"] and pooled["vlzoo"]["encoded_pages"] == 8
    assert Index.open(pooled["vlzoo"]["index"], model).manifest.pooling.factor == 2
    approximate = evaluate(model, table, cache_dir=tmp_path / "cache",
                           settings=IndexSettings(approximate="tokens", candidates=8))
    assert approximate["vlzoo"]["approximate"] == "tokens"
    assert 0.0 <= approximate["scores"]["test"][0]["ndcg_at_5"] <= 1.0


# ---- benchmarks ----------------------------------------------------------------------------------------------


def test_the_benchmark_data_file_lists_mtebs_vidore_tasks():
    v1, v2, v3 = (get_benchmark(name) for name in ("vidore-v1", "vidore-v2", "vidore-v3"))
    assert (len(v1.tasks), len(v2.tasks), len(v3.tasks)) == (10, 4, 10)
    assert {t.main_score for t in v1.tasks + v2.tasks} == {"ndcg_at_5"} and {t.main_score for t in v3.tasks} == \
        {"ndcg_at_10"}
    assert all(len(t.revision) == 40 for t in v1.tasks + v2.tasks + v3.tasks)
    assert v2.tasks[0].subsets == ["french", "spanish", "english", "german"] and v2.configs == "shared"
    assert v3.configs == "per-subset" and v3.ids == "as-is" and sum(not t.public for t in v3.tasks) == 2
    with pytest.raises(VlzooError, match="unknown benchmark 'vidore-v9'"):
        get_benchmark("vidore-v9")


def test_multilingual_tasks_score_each_language_and_average_them(model, tmp_path, monkeypatch):
    corpus = {"0": 0, "1": 1, "2": 2, "3": 3}
    queries = {"0": "red circle", "1": "cercle rouge", "2": "green square", "3": "carré vert"}
    languages = {"0": "english", "1": "french", "2": "english", "3": "french"}
    qrels = [("0", "0", 1), ("1", "0", 1), ("2", "1", 1), ("3", "1", 1)]
    shared = beir_folder(tmp_path / "v2", corpus, queries, qrels, languages=languages)
    per_subset = tmp_path / "v3"
    for language in ("english", "french"):  # each language's configs repeat the corpus and the qrels
        picked = {q: t for q, t in queries.items() if languages[q] == language}
        beir_folder(per_subset, {f"corpus-test-{c}": p for c, p in corpus.items()},
                    {f"query-test-{q}": t for q, t in picked.items()},
                    [(f"query-test-{q}", f"corpus-test-{d}", s) for q, d, s in qrels], prefix=f"{language}-")
    tasks = {"shared": BenchmarkTask("TaskA", str(shared), "r" * 40, "test", "ndcg_at_5", ["english", "french"],
                                     {"english": ["eng-Latn"], "french": ["fra-Latn"]}, True),
             "per-subset": BenchmarkTask("TaskB", str(per_subset), "r" * 40, "test", "ndcg_at_10",
                                         ["english", "french"], {"english": ["eng-Latn"], "french": ["fra-Latn"]},
                                         False)}
    benchmark = Benchmark("fake", "Fake(v0)", "split-prefixed", "shared", [tasks["shared"]])
    shared_result = evaluate_task(model, benchmark, tasks["shared"], cache_dir=tmp_path / "cache")
    v3_like = Benchmark("fake3", "Fake(v3)", "as-is", "per-subset", [tasks["per-subset"]])
    per_subset_result = evaluate_task(model, v3_like, tasks["per-subset"], cache_dir=tmp_path / "cache")
    for result in (shared_result, per_subset_result):
        entries = result["scores"]["test"]
        assert [e["hf_subset"] for e in entries] == ["english", "french"]
        assert [e["languages"] for e in entries] == [["eng-Latn"], ["fra-Latn"]]
        assert [e["queries"] for e in entries] == [2, 2]
        assert task_score(result) == pytest.approx(sum(e["main_score"] for e in entries) / 2)
    # the same ids and pages in both layouts: the same numbers
    assert [e["ndcg_at_5"] for e in per_subset_result["scores"]["test"]] == \
        [e["ndcg_at_5"] for e in shared_result["scores"]["test"]]
    # per-subset configs share one index: the second language encodes nothing
    assert per_subset_result["vlzoo"]["encoded_pages"] == 4

    gated = BenchmarkTask("Gated", str(tmp_path / "not-downloadable"), "r" * 40, "test", "ndcg_at_5", ["default"],
                          {}, False)
    monkeypatch.setattr(benchmarks_module, "get_benchmark",
                        lambda name: Benchmark(name, "Mixed", "split-prefixed", "shared", [tasks["shared"], gated]))
    summary = run_benchmark(model, "mixed", cache_dir=tmp_path / "cache")
    assert summary["task_scores"] == {"TaskA": pytest.approx(task_score(shared_result))}
    assert summary["mean_task"] is None  # a task is missing: no benchmark mean, as on the leaderboard
    assert summary["mean_public"] == pytest.approx(task_score(shared_result))
    assert "dataset not found" in summary["skipped_tasks"]["Gated"]
    public_missing = BenchmarkTask(**{**vars(gated), "public": True})
    monkeypatch.setattr(benchmarks_module, "get_benchmark",
                        lambda name: Benchmark(name, "Mixed", "split-prefixed", "shared", [public_missing]))
    with pytest.raises(VlzooError, match="dataset not found"):
        run_benchmark(model, "mixed", cache_dir=tmp_path / "cache")


# ---- the command line: output and bad input ----------------------------------------------------------------


def test_results_json_in_mtebs_layout_and_per_query_output(model_dir, tmp_path, capsys):
    table = v1_table(tmp_path / "data" / "docs.parquet", V1_ROWS)
    code, out, err = run(capsys, "eval", "--model", model_dir, "--dataset", table, "--cache-dir", tmp_path / "cache",
                         "--output", tmp_path / "out", "--per-query")
    assert code == 0, err
    assert "main score" in out and "docs" in out and "results.json" in out
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    (task,) = summary["tasks"]
    assert set(task) >= {"task_name", "dataset_revision", "scores", "evaluation_time", "vlzoo"}
    (entry,) = task["scores"]["test"]
    assert entry["hf_subset"] == "default" and entry["main_score"] == entry["ndcg_at_5"]
    assert {f"{kind}_at_{k}" for kind in ("ndcg", "map", "recall", "precision", "mrr", "hit_rate")
            for k in K_VALUES} <= set(entry)
    per_query = json.loads((tmp_path / "out" / "per_query.json").read_text())["docs"]["default"]
    assert len(per_query) == 5
    first = next(iter(per_query.values()))
    assert len(first["top10"]) == 8 and {"query", "relevant", "ndcg_at_5"} <= set(first)
    code, out, _ = run(capsys, "eval", "--model", model_dir, "--dataset", table, "--cache-dir", tmp_path / "cache",
                       "--output", tmp_path / "out", "--json")
    assert code == 0 and json.loads(out)["tasks"][0]["vlzoo"]["encoded_pages"] == 0


def test_unreadable_pages_are_skipped_and_counted_in_results(model_dir, tmp_path, capsys):
    rows = {"query": ["red circle", "blue square", "green cross"],
            "image": [cell(PAGES[0]), {"bytes": b"not an image", "path": None}, cell(PAGES[2])],
            "image_filename": ["a", "b", "c"]}
    table = write(tmp_path / "bad.parquet", rows)
    code, _, err = run(capsys, "eval", "--model", model_dir, "--dataset", table, "--cache-dir", tmp_path / "cache",
                       "--output", tmp_path / "out")
    assert code == 0, err
    assert "1 of 3 pages could not be read" in err
    extra = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"][0]["vlzoo"]
    assert (extra["skipped_pages"], extra["indexed_pages"], extra["corpus_pages"]) == (1, 2, 3)
    assert extra["skipped"]["by_reason"] == {"unreadable image": 1}


def _bad_cases(tmp_path: Path, model_dir: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    folder = beir_folder(tmp_path / "beir", {"0": 0, "1": 1}, {"0": "red circle", "1": "green square"},
                         [("0", "0", 1), ("1", "1", 1)], languages={"0": "english", "1": "english"})
    orphans = beir_folder(tmp_path / "orphans", {"0": 0}, {"0": "red circle"},
                          [("0", "0", 1), ("0", "7", 1), ("0", "8", 1)])
    empty = v1_table(tmp_path / "empty.parquet", [("", 0, "a"), ("  ", 1, "b")])
    odd = write(tmp_path / "odd.parquet", {"title": ["x"], "body": ["y"]})
    other_index = tmp_path / "other-index"
    torch.manual_seed(1)
    Index.create(other_index, vlzoo.build("colllava_tiny"))
    base = ["eval", "--model", model_dir, "--cache-dir", tmp_path / "cache", "--output", tmp_path / "out"]
    return {
        "missing-split": ([*base, "--dataset", folder, "--split", "validation"],
                          ("no split 'validation'", "splits found: test")),
        "missing-subset": ([*base, "--dataset", folder, "--subset", "klingon"],
                           ("no subset 'klingon'", "subsets found: english")),
        "qrels-outside-the-corpus": ([*base, "--dataset", orphans], ("2 document ids", "not in the corpus")),
        "empty-query-set": ([*base, "--dataset", empty], ("no queries",)),
        "model-and-index-mismatch": ([*base, "--dataset", folder, "--index", other_index],
                                     ("built with colllava_tiny", "but this model is")),
        "neither-layout": ([*base, "--dataset", odd], ("neither a ViDoRe v1 table", "columns found: title, body")),
        "no-such-dataset": ([*base, "--dataset", tmp_path / "nothing.parquet"], ("dataset not found",)),
        "dataset-and-benchmark": ([*base, "--dataset", folder, "--benchmark", "vidore-v1"], ("one of --dataset",)),
        "no-model": (["eval", "--dataset", folder], ("--model is required",)),
        "bad-pool-factor": ([*base, "--dataset", folder, "--pool-factor", 0], ("--pool-factor must be at least 1",)),
        "unknown-main-score": ([*base, "--dataset", folder, "--main-score", "bleu"], ("unknown main score 'bleu'",)),
        "hub-offline": ([*base, "--dataset", "vidore/not-cached-anywhere"], ("cannot load Hub dataset",)),
    }


BAD = ["missing-split", "missing-subset", "qrels-outside-the-corpus", "empty-query-set", "model-and-index-mismatch",
       "neither-layout", "no-such-dataset", "dataset-and-benchmark", "no-model", "bad-pool-factor",
       "unknown-main-score", "hub-offline"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_and_exit_2(model_dir, tmp_path, capsys, name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv, expected = _bad_cases(tmp_path, model_dir)[name]
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    line = one_error_line(err)
    for fragment in expected:
        assert fragment in line, line
    assert not (tmp_path / "out" / "results.json").exists()


def test_two_processes_give_the_numbers_of_one(model_dir, tmp_path, capsys):
    table = v1_table(tmp_path / "v1.parquet", V1_ROWS)
    argv = ["eval", "--model", str(model_dir), "--dataset", str(table), "--batch-size", "2"]
    code, _, err = run(capsys, *argv, "--cache-dir", tmp_path / "cache-one", "--output", tmp_path / "one")
    assert code == 0, err
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "vlzoo", *argv, "--cache-dir", str(tmp_path / "cache-two"), "--output", str(tmp_path / "two")],
        env={**subprocess_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("main score") == 1  # rank 0 reports
    one, two = (json.loads((tmp_path / name / "results.json").read_text())["tasks"][0] for name in ("one", "two"))
    assert two["vlzoo"]["encoded_pages"] == 8 and two["vlzoo"]["indexed_pages"] == 8
    for key, value in one["scores"]["test"][0].items():
        assert two["scores"]["test"][0][key] == pytest.approx(value, abs=1e-6), key
