"""`vlzoo eval` twice on the same model and data: the second run finds the corpus cached and encodes only the
queries. Reports both wall times, their ratio (goal: the second < 20% of the first) and the pages encoded.

    python benchmarks/eval_cache.py [--pages 256] [--size mid|tiny] [--repeats 3]

The data is a ViDoRe v1 table of synthetic pages with one query each (written here). `--size mid` is the
colllava_tiny widened to 729 image tokens of benchmarks/index_throughput.py; `tiny` is colllava_tiny itself,
whose pages cost about as much to encode as its queries. Each repeat uses a fresh cache folder; the first
and second runs of a repeat are timed back to back. Run it alone: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from benchmarks._common import table  # noqa: E402
from benchmarks.index_throughput import SIZES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=256)
    parser.add_argument("--size", choices=("tiny", "mid"), default="mid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import torch
    from held_out_pages import write_table

    import vlzoo
    from vlzoo_core.data.synthetic import synthetic_rows
    from vlzoo_core.evaluation.runner import evaluate
    from vlzoo_core.training.run_config import SyntheticSource

    print(f"load average before: {os.getloadavg()}  torch threads: {torch.get_num_threads()}")
    work = Path(tempfile.mkdtemp(prefix="vlzoo-eval-cache-"))
    rows = list(synthetic_rows(SyntheticSource(pages=args.pages, seed=1, split="train")))
    write_table(work / "pages.parquet", rows)
    torch.manual_seed(0)
    recipe, overrides = SIZES[args.size]
    model = vlzoo.build(recipe, **overrides).eval()

    runs = []
    for repeat in range(args.repeats):
        times, encoded = [], []
        for _ in range(2):
            start = time.perf_counter()
            result = evaluate(model, work / "pages.parquet", cache_dir=work / f"cache{repeat}",
                              batch_size=args.batch_size)
            times.append(time.perf_counter() - start)
            encoded.append(result["vlzoo"]["encoded_pages"])
        runs.append({"repeat": repeat + 1, "first_s": times[0], "second_s": times[1], "ratio": times[1] / times[0],
                     "encoded_first": encoded[0], "encoded_second": encoded[1],
                     "queries": result["scores"]["test"][0]["queries"]})
    print(f"\n{args.pages} pages, size {args.size}, batch {args.batch_size}")
    print(table(runs, [("repeat", "repeat", "d"), ("first_s", "first s", ".2f"), ("second_s", "second s", ".2f"),
                       ("ratio", "second / first", ".3f"), ("encoded_first", "pages encoded 1st", "d"),
                       ("encoded_second", "pages encoded 2nd", "d"), ("queries", "queries", "d")]))
    print(f"median second / first: {statistics.median(r['ratio'] for r in runs):.3f} (goal < 0.2)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
