"""Candidate generators for two-stage late-interaction search: recall after exact rerank, latency, memory.

Corpus (synthetic, with structure; iid random unit vectors would make the exact top-10 near-ties that no
approximate method can or should recover): a bank of global topic directions; documents of 1..16 pages
each draw 6 topics and give each a document-specific sub-direction (topic + offset); each page takes 4 of
its document's sub-directions and a quarter of its tokens from 16 corpus-wide "background" directions
(blank margins, boilerplate). A page token is normalise(direction + noise). Each query comes from one
target page: 4 generic (background) tokens and 28 noisy copies of target tokens from 3 of its topics.
So the exact ranking is graded: the target, then its document's pages sharing those topics, then other
pages with the same global topics, then the rest. Vectors are generated and stored in float16.

Measured per method and setting:
  build      adding all pages in shards of 1000 plus the first `candidates` call (the token IVF trains then)
  cand       candidate generation per query, all queries in one call (and one query alone, `cand1`)
  rerank     exact MaxSim of one query against its candidates' stored vectors, then top-10
             (cand and rerank: best of --repeats passes; the machine may be shared)
  recall@10  |final top-10 after exact rerank  &  exact top-10 over the whole corpus| / 10
  speedup    exact full-corpus MaxSim per query / (cand + rerank); exact = chunked GEMM over all queries at
             once, the faster of the full pass and the best of --repeats passes over a tenth of the corpus x 10
  B/page     bytes of the generator's state() per page (what the index saves; faiss holds about as much)

Example (the first takes ~12 min and 7 GiB peak RSS on 2 CPU cores with --threads 1):
  python benchmarks/candidates.py --pages 10000 50000 --threads 1
  python benchmarks/candidates.py --pages 2000 --settings muvera tokens --candidates 50 100
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import faiss
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import environment, peak_rss_bytes, table  # noqa: E402

from vlzoo_core.index.candidates import make_candidate_generator  # noqa: E402
from vlzoo_core.index.configs import CandidateConfig  # noqa: E402

SETTINGS = {
    "muvera": {"method": "muvera"},  # reps 20, k_sim 5, d_proj 16: 10240-dim FDEs (the paper's ColBERT setting)
    "muvera_small": {"method": "muvera", "reps": 10, "k_sim": 4, "d_proj": 16},  # 2560 dims
    "tokens": {"method": "tokens"},  # IVF1024 + 4-bit PQ32 fast-scan, nprobe 16, token_k 64: 24 B/token
    "tokens_wide": {"method": "tokens", "nprobe": 32, "token_k": 128},
    "tokens_flat": {"method": "tokens", "pq_m": None},  # float32 tokens: 4x the corpus in memory
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, nargs="+", default=[10000], help="corpus sizes; default 10000")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per page; default 256")
    parser.add_argument("--dim", type=int, default=128, help="vector size; default 128")
    parser.add_argument("--queries", type=int, default=50, help="queries; default 50")
    parser.add_argument("--query-tokens", type=int, default=32, help="tokens per query; default 32")
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 500, 1000],
                        help="candidate counts; default 100 200 500 1000")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["muvera", "muvera_small", "tokens"],
                        help="generator settings; default muvera muvera_small tokens")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timings of candidates and rerank are the best of this many passes; default 3")
    parser.add_argument("--threads", type=int, default=None, help="torch and faiss threads; default: torch's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    return parser.parse_args(argv)


# ---- data ---------------------------------------------------------------------------------------------------


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def make_corpus(pages: int, tokens: int, dim: int, queries: int, query_tokens: int, seed: int,
                chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pages, tokens, dim) float16 pages, (queries, query_tokens, dim) float32 queries, targets, page -> document."""
    doc_topics, page_topics, query_topics, generic, background = 6, 4, 3, 4, 16
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 17, (pages,), generator=g)
    document = torch.repeat_interleave(torch.arange(pages), sizes)[:pages]
    n_docs = int(document[-1]) + 1
    topics = _unit(torch.randn(max(1, pages // 8), dim, generator=g))  # each topic in ~32 pages
    backgrounds = _unit(torch.randn(background, dim, generator=g))
    picked = torch.randint(0, topics.shape[0], (n_docs, doc_topics), generator=g)
    offsets = _unit(torch.randn(n_docs, doc_topics, dim, generator=g))
    directions = _unit(topics[picked] + 0.6 * offsets)  # (docs, doc_topics, dim)
    choice = torch.rand(pages, doc_topics, generator=g).argsort(1)[:, :page_topics]
    page_directions = directions[document[:, None], choice]  # (pages, page_topics, dim)
    per = (tokens - tokens // 4) // page_topics
    n_bg = tokens - per * page_topics
    page_bg = torch.randint(0, background, (pages, n_bg), generator=g)
    corpus = torch.empty(pages, tokens, dim, dtype=torch.float16)
    for start in range(0, pages, chunk):
        stop = min(pages, start + chunk)
        centre = torch.cat([backgrounds[page_bg[start:stop]], page_directions[start:stop].repeat_interleave(per, 1)], 1)
        corpus[start:stop] = _unit(centre + torch.randn(centre.shape, generator=g) / math.sqrt(dim)).half()
    targets = torch.randperm(pages, generator=g)[:queries]
    built = []
    for target in targets.tolist():
        chosen = torch.randperm(page_topics, generator=g)[:query_topics]
        which = chosen[torch.randint(0, query_topics, (query_tokens - generic,), generator=g)]
        position = n_bg + which * per + torch.randint(0, per, (query_tokens - generic,), generator=g)
        source = torch.cat([backgrounds[torch.randint(0, background, (generic,), generator=g)],
                            corpus[target, position].float()])
        built.append(_unit(source + 0.7 * torch.randn(source.shape, generator=g) / math.sqrt(dim)))
    return corpus, torch.stack(built), targets, document


# ---- exact MaxSim -------------------------------------------------------------------------------------------


def exact_scores(queries: torch.Tensor, corpus: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(nq, pages) MaxSim by chunked GEMM: (nq*Lq, D) @ (D, chunk*Ld) per chunk of pages."""
    nq, lq, dim = queries.shape
    flat = queries.reshape(-1, dim)
    scores = torch.empty(nq, corpus.shape[0])
    for start in range(0, corpus.shape[0], chunk):
        block = corpus[start : start + chunk].float()
        sims = flat @ block.reshape(-1, dim).T
        scores[:, start : start + block.shape[0]] = sims.view(nq, lq, block.shape[0], -1).amax(-1).sum(1)
    return scores


def rerank(query: torch.Tensor, corpus: torch.Tensor, candidates: torch.Tensor, k: int = 10) -> torch.Tensor:
    """The k candidates with the highest exact MaxSim."""
    candidates = candidates[candidates >= 0]
    block = corpus[candidates].float()
    scores = (block.reshape(-1, block.shape[-1]) @ query.T).view(candidates.numel(), -1, query.shape[0])
    scores = scores.amax(1).sum(1)
    return candidates[scores.topk(min(k, candidates.numel())).indices]


def best_of(repeats: int, work) -> float:
    """The shortest wall time of `repeats` runs of `work()`, in seconds."""
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


# ---- one corpus ---------------------------------------------------------------------------------------------


def measure(opts: argparse.Namespace, pages: int) -> tuple[list[dict], dict]:
    started = time.perf_counter()
    corpus, queries, targets, document = make_corpus(pages, opts.tokens, opts.dim, opts.queries,
                                                     opts.query_tokens, opts.seed)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    exact = exact_scores(queries, corpus)
    exact_ms = (time.perf_counter() - started) * 1e3 / len(queries)
    part = max(1, pages // 10)  # best of `repeats` passes over a tenth of the corpus, scaled: the fairer baseline
    exact_ms = min(exact_ms, best_of(opts.repeats, lambda: exact_scores(queries, corpus[:part])) * 1e3
                   * pages / part / len(queries))
    best = exact.topk(11, dim=1)
    exact_top = best.indices[:, :10]
    median = exact.median(1).values
    data = {
        "pages": pages, "generate_s": generated, "exact_ms_per_query": exact_ms,
        "target_is_top1": float((best.indices[:, 0] == targets).float().mean()),
        "score_rank1": float(best.values[:, 0].mean()), "score_rank2": float(best.values[:, 1].mean()),
        "score_rank10": float(best.values[:, 9].mean()), "score_rank11": float(best.values[:, 10].mean()),
        "score_median": float(median.mean()),
        "same_document_in_top10": float((document[exact_top] == document[targets][:, None]).float().sum(1).mean()),
    }
    print(f"[{pages} pages] generated in {generated:.1f}s; exact MaxSim {exact_ms:.0f} ms/query; "
          f"mean exact score rank1 {data['score_rank1']:.2f}, rank2 {data['score_rank2']:.2f}, "
          f"rank10 {data['score_rank10']:.2f}, rank11 {data['score_rank11']:.2f}, median {data['score_median']:.2f}; "
          f"same-document pages in the exact top-10: {data['same_document_in_top10']:.1f}", flush=True)
    del exact
    query_list = list(queries)
    rows = []
    for setting in opts.settings:
        config = CandidateConfig(seed=opts.seed, **SETTINGS[setting])
        generator = make_candidate_generator(config, opts.dim)
        started = time.perf_counter()
        for start in range(0, pages, 1000):
            stop = min(pages, start + 1000)
            generator.add(torch.arange(start, stop), list(corpus[start:stop]))
        generator.candidates(query_list[:1], 1)
        build = time.perf_counter() - started
        state_bytes = sum(t.numel() * t.element_size() for t in generator.state().values())
        for n in opts.candidates:
            found = generator.candidates(query_list, n)
            cand_ms = best_of(opts.repeats, lambda: generator.candidates(query_list, n)) * 1e3 / len(queries)
            single = [best_of(opts.repeats, lambda: generator.candidates([query], n)) for query in query_list[:5]]
            final = [rerank(queries[i], corpus, found[i]) for i in range(len(queries))]
            rerank_ms = best_of(opts.repeats, lambda: [rerank(queries[i], corpus, found[i])
                                                       for i in range(len(queries))]) * 1e3 / len(queries)
            hits = sum(len(set(final[i].tolist()) & set(exact_top[i].tolist())) for i in range(len(queries)))
            row = {"pages": pages, "setting": setting, "n": n, "build_s": build, "cand_ms": cand_ms,
                   "cand1_ms": 1e3 * sorted(single)[len(single) // 2], "rerank_ms": rerank_ms,
                   "recall": hits / (10 * len(queries)), "speedup": exact_ms / (cand_ms + rerank_ms),
                   "bytes_per_page": state_bytes / pages, "config": config.model_dump()}
            rows.append(row)
            print(f"  {setting} n={n}: recall@10 {row['recall']:.3f}, cand {cand_ms:.1f} ms, "
                  f"rerank {rerank_ms:.1f} ms, speedup {row['speedup']:.0f}x (build {build:.0f}s)", flush=True)
        del generator
    return rows, data


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
        faiss.omp_set_num_threads(opts.threads)
    print("environment:", environment(), flush=True)
    load = {"start": uptime()}
    print("load at start:", load["start"], flush=True)
    rows, data = [], []
    for pages in opts.pages:
        more, stats = measure(opts, pages)
        rows += more
        data.append(stats)
    load["end"] = uptime()
    columns = [("pages", "pages", "d"), ("setting", "setting", ""), ("n", "n", "d"), ("recall", "recall@10", ".3f"),
               ("cand_ms", "cand ms/q", ".1f"), ("cand1_ms", "cand1 ms", ".1f"), ("rerank_ms", "rerank ms/q", ".1f"),
               ("speedup", "speedup", ".0f"), ("build_s", "build s", ".0f"), ("bytes_per_page", "B/page", ".0f")]
    print()
    print(f"{opts.tokens} tokens/page, dim {opts.dim}, {opts.queries} queries x {opts.query_tokens} tokens; "
          f"exact MaxSim ms/query: " + ", ".join(f"{d['pages']} pages {d['exact_ms_per_query']:.0f}" for d in data))
    print(table(rows, columns))
    print(f"peak RSS {peak_rss_bytes() / 2**30:.1f} GiB")
    print("load at start:", load["start"])
    print("load at end:  ", load["end"])
    if opts.json:
        opts.json.write_text(json.dumps({"rows": rows, "data": data, "load": load, "environment": environment()},
                                        indent=2))


if __name__ == "__main__":
    main()
