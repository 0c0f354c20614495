"""Candidate generators (MUVERA FDEs, token-level IVF): encodings, candidates, removal, state, config."""

from __future__ import annotations

import math

import faiss
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load, save

from vlzoo_core.errors import ConfigError, SearchIndexError
from vlzoo_core.index.candidates import (
    MuveraCandidates,
    TokenCandidates,
    make_candidate_generator,
    restore_candidate_generator,
)
from vlzoo_core.index.configs import CandidateConfig
from vlzoo_core.model.scoring import maxsim

DIM = 64
CONFIGS = {
    "muvera": CandidateConfig(method="muvera", reps=8, k_sim=3, d_proj=8),
    "muvera_noproj": CandidateConfig(method="muvera", reps=4, k_sim=2, d_proj=None),
    "tokens": CandidateConfig(method="tokens", nlist=16, nprobe=4, token_k=16, pq_m=16),
    "tokens_flat": CandidateConfig(method="tokens", nlist=16, nprobe=4, token_k=16, pq_m=None),
}


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def structured(pages: int = 120, queries: int = 8, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pages mixing 3 of pages/4 topics (tokens = topic + noise, 6..24 per page); queries from one page each."""
    g = torch.Generator().manual_seed(seed)
    topics = unit(torch.randn(pages // 4, DIM, generator=g))
    docs = []
    for _ in range(pages):
        length = int(torch.randint(6, 25, (1,), generator=g))
        centre = topics[torch.randint(0, topics.shape[0], (3,), generator=g)][torch.arange(length) % 3]
        docs.append(unit(centre + 0.8 * torch.randn(length, DIM, generator=g) / math.sqrt(DIM)))
    targets = torch.randperm(pages, generator=g)[:queries]
    built = []
    for t in targets.tolist():
        source = docs[t][torch.randint(0, docs[t].shape[0], (8,), generator=g)]
        built.append(unit(source + 0.5 * torch.randn(source.shape, generator=g) / math.sqrt(DIM)))
    return docs, built


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny problems: threads only add OpenMP overhead, and much of it on a busy machine."""
    saved = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(saved[0])
    faiss.omp_set_num_threads(saved[1])


@pytest.fixture(scope="module")
def data() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return structured()


def built(name: str, docs: list[torch.Tensor], rows: torch.Tensor | None = None):
    generator = make_candidate_generator(CONFIGS[name], DIM)
    generator.add(torch.arange(len(docs)) if rows is None else rows, docs)
    return generator


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


# ---- MUVERA encodings ---------------------------------------------------------------------------------------


def reference_fde(generator: MuveraCandidates, vectors: torch.Tensor, query: bool) -> torch.Tensor:
    """The FDE one vector at a time, as the MUVERA paper describes it."""
    parts = []
    for r in range(generator.planes.shape[0]):
        planes = generator.planes[r]
        projection = torch.eye(DIM) if generator.projections is None else generator.projections[r]
        buckets = [sum(1 << k for k in range(planes.shape[1]) if float(v @ planes[:, k]) > 0) for v in vectors]
        projected = [v @ projection for v in vectors]
        for b in range(generator.buckets):
            members = [p for p, bucket in zip(projected, buckets) if bucket == b]
            if members:
                parts.append(sum(members) if query else sum(members) / len(members))
            elif query or not len(vectors):
                parts.append(torch.zeros(projection.shape[1]))
            else:  # fill_empty_partitions: the first vector at the least Hamming distance
                distance = [(bucket ^ b).bit_count() for bucket in buckets]
                parts.append(projected[distance.index(min(distance))])
    return torch.cat(parts)


@pytest.mark.parametrize("name", ["muvera", "muvera_noproj"])
def test_fde_matches_per_vector_reference(name):
    generator = make_candidate_generator(CONFIGS[name], DIM)
    g = torch.Generator().manual_seed(3)
    vectors = [unit(torch.randn(length, DIM, generator=g)) for length in (7, 1, 0, 12, 3)]
    for query in (False, True):
        encoded = generator.encode(vectors, query=query)
        assert encoded.shape == (5, generator.fde_dim)
        for i, v in enumerate(vectors):
            torch.testing.assert_close(encoded[i], reference_fde(generator, v, query), atol=1e-5, rtol=1e-5)


def test_fde_dot_tracks_maxsim(data):
    docs, queries = data
    generator = make_candidate_generator(CandidateConfig(method="muvera"), DIM)
    approx = generator.encode(queries, query=True) @ generator.encode(docs, query=False).T
    exact = maxsim(queries, docs)
    correlations = torch.tensor([spearman(approx[i], exact[i]) for i in range(len(queries))])
    assert correlations.mean() > 0.75 and correlations.min() > 0.65, correlations  # unrelated pages: noise
    for i in range(len(queries)):  # the pages that matter rank high
        assert set(exact[i].topk(5).indices.tolist()) <= set(approx[i].topk(20).indices.tolist())


def test_fde_deterministic_given_seed(data):
    docs, _ = data
    config = CONFIGS["muvera"]
    first = make_candidate_generator(config, DIM).encode(docs[:10], query=False)
    torch.testing.assert_close(make_candidate_generator(config, DIM).encode(docs[:10], query=False), first,
                               rtol=0, atol=0)
    other = make_candidate_generator(config.model_copy(update={"seed": 1}), DIM).encode(docs[:10], query=False)
    assert not torch.equal(other, first)


# ---- candidates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_candidates_valid_unique_and_padded(name, data):
    docs, queries = data
    rows = torch.arange(len(docs)) * 3 + 5  # row ids need not be 0..n-1
    generator = built(name, docs, rows)
    found = generator.candidates(queries, 10)
    assert found.shape == (len(queries), 10) and found.dtype == torch.int64
    for row in found:
        assert torch.isin(row, rows).all() and row.unique().numel() == 10
    everything = generator.candidates(queries[:2], len(docs) + 7)
    for row in everything:
        assert set(row[: len(docs)].tolist()) == set(rows.tolist())  # n >= corpus size: rerank is exact
        assert (row[len(docs):] == -1).all()


@pytest.mark.parametrize("config", [CandidateConfig(method="muvera"), CONFIGS["tokens"], CONFIGS["tokens_flat"]],
                         ids=["muvera_default", "tokens", "tokens_flat"])
def test_candidates_then_exact_rerank_finds_exact_top(config, data):
    docs, queries = data
    generator = make_candidate_generator(config, DIM)
    generator.add(torch.arange(len(docs)), docs)
    found = generator.candidates(queries, 20)
    exact = maxsim(queries, docs)
    hits = 0
    for i, query in enumerate(queries):
        reranked = found[i][maxsim([query], [docs[j] for j in found[i]])[0].topk(5).indices]
        hits += len(set(reranked.tolist()) & set(exact[i].topk(5).indices.tolist()))
    assert hits / (5 * len(queries)) >= 0.9


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_remove_drops_pages(name, data):
    docs, queries = data
    generator = built(name, docs)
    generator.candidates(queries[:1], 1)  # the token IVF trains here; removal then edits the trained lists
    gone = torch.arange(0, len(docs), 2)
    generator.remove(torch.cat([gone, torch.tensor([10_000])]))  # an unknown row is ignored
    found = generator.candidates(queries, len(docs))
    kept = found[:, : len(docs) - gone.numel()]
    assert not torch.isin(found, gone).any()
    assert all(set(row.tolist()) == set(range(1, len(docs), 2)) for row in kept)
    assert (found[:, len(docs) - gone.numel():] == -1).all()


def test_tokens_remove_before_training(data):
    docs, queries = data
    generator = built("tokens", docs)
    generator.remove(torch.arange(10))
    assert not torch.isin(generator.candidates(queries, len(docs)), torch.arange(10)).any()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_round_trip_gives_identical_candidates(name, data):
    docs, queries = data
    generator = built(name, docs[:100])
    generator.candidates(queries[:1], 1)  # the token IVF trains here
    generator.remove(torch.tensor([3, 4]))
    generator.add(torch.arange(100, len(docs)), docs[100:])  # encoded with the trained lists and codebooks
    state = load(save(generator.state()))  # safetensors-compatible tensors
    restored = restore_candidate_generator(state, CONFIGS[name])
    assert type(restored) is type(generator)
    torch.testing.assert_close(restored.candidates(queries, 15), generator.candidates(queries, 15), rtol=0, atol=0)
    again = restored.state()
    assert again.keys() == state.keys() and all(torch.equal(again[key], state[key]) for key in state)
    restored.add(torch.tensor([500]), [queries[0]])  # still usable: the new page is the best match of its query
    assert int(restored.candidates(queries[:1], 1)[0, 0]) == 500


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_adding_in_two_calls_equals_once(name, data):
    docs, queries = data
    once = built(name, docs)
    twice = make_candidate_generator(CONFIGS[name], DIM)
    twice.add(torch.arange(50), docs[:50])
    twice.add(torch.arange(50, len(docs)), docs[50:])
    torch.testing.assert_close(twice.candidates(queries, 12), once.candidates(queries, 12), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_empty_generator_and_empty_queries(name, data):
    _, queries = data
    generator = make_candidate_generator(CONFIGS[name], DIM)
    assert (generator.candidates(queries, 4) == -1).all()
    assert restore_candidate_generator(generator.state(), CONFIGS[name]).candidates(queries, 2).eq(-1).all()
    generator.add(torch.arange(3), [unit(torch.randn(5, DIM)) for _ in range(3)])
    assert generator.candidates([], 4).shape == (0, 4)
    blank = generator.candidates([torch.zeros(0, DIM)], 4)[0]  # a query without tokens: any pages, then padding
    assert set(blank[:3].tolist()) == {0, 1, 2} and int(blank[3]) == -1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pages_without_tokens_are_still_candidates(name, data):
    docs, queries = data
    generator = make_candidate_generator(CONFIGS[name], DIM)
    generator.add(torch.tensor([1000, 1001]), [torch.zeros(0, DIM), torch.zeros(0, DIM)])
    found = generator.candidates(queries[:1], 3)[0]
    assert set(found[:2].tolist()) == {1000, 1001} and int(found[2]) == -1
    generator.add(torch.arange(len(docs)), docs)
    found = generator.candidates(queries[:1], len(docs) + 2)[0]
    assert set(found.tolist()) == set(range(len(docs))) | {1000, 1001}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bad_input_is_refused(name, data):
    docs, queries = data
    generator = built(name, docs[:10])
    with pytest.raises(SearchIndexError, match="twice"):
        generator.add(torch.tensor([3]), docs[:1])
    with pytest.raises(SearchIndexError, match="twice"):
        generator.add(torch.tensor([50, 50]), docs[:2])
    with pytest.raises(SearchIndexError, match="rows for"):
        generator.add(torch.tensor([60]), docs[:2])
    with pytest.raises(SearchIndexError, match=">= 0"):
        generator.add(torch.tensor([-1]), docs[:1])
    with pytest.raises(SearchIndexError, match="expected float"):
        generator.add(torch.tensor([61]), [torch.randn(4, DIM + 1)])
    with pytest.raises(SearchIndexError, match="int64"):
        generator.add(torch.tensor([62], dtype=torch.int32), docs[:1])
    with pytest.raises(SearchIndexError, match="n must be"):
        generator.candidates(queries, 0)
    with pytest.raises(SearchIndexError, match="query 0"):
        generator.candidates([torch.randn(3, DIM - 1)], 5)


# ---- config and state checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"method": "bm25"}, {"reps": 0}, {"k_sim": 0}, {"k_sim": 13}, {"d_proj": 0}, {"seed": -1}, {"nlist": 0},
    {"nprobe": 0}, {"nlist": 8, "nprobe": 9}, {"token_k": 0}, {"pq_m": 0}, {"reps": 2.5}, {"unknown": 1},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        CandidateConfig(**bad)


def test_config_is_frozen_and_generators_check_dim():
    config = CandidateConfig()
    with pytest.raises(ValidationError):
        config.reps = 3
    with pytest.raises(ConfigError, match="divide"):
        make_candidate_generator(CandidateConfig(method="tokens", pq_m=24), DIM)
    with pytest.raises(ConfigError, match="dim"):
        make_candidate_generator(CandidateConfig(method="muvera"), 0)
    assert isinstance(make_candidate_generator(CandidateConfig(method="tokens"), DIM), TokenCandidates)


def test_state_with_other_config_is_refused(data):
    docs, _ = data
    muvera = built("muvera", docs[:20]).state()
    with pytest.raises(SearchIndexError, match="does not match"):
        MuveraCandidates.from_state(muvera, CONFIGS["muvera"].model_copy(update={"k_sim": 4}))
    with pytest.raises(SearchIndexError, match="lacks"):
        MuveraCandidates.from_state({"planes": muvera["planes"]}, CONFIGS["muvera"])
    tokens = built("tokens", docs).state()
    with pytest.raises(SearchIndexError, match="PQ codebooks"):
        TokenCandidates.from_state(tokens, CONFIGS["tokens_flat"])
    with pytest.raises(SearchIndexError, match="disagree"):
        TokenCandidates.from_state({**tokens, "ids": tokens["ids"][1:]}, CONFIGS["tokens"])
