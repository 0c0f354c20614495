"""Throughput of the MaxSim kernel against the einsum it replaced and a plain matmul of the same shape.

For each query count, random unit queries (nq, Lq, D) are scored against nd documents (nd, Ld, D) whose
lengths are drawn in [(1 - padding) * Ld, Ld] (the rest zero padding) by:
  maxsim  vlzoo_core.model.scoring.maxsim (one GEMM per chunk, padding replaced by duplicate rows)
  einsum  the previous implementation, copied below: einsum "qld,nmd->qnlm", masked_fill, amax
  mm      torch.mm of (nq*Lq, D) @ (D, nd*Ld) in one call, the bound the kernel is measured against
  mm^T    the same product transposed, (nd*Ld, D) @ (D, nq*Lq), the orientation the kernel uses (MKL
          splits the many document rows across threads evenly, so for few queries it is the faster one)
Each is timed after one warm-up, repeats interleaved (so a load change hits all three alike), and the
median is reported as GFLOP/s = 2*nq*Lq*nd*Ld*D / t, with its ratio to mm (goal >= 0.8), next to the
process CPU time (all threads) and its ratio. The machine's load (`uptime`) is printed first: wall times
are only comparable on an otherwise idle machine (on a busy one, try --threads 1 and the CPU columns).
A last line times vlzoo_core.index.pooling.pool_tokens on a batch of pages (default 32 x 729 x 128,
pool factor 3).

Example:
  python benchmarks/maxsim_kernel.py
  python benchmarks/maxsim_kernel.py --nq 1 8 32 --ld 1030 --document-chunk 8 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, environment, table  # noqa: E402

sys.path.insert(0, str(REPO))
from vlzoo_core.index.pooling import pool_tokens  # noqa: E402
from vlzoo_core.model.scoring import maxsim, pad_embeddings  # noqa: E402


def einsum_maxsim(queries: torch.Tensor, documents: torch.Tensor, *, query_chunk: int = 64,
                  document_chunk: int = 256, device: torch.device | str | None = None) -> torch.Tensor:
    """The previous vlzoo_core.model.scoring.maxsim (the baseline), its loop verbatim; the dim check left out."""
    q, q_mask = pad_embeddings(queries)
    d, d_mask = pad_embeddings(documents)
    device = torch.device(device) if device is not None else q.device
    scores = torch.empty(q.shape[0], d.shape[0], dtype=torch.float32)
    for qs in range(0, q.shape[0], query_chunk):
        q_block = q[qs : qs + query_chunk].to(device, torch.float32)
        q_block_mask = q_mask[qs : qs + query_chunk].to(device)
        for ds in range(0, d.shape[0], document_chunk):
            d_block = d[ds : ds + document_chunk].to(device, torch.float32)
            d_block_mask = d_mask[ds : ds + document_chunk].to(device)
            sims = torch.einsum("qld,nmd->qnlm", q_block, d_block)
            sims = sims.masked_fill(~d_block_mask[None, :, None, :], float("-inf"))
            best = sims.amax(dim=-1).nan_to_num(neginf=0.0)
            best = best * q_block_mask[:, None, :]
            scores[qs : qs + query_chunk, ds : ds + document_chunk] = best.sum(-1).cpu()
    return scores


def unit_vectors(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(*shape, generator=generator)
    return x / x.norm(dim=-1, keepdim=True)


def padded(vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    keep = torch.arange(vectors.shape[1])[None, :] < lengths[:, None]
    return vectors * keep[..., None]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(functions: dict[str, Callable[[], object]], repeats: int,
                        device: torch.device) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds of each function; one warm-up each, then `repeats` rounds of one call each."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in functions}
    for fn in functions.values():
        fn()
    for _ in range(repeats):
        for name, fn in functions.items():
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(t[0] for t in values), statistics.median(t[1] for t in values))
            for name, values in times.items()}


def load_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nq", type=int, nargs="+", default=[1, 8, 32], help="query counts (default 1 8 32)")
    parser.add_argument("--lq", type=int, default=32, help="tokens per query (default 32)")
    parser.add_argument("--nd", type=int, default=1024, help="documents (default 1024)")
    parser.add_argument("--ld", type=int, default=256, help="padded tokens per document (default 256)")
    parser.add_argument("--dim", type=int, default=128, help="embedding dim (default 128)")
    parser.add_argument("--padding", type=float, default=0.25,
                        help="documents have up to this fraction of padding rows (default 0.25)")
    parser.add_argument("--query-chunk", type=int, default=None, help="maxsim's query_chunk (default: its own)")
    parser.add_argument("--document-chunk", type=int, default=None,
                        help="maxsim's document_chunk (default: its own)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (default 5)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--pool-pages", type=int, default=32, help="pages in the pooling batch (default 32)")
    parser.add_argument("--pool-tokens", type=int, default=729, help="tokens per pooled page (default 729)")
    parser.add_argument("--pool-factor", type=int, default=3, help="pooling factor (default 3)")
    parser.add_argument("--pool-repeats", type=int, default=3, help="timed pooling repeats (default 3)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print("load at start:", load_line())
    print("environment:", environment())
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    chunking = {key: value for key, value in (("query_chunk", args.query_chunk),
                                               ("document_chunk", args.document_chunk)) if value is not None}
    shortest = max(1, round((1 - args.padding) * args.ld))
    lengths = torch.randint(shortest, args.ld + 1, (args.nd,), generator=generator)
    documents = padded(unit_vectors((args.nd, args.ld, args.dim), generator), lengths).to(device)
    flat_documents = documents.reshape(-1, args.dim)
    rows = []
    for nq in args.nq:
        queries = unit_vectors((nq, args.lq, args.dim), generator).to(device)
        flat_queries = queries.reshape(-1, args.dim)
        medians = interleaved_medians({
            "mm": lambda: torch.mm(flat_queries, flat_documents.T),
            "mm^T": lambda: torch.mm(flat_documents, flat_queries.T),
            "einsum": lambda: einsum_maxsim(queries, documents, device=device),
            "maxsim": lambda: maxsim(queries, documents, device=device, **chunking),
        }, args.repeats, device)
        diff = (maxsim(queries, documents, device=device, **chunking)
                - einsum_maxsim(queries, documents, device=device)).abs().max().item()
        gflop = 2 * nq * args.lq * args.nd * args.ld * args.dim / 1e9
        mm_wall, mm_cpu = medians["mm"]
        for name, (wall, cpu) in medians.items():
            rows.append({"nq": nq, "method": name, "ms": 1e3 * wall, "cpu_ms": 1e3 * cpu, "gflops": gflop / wall,
                         "ratio": mm_wall / wall, "cpu_ratio": mm_cpu / cpu,
                         "diff": diff if name == "maxsim" else None})
    print(f"\nMaxSim, Lq={args.lq} nd={args.nd} Ld={args.ld} D={args.dim}, document lengths in "
          f"[{shortest}, {args.ld}], chunks {chunking or 'default'}, median of {args.repeats}, {device}, "
          f"{torch.get_num_threads()} threads")
    print(table(rows, [("nq", "nq", ""), ("method", "method", ""), ("ms", "wall ms", ".1f"),
                       ("gflops", "GFLOP/s", ".1f"), ("ratio", "vs mm", ".2f"), ("cpu_ms", "cpu ms", ".1f"),
                       ("cpu_ratio", "vs mm (cpu)", ".2f"), ("diff", "max |maxsim - einsum|", ".1e")]))

    pages = unit_vectors((args.pool_pages, args.pool_tokens, args.dim), generator).to(device)
    mask = torch.ones(args.pool_pages, args.pool_tokens, dtype=torch.bool, device=device)
    seconds, _ = interleaved_medians({"pool": lambda: pool_tokens(pages, mask, args.pool_factor)},
                                     args.pool_repeats, device)["pool"]
    print(f"\npool_tokens: {args.pool_pages} pages x {args.pool_tokens} tokens x {args.dim} dims, pool factor "
          f"{args.pool_factor}: {1e3 * seconds / args.pool_pages:.1f} ms per page "
          f"({1e3 * seconds:.0f} ms per batch, median of {args.pool_repeats})")
    print("load at end:", load_line())


if __name__ == "__main__":
    main()
