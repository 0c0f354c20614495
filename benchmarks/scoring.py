"""MaxSim scoring throughput: vlzoo's `maxsim` against a plain matmul of the same shape and against
colpali-engine's `score_multi_vector`, on the same inputs, in the same run.

    python benchmarks/scoring.py [--queries 256] [--query-tokens 20] [--pages 2000] [--page-tokens 725]
                                 [--repeats 3] [--colpali-python /work/venv-colpali/bin/python]

The inputs are random unit vectors (dim 128): queries of exactly --query-tokens tokens, pages of 90-100% of
--page-tokens tokens (the rest zero padding, as embeddings come). Each measurement runs in its own fresh
process (`--_worker`), in interleaved rounds (vlzoo, matmul, colpali-engine, vlzoo, ...), and the median is
reported as GFLOP/s = 2 * queries * query tokens * page tokens (padded) * dim / seconds.

  maxsim     vlzoo_core.model.scoring.maxsim (its default chunks)
  matmul     the plain float32 matmul that gives the same similarities, without any max or sum: the bound
             a MaxSim kernel is measured against. It runs in blocks of a query chunk x a page chunk, in
             the block shape and orientation ((query tokens, dim) @ (dim, page tokens) or its transpose)
             that is fastest on a tenth of the corpus, among query chunks of 32, 128 and all queries and
             page chunks of 4, 16 and 64 pages
  colpali    colpali-engine's BaseVisualRetrieverProcessor.score_multi_vector (batch size 128, CPU), run
             by the Python of a venv that has colpali-engine (made as tools/make_colqwen_fixtures.py says);
             skipped when there is none. colpali-engine is never a vlzoo dependency.
Run it alone: the load average is printed with the numbers.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import emit, run_worker, table  # noqa: E402

DIM = 128
DEFAULT_COLPALI_PYTHON = "/work/venv-colpali/bin/python"


def make_inputs(path: Path, queries: int, query_tokens: int, pages: int, page_tokens: int) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(queries, query_tokens, DIM, generator=generator), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(pages, page_tokens, DIM, generator=generator), dim=-1)
    lengths = torch.randint(int(0.9 * page_tokens), page_tokens + 1, (pages,), generator=generator)
    d[torch.arange(page_tokens)[None, :] >= lengths[:, None]] = 0
    save_file({"queries": q.contiguous(), "pages": d.contiguous(), "lengths": lengths}, str(path))


def measure(method: str, path: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    data = load_file(str(path))
    queries, pages, lengths = data["queries"], data["pages"], data["lengths"]
    if method == "maxsim":
        from vlzoo_core.model.scoring import maxsim

        start = time.perf_counter()
        scores = maxsim(queries, pages)
        seconds = time.perf_counter() - start
    elif method == "matmul":
        def plain(corpus: torch.Tensor, query_chunk: int, page_chunk: int, transposed: bool) -> float:
            start = time.perf_counter()
            for qs in range(0, queries.shape[0], query_chunk):
                flat_q = queries[qs : qs + query_chunk].reshape(-1, DIM)
                for ps in range(0, corpus.shape[0], page_chunk):
                    block = corpus[ps : ps + page_chunk].reshape(-1, DIM)
                    torch.mm(block, flat_q.T) if transposed else torch.mm(flat_q, block.T)
            return time.perf_counter() - start

        sample = pages[: max(1, pages.shape[0] // 10)]
        shapes = [(q, p, t) for q in (32, 128, queries.shape[0]) for p in (4, 16, 64) for t in (False, True)]
        best = min(shapes, key=lambda shape: plain(sample, *shape))
        seconds = plain(pages, *best)
        scores = None
    else:  # colpali-engine, in its own venv
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
        from make_colqwen_fixtures import make_torchvision_importable

        make_torchvision_importable()
        from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

        page_list = [page[: int(n)] for page, n in zip(pages, lengths, strict=True)]
        start = time.perf_counter()
        scores = BaseVisualRetrieverProcessor.score_multi_vector(list(queries), page_list, batch_size=128,
                                                                 device="cpu")
        seconds = time.perf_counter() - start
    result = {"method": method, "seconds": seconds, "threads": torch.get_num_threads()}
    if method == "matmul":
        result["shape"] = f"{best[0]} queries x {best[1]} pages{', transposed' if best[2] else ''}"
    if scores is not None:
        result["checksum"] = float(scores.double().sum())
        result["first"] = [float(v) for v in scores[0, :4]]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--query-tokens", type=int, default=20)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--page-tokens", type=int, default=725)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--colpali-python", default=DEFAULT_COLPALI_PYTHON)
    parser.add_argument("--_worker", nargs=2, metavar=("METHOD", "INPUTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        emit(measure(args._worker[0], Path(args._worker[1])))
        return

    print(f"load average before: {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="vlzoo-scoring-bench-"))
    inputs = work / "inputs.safetensors"
    make_inputs(inputs, args.queries, args.query_tokens, args.pages, args.page_tokens)
    script = Path(__file__).resolve()
    methods = ["maxsim", "matmul"]
    if Path(args.colpali_python).exists():
        methods.append("colpali")
    else:
        print(f"no colpali-engine venv at {args.colpali_python}: colpali-engine not measured")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        for method in methods:
            if method == "colpali":
                done = subprocess.run([args.colpali_python, str(script), "--_worker", method, str(inputs)],
                                      capture_output=True, text=True, check=True)
                line = next(li for li in done.stdout.splitlines() if li.startswith("@@BENCH_RESULT@@ "))
                import json

                runs[method].append(json.loads(line.split(" ", 1)[1]))
            else:
                runs[method].append(run_worker(script, ["--_worker", method, str(inputs)]))
    gflop = 2 * args.queries * args.query_tokens * args.pages * args.page_tokens * DIM / 1e9
    medians = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    rows = [{"method": m, "seconds": medians[m], "gflops": gflop / medians[m],
             "vs_matmul": medians["matmul"] / medians[m],
             "vs_colpali": medians["colpali"] / medians[m] if "colpali" in medians else float("nan"),
             "runs": " ".join(f"{r['seconds']:.2f}" for r in runs[m])} for m in methods]
    print(f"\n{args.queries} queries x {args.query_tokens} tokens, {args.pages} pages x <= {args.page_tokens} tokens, "
          f"dim {DIM}, {gflop:.0f} GFLOP, median of {args.repeats}, threads {runs['maxsim'][0]['threads']}")
    print(table(rows, [("method", "method", ""), ("seconds", "median s", ".2f"), ("gflops", "GFLOP/s", ".1f"),
                       ("vs_matmul", "vs matmul", ".2f"), ("vs_colpali", "vs colpali-engine", ".2f"),
                       ("runs", "each run (s)", "")]))
    print(f"plain matmul blocks: {runs['matmul'][0]['shape']}")
    if "colpali" in runs:
        ours, theirs = runs["maxsim"][0], runs["colpali"][0]
        print(f"same scores: checksum {ours['checksum']:.6f} vs {theirs['checksum']:.6f}, "
              f"first row {ours['first']} vs {theirs['first']}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
