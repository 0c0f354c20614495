"""What token pooling and approximate search cost in nDCG: the quick-start model on held-out pages at pool
factors 1, 2, 3 and 4, searched exactly and approximately.

    python benchmarks/eval_pooling.py [--run DIR] [--pages 160] [--candidates 16]

Trains the quick start (`vlzoo train --model colllava_tiny examples/quickstart.yaml`) unless --run names a
trained run, writes the held-out synthetic pages (object pairs the quick start never saw) as a ViDoRe v1
table, and evaluates the run on it with `vlzoo_core.evaluation.runner.evaluate`, float16 storage as an
index keeps it. For each pool factor and search it reports nDCG@5 and recall@1, the stored bytes and
vectors per page, and the search latency per query (median of --repeats timed passes over every query,
the queries embedded once beforehand, so the number is the search alone). Approximate search is the
local backend's token-level candidate stage (faiss IVF-PQ), then exact MaxSim of --candidates pages.
Run it alone: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))

from benchmarks._common import table  # noqa: E402


def train(work: Path) -> Path:
    run = work / "run"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vlzoo", "train", "--model", "colllava_tiny", "--output", str(run),
                    str(REPO / "examples" / "quickstart.yaml")], check=True, cwd=work)
    print(f"trained the quick start in {time.perf_counter() - started:.0f} s")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run (default: train the quick start here)")
    parser.add_argument("--pages", type=int, default=160, help="held-out pages (at most 160)")
    parser.add_argument("--candidates", type=int, default=16, help="pages reranked per query, approximate search")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    from held_out_pages import write_table

    from vlzoo_core.data.synthetic import synthetic_rows
    from vlzoo_core.evaluation.runner import IndexSettings, evaluate
    from vlzoo_core.index.index import Index
    from vlzoo_core.index.models import load_model
    from vlzoo_core.training.run_config import SyntheticSource

    print(f"load average before: {os.getloadavg()}  torch threads: {torch.get_num_threads()}")
    work = Path(tempfile.mkdtemp(prefix="vlzoo-eval-pooling-"))
    run = args.run or train(work)
    rows = list(synthetic_rows(SyntheticSource(pages=args.pages, seed=5, split="eval")))
    write_table(work / "held-out.parquet", rows)
    model, identity = load_model(str(run))
    model.eval()
    queries = [row["query"] for row in rows]
    with torch.no_grad():
        embedded = list(model.embed_queries(queries, batch_size=16))

    results = []
    for factor in args.factors:
        for approximate in (None, "tokens"):
            settings = IndexSettings(pool_factor=factor, vector_dtype="float16", approximate=approximate,
                                     candidates=args.candidates if approximate else None)
            result = evaluate(model, work / "held-out.parquet", identity=identity, settings=settings,
                              cache_dir=work / "cache", batch_size=8)
            entry = result["scores"]["test"][0]
            index = Index.open(result["vlzoo"]["index"], model)
            info = index.info()
            k = min(10, args.candidates) if approximate else 10
            timed = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for vectors in embedded:
                    index.search([vectors], k=k, approximate=approximate is not None, candidates=settings.candidates)
                timed.append((time.perf_counter() - start) / len(embedded))
            results.append({"factor": factor, "search": f"approx ({args.candidates})" if approximate else "exact",
                            "ndcg5": entry["ndcg_at_5"], "recall1": entry["recall_at_1"],
                            "bytes": info["bytes_per_page"], "vectors": info["vectors_per_page"],
                            "ms": 1e3 * statistics.median(timed)})
    print(f"\n{args.pages} held-out pages, {run}; float16 vectors; query latency = search only, median of "
          f"{args.repeats}")
    print(table(results, [("factor", "pool factor", "d"), ("search", "search", ""), ("ndcg5", "nDCG@5", ".4f"),
                          ("recall1", "recall@1", ".4f"), ("bytes", "bytes/page", ".0f"),
                          ("vectors", "vectors/page", ".1f"), ("ms", "ms/query", ".2f")]))
    base = next(r["ndcg5"] for r in results if r["factor"] == 1 and r["search"] == "exact")
    for r in results:
        if r is not results[0]:
            print(f"pool {r['factor']}, {r['search']}: {100 * r['ndcg5'] / base:.1f}% of exact, unpooled nDCG@5")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
