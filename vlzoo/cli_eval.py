"""`vlzoo eval`: a thin wrapper over `vlzoo_core.evaluation` (one dataset, or a ViDoRe benchmark)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from vlzoo.cli_processes import is_main_process, leave_process_group, process_device
from vlzoo_core.errors import VlzooError

SHOWN = ("ndcg_at_5", "ndcg_at_10", "recall_at_1", "recall_at_5", "mrr_at_10")
COLUMN_OPTIONS = ("query", "image", "image_id", "corpus_id", "query_id", "score", "language")


def cmd_eval(args: argparse.Namespace) -> int:
    from vlzoo_core.evaluation.benchmarks import run_benchmark
    from vlzoo_core.evaluation.datasets import EvalColumns
    from vlzoo_core.evaluation.runner import IndexSettings, evaluate
    from vlzoo_core.index.models import load_model

    _check(args)
    device = process_device()
    model = identity = None
    if args.model is not None:
        model, identity = load_model(args.model, weights=args.weights, adapter=args.adapter, device=device)
    settings = IndexSettings(pool_factor=args.pool_factor, vector_dtype=args.vector_dtype, backend=args.index_backend,
                             approximate=args.approximate, candidates=args.candidates)
    options: dict[str, Any] = dict(settings=settings, identity=identity, cache_dir=args.cache_dir,
                                   batch_size=args.batch_size, query_batch_size=args.query_batch_size,
                                   per_query=args.per_query, progress=sys.stderr.isatty())
    if args.benchmark:
        summary = run_benchmark(model, args.benchmark, tasks=args.tasks, **options)
    else:
        columns = EvalColumns(**{name: getattr(args, f"{name}_column") for name in COLUMN_OPTIONS})
        result = evaluate(model, args.dataset, split=args.split, format=args.format, columns=columns,
                          subsets=args.subset, revision=args.revision, main_score=args.main_score,
                          index=args.index, **options)
        summary = {"benchmark": None, "tasks": [result]}
    summary = {"model": summary["tasks"][0]["vlzoo"]["model"], **summary}
    if is_main_process():
        _report(summary, args)
    leave_process_group()
    return 0


def _check(args: argparse.Namespace) -> None:
    if (args.dataset is None) == (args.benchmark is None):
        raise VlzooError("give one of --dataset (a Hub id or a local file or folder) or --benchmark")
    if args.model is None and args.index is None:
        raise VlzooError("--model is required (a registered name or a `vlzoo train` output folder), unless --index "
                         "names an index whose manifest records it")
    if args.benchmark and (args.index or args.subset or args.revision):
        raise VlzooError("--index, --subset and --revision apply to --dataset only")
    if args.tasks and not args.benchmark:
        raise VlzooError("--tasks applies to --benchmark only")
    for name, value in (("--pool-factor", args.pool_factor), ("--batch-size", args.batch_size),
                        ("--query-batch-size", args.query_batch_size)):
        if value < 1:
            raise VlzooError(f"{name} must be at least 1, got {value}")
    if args.candidates is not None and args.approximate is None:
        raise VlzooError("--candidates applies to --approximate search only")


def _report(summary: dict[str, Any], args: argparse.Namespace) -> None:
    output = Path(args.output) if args.output else Path("results") / _slug(args.model or summary["model"].split()[0])
    output.mkdir(parents=True, exist_ok=True)
    per_query = {task["task_name"]: task.pop("per_query") for task in summary["tasks"] if "per_query" in task}
    (output / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if per_query:
        (output / "per_query.json").write_text(json.dumps(per_query, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(_table(summary))
    if summary["benchmark"]:
        mean = summary["mean_task"]
        line = f"{summary['mteb_name']}: mean over tasks {'-' if mean is None else f'{mean:.4f}'}"
        if summary.get("mean_public") is not None and summary["mean_public"] != mean:
            line += f", over public tasks {summary['mean_public']:.4f}"
        print(line)
        for task, reason in summary["skipped_tasks"].items():
            print(f"{task}: skipped (a private task): {reason}", file=sys.stderr)
    for task in summary["tasks"]:
        extra = task["vlzoo"]
        if extra["skipped_pages"]:
            print(f"{task['task_name']}: {extra['skipped_pages']} of {extra['corpus_pages']} pages could not be read "
                  f"and were left out: {extra['skipped']['by_reason']}", file=sys.stderr)
    written = ["results.json"] + (["per_query.json"] if per_query else [])
    print(f"wrote {', '.join(str(output / name) for name in written)}")


def _table(summary: dict[str, Any]) -> str:
    header = ["task", "subset", "main score", *(key.replace("_at_", "@") for key in SHOWN), "queries", "pages",
              "encoded"]
    rows = []
    for task in summary["tasks"]:
        extra = task["vlzoo"]
        for entries in task["scores"].values():
            for entry in entries:
                rows.append([task["task_name"], entry["hf_subset"], f"{entry['main_score']:.4f} ({extra['main_score']})",
                             *(f"{entry[key]:.4f}" for key in SHOWN), str(entry["queries"]),
                             f"{extra['indexed_pages']}/{extra['corpus_pages']}", str(extra["encoded_pages"])])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    from vlzoo_core.evaluation.benchmarks import benchmark_names

    p = commands.add_parser(
        "eval", help="evaluate a retriever on a dataset or a ViDoRe benchmark (MTEB's metrics)",
        description="Score a model on a retrieval dataset (a ViDoRe v1 table or a BEIR corpus/queries/qrels "
        "layout, from the Hub or local files) or on a whole ViDoRe benchmark, with MTEB's metrics. The corpus is "
        "encoded into a cached index: a second run of the same model on the same data encodes only the queries. "
        "Writes results.json (MTEB's result layout) into --output. Several processes: "
        "`accelerate launch -m vlzoo eval ...`.")
    p.add_argument("--model", help="registered model name or a `vlzoo train` output folder")
    p.add_argument("--weights", help="checkpoint folder or Hub id for a registered model ('pretrained': its own)")
    p.add_argument("--adapter", help="PEFT adapter folder or Hub id, merged into --weights")
    what = p.add_argument_group("what to evaluate on")
    what.add_argument("--dataset", metavar="ID_OR_PATH", help="Hub dataset id, or a local table file or folder")
    what.add_argument("--benchmark", choices=benchmark_names(),
                      help="a benchmark's task list, with the Hub ids and revisions MTEB uses")
    what.add_argument("--tasks", nargs="+", metavar="TASK", help="with --benchmark: only these tasks")
    what.add_argument("--split", default="test", help="dataset split (default test)")
    what.add_argument("--format", choices=("auto", "vidore-v1", "beir"), default="auto",
                      help="dataset layout (default: detected)")
    what.add_argument("--subset", nargs="+", metavar="SUBSET", help="query subsets (languages) to score (default: all)")
    what.add_argument("--revision", help="Hub dataset revision")
    what.add_argument("--main-score", default="ndcg_at_5", help="the main score of a --dataset (default ndcg_at_5)")
    for name in COLUMN_OPTIONS:
        what.add_argument(f"--{name.replace('_', '-')}-column", metavar="NAME",
                          help=f"the {name.replace('_', ' ')} column (default: detected)")
    index = p.add_argument_group("how the corpus is indexed and searched")
    index.add_argument("--pool-factor", type=int, default=1, metavar="K",
                       help="store about 1/K of each page's vectors (default 1: all)")
    index.add_argument("--vector-dtype", choices=("float32", "float16", "int8"), default="float32",
                       help="stored vector type (default float32: the model's own scores)")
    index.add_argument("--index-backend", default="local", help="index backend: local (default) or qdrant")
    index.add_argument("--approximate", choices=("tokens", "muvera"),
                       help="search approximately: this candidate stage, then exact rerank (local backend)")
    index.add_argument("--candidates", type=int, help="candidates reranked per query with --approximate")
    index.add_argument("--index", metavar="DIR", help="use (and fill) this index folder instead of the cache")
    index.add_argument("--cache-dir", metavar="DIR", help="where cached indexes live (default $VLZOO_CACHE/eval or "
                       "~/.cache/vlzoo/eval)")
    index.add_argument("--batch-size", type=int, default=4, help="pages per forward pass (default 4)")
    index.add_argument("--query-batch-size", type=int, default=16, help="queries per forward pass (default 16)")
    out = p.add_argument_group("output")
    out.add_argument("--output", metavar="DIR", help="where results.json goes (default results/<--model, as a "
                     "folder name>)")
    out.add_argument("--per-query", action="store_true",
                     help="also write per_query.json: each query's scores and top 10 pages")
    out.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.set_defaults(func=cmd_eval)
