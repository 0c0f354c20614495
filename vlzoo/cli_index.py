"""`vlzoo index` and `vlzoo search`: thin wrappers over `vlzoo_core.index.Index`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vlzoo.cli_processes import is_main_process, leave_process_group, process_device
from vlzoo_core.errors import SearchIndexError

INDEX_ACTIONS = ("info", "rm", "compact")


def _metadata(path: str | None) -> dict[str, dict[str, Any]] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SearchIndexError(f"--metadata {path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SearchIndexError(f"--metadata {path}: expected an object mapping each source to an object of fields")
    return data


def cmd_index(args: argparse.Namespace) -> int:
    from vlzoo_core.index.index import Index
    from vlzoo_core.index.manifest import MANIFEST_FILE
    from vlzoo_core.index.models import load_model
    from vlzoo_core.index.sources import TableOptions

    if args.pool_factor < 1:
        raise SearchIndexError(f"--pool-factor must be at least 1, got {args.pool_factor}")
    if args.batch_size < 1:
        raise SearchIndexError(f"--batch-size must be at least 1, got {args.batch_size}")
    metadata = _metadata(args.metadata)
    device = process_device()
    exists = (Path(args.out) / MANIFEST_FILE).exists()
    if args.model is None:
        if not exists:
            raise SearchIndexError("--model is required to create an index (a registered name or a `vlzoo train` "
                                   "output folder)")
        index = Index.open(args.out, device=device)
    else:
        model, identity = load_model(args.model, weights=args.weights, adapter=args.adapter, device=device)
        backend_config: dict[str, Any] = {}
        if args.backend == "qdrant":
            backend_config = {k: v for k, v in (("url", args.qdrant_url), ("collection", args.collection)) if v}
        elif args.approximate:
            backend_config = {"approximate": {"method": args.approximate}}
        index = Index.create(args.out, model, identity=identity, pool_factor=args.pool_factor,
                             drop_prompt_tokens=args.drop_prompt_tokens, dtype=args.vector_dtype,
                             backend=args.backend, backend_config=backend_config, shard_size=args.shard_size,
                             dpi=args.dpi)
    table = TableOptions(image_column=args.image_column, id_column=args.id_column, split=args.split)
    report = index.add(args.sources, metadata=metadata, table=table, strict=args.strict,
                       delete_missing=args.delete_missing, batch_size=args.batch_size,
                       progress=sys.stderr.isatty())
    if is_main_process():
        print(report.summary())
        info = index.info()
        print(f"{args.out}: {info['pages']} pages from {info['documents']} documents, "
              f"{info['bytes_per_page'] / 1024:.1f} KiB per page")
    leave_process_group()
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    from vlzoo_core.index.index import Index

    info = Index.open(args.index).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    pooling = info["pooling"]
    drop = ", prompt tokens dropped" if pooling["drop_prompt_tokens"] else ""
    lines = [
        ("model", info["model"]),
        ("pages", f"{info['pages']} from {info['documents']} documents"),
        ("vectors", f"{info['vectors']} ({info['vectors_per_page']:.1f} per page), dim {info['dim']}, {info['dtype']}"),
        ("pooling", f"factor {pooling['factor']}{drop}"),
        ("storage", f"{info['bytes'] / 2**20:.2f} MiB in {info['shards']} shards, "
                    f"{info['bytes_per_page'] / 1024:.1f} KiB per page"),
        ("backend", info["backend"]),
        ("deleted", f"{info['deleted_pages_awaiting_compaction']} pages awaiting `vlzoo index compact`"),
        ("format", f"version {info['format_version']}, commit {info['generation']}"),
    ]
    skipped = info["last_add_skipped"]
    if skipped.get("total"):
        lines.append(("skipped", f"{skipped['total']} inputs in the last run: {skipped['by_reason']}"))
    print(info["path"])
    for name, value in lines:
        print(f"  {name + ':':<9} {value}")
    return 0


def cmd_index_rm(args: argparse.Namespace) -> int:
    from vlzoo_core.index.index import Index

    removed = Index.open(args.index).remove(args.ids)
    print(f"removed {removed} pages from {args.index} (run `vlzoo index compact {args.index}` to reclaim space)")
    return 0


def cmd_index_compact(args: argparse.Namespace) -> int:
    from vlzoo_core.index.index import Index

    freed = Index.open(args.index).compact()
    print(f"compacted {args.index}: {freed / 2**20:.2f} MiB freed")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from vlzoo_core.index.index import Index
    from vlzoo_core.index.models import load_model

    model = None
    if args.model is not None:
        model, _ = load_model(args.model, weights=args.weights, adapter=args.adapter)
    index = Index.open(args.index, model=model)
    if len(index) == 0:
        print(f"note: {args.index} has no pages; nothing to return", file=sys.stderr)
    results = index.search(args.queries, args.k, approximate=args.approximate, candidates=args.candidates)
    if args.json:
        print(json.dumps([{"query": q, "results": [r.as_dict() for r in rows]}
                          for q, rows in zip(args.queries, results, strict=True)], indent=2))
        return 0
    for query, rows in zip(args.queries, results, strict=True):
        print(f"query: {query}")
        for r in rows:
            print(f"  {r.rank:>3}  {r.score:9.4f}  {r.source}  page {r.page}")
    return 0


def add_index_parsers(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "index", help="embed PDFs, images or tables into an index folder (also: index info|rm|compact)",
        description="Embed the pages of SOURCE... (PDF files, images, folders walked recursively, parquet/arrow "
        "tables or hub:owner/name datasets) into the index folder --out. Re-running adds only new or changed "
        "pages; a killed run resumes where it stopped. Other actions: `vlzoo index info INDEX`, "
        "`vlzoo index rm INDEX ID...`, `vlzoo index compact INDEX`. Several processes: "
        "`accelerate launch -m vlzoo index ...`.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="PDF, image, folder, .parquet/.arrow or hub:ID")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder (created if new)")
    p.add_argument("--model", help="registered model name or a `vlzoo train` output folder (default: the index's)")
    p.add_argument("--weights", help="checkpoint folder or Hub id for a registered model ('pretrained': its own)")
    p.add_argument("--adapter", help="PEFT adapter folder or Hub id, merged into --weights")
    p.add_argument("--pool-factor", type=int, default=1, metavar="K",
                   help="keep about 1/K of each page's vectors by hierarchical pooling (default 1: all)")
    p.add_argument("--drop-prompt-tokens", action="store_true", help="store only the image tokens' vectors")
    p.add_argument("--vector-dtype", choices=("float16", "float32", "int8"), default="float16",
                   help="stored vector type (int8: with one scale per vector; default float16)")
    p.add_argument("--dpi", type=int, default=150, help="PDF rendering resolution (default 150)")
    p.add_argument("--batch-size", type=int, default=4, help="pages per forward pass (default 4)")
    p.add_argument("--shard-size", type=int, default=256, help="pages per shard file (default 256)")
    p.add_argument("--backend", default="local", help="index backend: local (default) or qdrant")
    p.add_argument("--qdrant-url", help="Qdrant server or cluster URL (default: in-process, inside the index)")
    p.add_argument("--collection", help="Qdrant collection name (default vlzoo)")
    p.add_argument("--approximate", choices=("muvera", "tokens"),
                   help="also build a candidate stage for `vlzoo search --approximate` (local backend)")
    p.add_argument("--metadata", metavar="FILE.json", help="JSON object: source -> {field: value} per source")
    p.add_argument("--image-column", help="table sources: the image column (default: detected)")
    p.add_argument("--id-column", help="table sources: the page id column (default: detected, else the row)")
    p.add_argument("--split", default="train", help="hub: sources: the split (default train)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input instead of skipping it")
    p.add_argument("--delete-missing", action="store_true", help="remove indexed pages the sources no longer have")
    p.set_defaults(func=cmd_index)

    p = commands.add_parser("index-info", prog="vlzoo index info",
                            description="Show an index's model, pages, documents, storage and pooling.")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_index_info)

    p = commands.add_parser("index-rm", prog="vlzoo index rm",
                            description="Remove pages by id (as `vlzoo search --json` shows them).")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_index_rm)

    p = commands.add_parser("index-compact", prog="vlzoo index compact",
                            description="Rewrite shards that hold removed pages, reclaiming their space.")
    p.add_argument("index", metavar="INDEX")
    p.set_defaults(func=cmd_index_compact)

    p = commands.add_parser("search", help="search an index with text queries",
                            description="Rank the pages of INDEX for each QUERY by MaxSim (exact by default).")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("queries", nargs="+", metavar="QUERY")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--model", help="the model that built the index (default: the one its manifest names)")
    p.add_argument("--weights", help="checkpoint for --model")
    p.add_argument("--adapter", help="adapter for --model")
    p.add_argument("--approximate", action="store_true",
                   help="candidate stage, then exact rerank (local backend built with --approximate, or qdrant)")
    p.add_argument("--candidates", type=int, help="candidates to rerank per query (default max(10k, 100))")
    p.set_defaults(func=cmd_search)


def route_index_actions(argv: list[str]) -> list[str]:
    """`index info|rm|compact ...` -> the hidden `index-info|...` commands (a SOURCE can't be named so)."""
    for position, word in enumerate(argv):
        if word == "index" and position + 1 < len(argv) and argv[position + 1] in INDEX_ACTIONS:
            return [*argv[:position], f"index-{argv[position + 1]}", *argv[position + 2:]]
        if not word.startswith("-"):
            break
    return argv
