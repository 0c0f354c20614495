"""The ViDoRe benchmarks as MTEB runs them: a task list from `benchmarks.json` (Hub ids, revisions, splits, main
scores and language subsets), each task evaluated with `runner.evaluate`, and the averages the leaderboard
shows: a task's score is the mean of its main score over its subsets, the benchmark's the plain mean over its
tasks (null when a task is missing), and for ViDoRe v3 also the mean over its public tasks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlzoo_core.errors import VlzooError
from vlzoo_core.evaluation.datasets import load_dataset
from vlzoo_core.evaluation.runner import evaluate, task_score

DATA_FILE = Path(__file__).with_name("benchmarks.json")


@dataclass(frozen=True)
class BenchmarkTask:
    name: str
    path: str
    revision: str
    split: str
    main_score: str
    subsets: list[str]
    languages: dict[str, list[str]]
    public: bool


@dataclass(frozen=True)
class Benchmark:
    name: str
    mteb_name: str
    ids: str  # "split-prefixed" or "as-is" (see datasets)
    configs: str  # "shared": one corpus/queries/qrels, subsets by language; "per-subset": "<subset>-corpus", ...
    tasks: list[BenchmarkTask]


def benchmark_names() -> list[str]:
    return list(_data()["benchmarks"])


def get_benchmark(name: str) -> Benchmark:
    benchmarks = _data()["benchmarks"]
    if name not in benchmarks:
        raise VlzooError(f"unknown benchmark {name!r}; one of {', '.join(benchmarks)}")
    entry = benchmarks[name]
    return Benchmark(name, entry["mteb_name"], entry["ids"], entry["configs"],
                     [BenchmarkTask(**task) for task in entry["tasks"]])


def run_benchmark(model: Any, name: str, *, tasks: Sequence[str] | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate `model` on a benchmark's tasks (all, or those named in `tasks`); `options` go to `evaluate`.

    Returns {"benchmark", "mteb_name", "tasks": [task results in MTEB's layout], "task_scores", "mean_task",
    "mean_public", "skipped_tasks"}. A private task (ViDoRe v3's Telecom and Nuclear, gated on the Hub) that
    cannot be loaded is skipped and named in "skipped_tasks"; `mean_task` is then null, as on the leaderboard.
    """
    benchmark = get_benchmark(name)
    chosen = benchmark.tasks
    if tasks:
        known = {task.name: task for task in benchmark.tasks}
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise VlzooError(f"benchmark {name!r} has no task {unknown[0]!r}; its tasks: {', '.join(known)}")
        chosen = [known[t] for t in tasks]
    results, skipped = [], {}
    for task in chosen:
        try:
            results.append(evaluate_task(model, benchmark, task, **options))
        except VlzooError as exc:
            if task.public:
                raise
            skipped[task.name] = str(exc)
    if not results:
        first, reason = next(iter(skipped.items()))
        raise VlzooError(f"no task of {name!r} could be evaluated ({first}: {reason})")
    scores = {result["task_name"]: task_score(result) for result in results}
    public = [scores[task.name] for task in benchmark.tasks if task.public and task.name in scores]
    every_public = all(task.name in scores for task in benchmark.tasks if task.public)
    return {
        "benchmark": name,
        "mteb_name": benchmark.mteb_name,
        "tasks": results,
        "task_scores": scores,
        "mean_task": sum(scores.values()) / len(scores) if len(scores) == len(benchmark.tasks) else None,
        "mean_public": sum(public) / len(public) if public and every_public else None,
        "skipped_tasks": skipped,
    }


def evaluate_task(model: Any, benchmark: Benchmark, task: BenchmarkTask, **options: Any) -> dict[str, Any]:
    """One task's result in MTEB's layout: one score entry per subset, each with its languages."""
    multilingual = task.subsets != ["default"]
    if benchmark.configs == "per-subset":
        parts = [evaluate(model, load_dataset(task.path, split=task.split, format="beir", revision=task.revision,
                                              ids=benchmark.ids, config_prefix=f"{subset}-", language_subsets=False),
                          task_name=task.name, main_score=task.main_score, revision=task.revision, **options)
                 for subset in task.subsets]
        for part, subset in zip(parts, task.subsets, strict=True):
            part["scores"][task.split][0]["hf_subset"] = subset
        result = parts[0]
        result["scores"][task.split] = [part["scores"][task.split][0] for part in parts]
        result["evaluation_time"] = sum(part["evaluation_time"] for part in parts)
    else:
        data = load_dataset(task.path, split=task.split, format="beir", revision=task.revision, ids=benchmark.ids,
                            subsets=task.subsets if multilingual else None, language_subsets=multilingual)
        result = evaluate(model, data, task_name=task.name, main_score=task.main_score, revision=task.revision,
                          **options)
    for entry in result["scores"][task.split]:
        entry["languages"] = task.languages.get(entry["hf_subset"], [])
    return result


def _data() -> dict[str, Any]:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))
