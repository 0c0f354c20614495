"""Index search at corpus scale: bytes per page, build time, exact and approximate latency, recall, peak RSS.

    python benchmarks/search.py [--pages 1000 10000 50000] [--tokens 256] [--threads 2]

For each size, one process builds an index folder of synthetic page vectors (the structured corpus of
benchmarks/candidates.py: topics, documents, background tokens, queries made from a target page), stored as
float16 shards of 256 pages with the default candidate stage (token-level IVF-PQ); a fresh process then
opens it and measures, through `Index.search` on query embeddings:
  exact      one query at a time (p50/p95 over --exact-queries) and a batch of queries; GFLOP/s counts
             2 * Lq * pages * tokens * dim per query. `vs mm` is the median, over those queries, of
             (plain matmul time / exact search time), the plain matmul being a float32 torch.mm of the same
             shape ((Lq, D) @ (D, tokens) over the corpus, in chunks of 512 pages, from memory) timed right
             after each query, so both see the same machine state. `vs best mm` does the same against the
             faster of that product and its transpose ((tokens, D) @ (D, Lq), the orientation exact search
             uses), also timed after each query: the stricter bound. `batch vs mm` compares one query of
             the batch with the median plain matmul
  approx     candidates (--candidates per query) + exact rerank; recall@10 against exact; speedup =
             exact p50 / approximate p50
  peak RSS   the search process's high-water mark above its RSS after opening the index, for exact search
             (shards are memory-mapped and released after each one) and, separately, approximate search
             (which also loads the candidate stage)
Run it alone: the load average is printed with the numbers.
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

from benchmarks._common import MemoryProbe, emit, run_worker, table  # noqa: E402

SHARD_PAGES = 256


def build(root: Path, pages: int, tokens: int, dim: int, queries: int) -> dict:
    import torch
    from safetensors.torch import save_file

    from benchmarks.candidates import make_corpus
    from vlzoo_core.index.index import Index
    from vlzoo_core.index.manifest import MANIFEST_FILE, BackendRef, Manifest, ModelIdentity
    from vlzoo_core.index.store import CommitRecord, PageRecord, atomic_write_text, write_commit, write_shard

    corpus, query_vectors, targets, _ = make_corpus(pages, tokens, dim, queries, 32, seed=0)
    root.mkdir(parents=True)
    identity = ModelIdentity(recipe="synthetic", fingerprint="0" * 64, processor="0" * 64)
    manifest = Manifest(model=identity, dim=dim, backend=BackendRef(name="local", config={"approximate": {}}))
    atomic_write_text(root / MANIFEST_FILE, manifest.model_dump_json(indent=2))
    start = time.perf_counter()
    entries = []
    for s in range(0, pages, SHARD_PAGES):
        block = corpus[s : s + SHARD_PAGES]
        records = [PageRecord(f"doc#{i}", "doc", i + 1, f"{i:064x}", tokens, {}) for i in range(s, s + len(block))]
        entries.append(write_shard(root, f"shard{s // SHARD_PAGES:05d}", records, list(block.float()), "float16"))
    write_commit(root, CommitRecord(generation=1, shards=entries))
    shards_s = time.perf_counter() - start
    del corpus
    index = Index.open(root)
    start = time.perf_counter()
    index.backend.sync(index.snapshot())
    candidates_s = time.perf_counter() - start
    save_file({"queries": query_vectors.contiguous(), "targets": targets}, str(root / "bench_queries.safetensors"))
    vector_bytes = sum(e.bytes for e in entries)
    candidate_bytes = (root / "candidates.safetensors").stat().st_size
    return {"pages": pages, "shards_s": shards_s, "candidates_s": candidates_s,
            "bytes_per_page": vector_bytes / pages, "candidate_bytes_per_page": candidate_bytes / pages}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def search(root: Path, exact_queries: int, batch: int, candidates: int) -> dict:
    import torch
    from safetensors.torch import load_file

    from vlzoo_core.index.index import Index

    saved = load_file(str(root / "bench_queries.safetensors"))
    queries = saved["queries"]
    index = Index.open(root)
    snapshot = index.snapshot()
    n_pages = len(snapshot)
    tokens = int(snapshot.shards[0].offsets[1])
    dim, lq = queries.shape[-1], queries.shape[1]
    index.search([queries[0]], k=10)  # warm-up

    flops = 2.0 * lq * n_pages * tokens * dim
    # the plain matmul of the same shape: (Lq, D) @ (D, tokens) over the corpus, from float32 in memory, in
    # chunks of 512 pages; timed right after each exact query, so both see the same machine state
    chunk = torch.randn(512 * tokens, dim)
    out, out_t = torch.empty(lq, chunk.shape[0]), torch.empty(chunk.shape[0], lq)
    chunks = -(-n_pages // 512)

    def plain_matmul(q32: torch.Tensor, transposed: bool = False) -> float:
        start = time.perf_counter()
        for _ in range(chunks):
            if transposed:
                torch.mm(chunk, q32.T, out=out_t)
            else:
                torch.mm(q32, chunk.T, out=out)
        return (time.perf_counter() - start) * n_pages / (chunks * 512)

    plain_matmul(queries[0].float().contiguous())
    plain_matmul(queries[0].float().contiguous(), transposed=True)
    probe = MemoryProbe("cpu")
    probe.start()
    single, exact_top, matmul, ratios, best_ratios = [], [], [], [], []
    for q in queries[:exact_queries]:
        start = time.perf_counter()
        exact_top.append([h.id for h in index.search([q], k=10)[0]])
        single.append(time.perf_counter() - start)
        matmul.append(plain_matmul(q.float().contiguous()))
        best = min(matmul[-1], plain_matmul(q.float().contiguous(), transposed=True))
        ratios.append(matmul[-1] / single[-1])
        best_ratios.append(best / single[-1])
    start = time.perf_counter()
    batched = index.search(list(queries[:batch]), k=10)
    batch_s = time.perf_counter() - start
    exact_memory = probe.stop()
    matmul_s = statistics.median(matmul)

    rest = [h.id for row in batched for h in row]
    assert rest[:10] == exact_top[0]
    approx_probe = MemoryProbe("cpu")
    approx_probe.start()
    index.search([queries[0]], k=10, approximate=True, candidates=candidates)  # loads the candidate stage
    approx, recall = [], []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        found = [h.id for h in index.search([q], k=10, approximate=True, candidates=candidates)[0]]
        approx.append(time.perf_counter() - start)
        truth = exact_top[i] if i < len(exact_top) else [h.id for h in index.search([q], k=10)[0]]
        recall.append(len(set(found) & set(truth)) / 10)
    approx_memory = approx_probe.stop()
    p50 = statistics.median(single)
    return {
        "pages": n_pages, "exact_p50_ms": 1e3 * p50, "exact_p95_ms": 1e3 * percentile(single, 0.95),
        "exact_batch_ms_per_query": 1e3 * batch_s / batch, "gflops": flops / p50 / 1e9,
        "matmul_gflops": flops / matmul_s / 1e9, "vs_matmul": statistics.median(ratios),
        "vs_best_matmul": statistics.median(best_ratios),
        "vs_matmul_batch": matmul_s / (batch_s / batch),
        "approx_p50_ms": 1e3 * statistics.median(approx), "approx_p95_ms": 1e3 * percentile(approx, 0.95),
        "recall10": statistics.mean(recall), "speedup": p50 / statistics.median(approx),
        "exact_rss_mib": exact_memory["delta_mib"], "approx_rss_mib": approx_memory["delta_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=50, help="queries for approximate recall")
    parser.add_argument("--exact-queries", type=int, default=10, help="single exact queries timed")
    parser.add_argument("--batch", type=int, default=8, help="queries in the batched exact search")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", help="where the index folders go (default: a temp folder)")
    parser.add_argument("--_worker", nargs=2, metavar=("ROLE", "ROOT"), help=argparse.SUPPRESS)
    parser.add_argument("--_size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker:
        import torch

        torch.set_num_threads(args.threads)
        import faiss

        faiss.omp_set_num_threads(args.threads)
        role, root = args._worker
        if role == "build":
            emit(build(Path(root), args._size, args.tokens, args.dim, args.queries))
        else:
            emit(search(Path(root), args.exact_queries, args.batch, args.candidates))
        return

    print(f"load average before: {os.getloadavg()}  threads: {args.threads}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vlzoo-search-bench-"))
    script = Path(__file__).resolve()
    common = ["--tokens", str(args.tokens), "--dim", str(args.dim), "--queries", str(args.queries),
              "--exact-queries", str(args.exact_queries), "--batch", str(args.batch),
              "--candidates", str(args.candidates), "--threads", str(args.threads)]
    rows = []
    for pages in args.pages:
        root = work / f"index-{pages}"
        built = run_worker(script, [*common, "--_worker", "build", str(root), "--_size", str(pages)])
        measured = run_worker(script, [*common, "--_worker", "search", str(root)])
        rows.append({**built, **measured})
        print(f"  {pages} pages done, load average {os.getloadavg()}", flush=True)
    print(f"\n{args.tokens} tokens/page, dim {args.dim}, float16; {args.candidates} candidates; 32-token queries")
    print(table(rows, [
        ("pages", "pages", "d"), ("bytes_per_page", "B/page", ".0f"), ("shards_s", "write s", ".1f"),
        ("candidates_s", "cand build s", ".1f"), ("candidate_bytes_per_page", "cand B/page", ".0f"),
        ("exact_p50_ms", "exact p50 ms", ".1f"), ("exact_p95_ms", "exact p95 ms", ".1f"),
        ("exact_batch_ms_per_query", "batch ms/q", ".1f"), ("gflops", "GFLOP/s", ".1f"),
        ("matmul_gflops", "mm GFLOP/s", ".1f"), ("vs_matmul", "vs mm", ".2f"),
        ("vs_best_matmul", "vs best mm", ".2f"), ("vs_matmul_batch", "batch vs mm", ".2f"),
        ("approx_p50_ms", "approx p50 ms", ".1f"), ("approx_p95_ms", "approx p95 ms", ".1f"),
        ("recall10", "recall@10", ".3f"), ("speedup", "speedup", ".1f"),
        ("exact_rss_mib", "exact RSS MiB", ".0f"), ("approx_rss_mib", "approx RSS MiB", ".0f"),
    ]))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
