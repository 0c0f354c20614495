"""Indexing throughput against plain `Retriever.embed_images` on the same pages, in the same run, and bytes per page.

    python benchmarks/index_throughput.py [--pages 256] [--size mid] [--batch-size 8] [--repeats 3]

The baseline is what a user would write without vlzoo's index: open each page image and call
`model.embed_images` in batches. `vlzoo index` does that plus hashing, pooling, quantising and writing
shards; the overhead column is (index time / baseline time - 1), goal <= 10%. Both read the same PNG files
from disk, and each measurement is the median of `--repeats` interleaved runs.

`--size mid` is colllava_tiny widened to a realistic token count (384 px SigLIP/14: 729 image tokens per
page, 256-wide 4-layer encoder and LM), random init: a model far smaller than any real retriever, so
pooling and storage weigh the most against it. `--size full` is colllava_interleave at full size (SigLIP
so400m + Qwen2 0.5B, random init, the bundled tiny tokenizer), the zoo's real model; `--size tiny` is
colllava_tiny (16 image tokens). Run it alone on an idle machine: the load average is printed next to the
numbers.
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

from benchmarks._common import TINY_TOKENIZER, table  # noqa: E402

SIZES = {  # recipe and overrides
    "tiny": ("colllava_tiny", {}),
    "mid": ("colllava_tiny", {
        "encoder": {"config": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                               "num_attention_heads": 4, "image_size": 384, "patch_size": 14}},
        "backbone": {"config": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048}},
    }),
    "full": ("colllava_interleave", {"processor": {"config": TINY_TOKENIZER}}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=256)
    parser.add_argument("--size", choices=tuple(SIZES), default="mid")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from PIL import Image

    import vlzoo
    from tests.index_corpus import synthetic_pages
    from vlzoo_core.index.index import Index

    print(f"load average before: {os.getloadavg()}  torch threads: {torch.get_num_threads()}")
    torch.manual_seed(0)
    recipe, overrides = SIZES[args.size]
    model = vlzoo.build(recipe, **overrides).eval()
    work = Path(tempfile.mkdtemp(prefix="vlzoo-index-bench-"))
    folder = work / "pages"
    folder.mkdir()
    for i, page in enumerate(synthetic_pages(args.pages, 0)):
        page.resize((384, 384)).save(folder / f"p{i:05d}.png")
    files = sorted(folder.iterdir())

    def baseline() -> float:
        start = time.perf_counter()
        for s in range(0, len(files), args.batch_size):
            images = []
            for path in files[s : s + args.batch_size]:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            model.embed_images(images, batch_size=args.batch_size)
        return time.perf_counter() - start

    def index(tag: str, pool_factor: int, dtype: str) -> tuple[float, float]:
        root = work / f"idx-{tag}-{time.monotonic_ns()}"
        start = time.perf_counter()
        built = Index.create(root, model, pool_factor=pool_factor, dtype=dtype)
        built.add([folder], batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        return seconds, built.info()["bytes_per_page"]

    configs = [("pf1-fp16", 1, "float16"), ("pf3-fp16", 3, "float16"), ("pf1-int8", 1, "int8"),
               ("pf3-int8", 3, "int8")]
    baseline()  # warm-up: first-call allocations and lazy imports
    times: dict[str, list[float]] = {"baseline": []}
    sizes: dict[str, float] = {}
    for _ in range(args.repeats):
        times["baseline"].append(baseline())
        for tag, factor, dtype in configs:
            seconds, per_page = index(tag, factor, dtype)
            times.setdefault(tag, []).append(seconds)
            sizes[tag] = per_page

    base = statistics.median(times["baseline"])
    rows = [{"what": "embed_images (baseline)", "pages_s": args.pages / base, "overhead": 0.0, "kib": float("nan")}]
    for tag, _, _ in configs:
        t = statistics.median(times[tag])
        rows.append({"what": f"vlzoo index {tag}", "pages_s": args.pages / t, "overhead": 100 * (t / base - 1),
                     "kib": sizes[tag] / 1024})
    print(f"{args.pages} pages, size {args.size}, batch {args.batch_size}, median of {args.repeats}")
    print(table(rows, [("what", "what", ""), ("pages_s", "pages/s", ".3g"), ("overhead", "overhead %", "+.1f"),
                       ("kib", "KiB/page", ".1f")]))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
