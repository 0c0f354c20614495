"""Token pooling: counts, norms, batch invariance, and the clusters of sequential Ward (as colpali-engine)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vlzoo_core.index.pooling import pool_tokens

TOL = 1e-5


# ---- helpers ----------------------------------------------------------------------------------------------


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def pooled_means(vectors: torch.Tensor, clusters: list[list[int]]) -> torch.Tensor:
    """Normalised mean of each cluster, clusters ordered by their first token (pool_tokens' order)."""
    clusters = sorted(clusters, key=min)
    return torch.stack([F.normalize(vectors[c].float().mean(0), dim=-1) for c in clusters])


def sequential_ward(vectors: torch.Tensor, k: int) -> list[list[int]]:
    """Clusters of textbook agglomerative Ward, stopped at k clusters, in float64.

    The observations are the rows of 1 - X X^T, as colpali-engine's HierarchicalTokenPooler hands them to
    scipy's `linkage(method="ward")`; each step merges the pair of clusters of least Ward cost.
    """
    x = vectors.double()
    features = 1 - x @ x.T
    clusters = [[i] for i in range(x.shape[0])]
    while len(clusters) > k:
        centroids = torch.stack([features[c].mean(0) for c in clusters])
        sizes = torch.tensor([len(c) for c in clusters], dtype=torch.float64)
        cost = ((centroids[:, None] - centroids[None]) ** 2).sum(-1) * (sizes[:, None] * sizes[None])
        cost = cost / (sizes[:, None] + sizes[None])
        cost.fill_diagonal_(float("inf"))
        a, b = divmod(int(cost.argmin()), len(clusters))
        a, b = min(a, b), max(a, b)
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    return clusters


def scipy_ward(vectors: torch.Tensor, k: int) -> list[list[int]]:
    """colpali-engine's own call: fcluster(linkage(1 - X X^T, "ward"), k, "maxclust")."""
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    x = vectors.float()
    distances = (1 - x @ x.T).numpy()
    labels = hierarchy.fcluster(hierarchy.linkage(distances, metric="euclidean", method="ward"), t=k,
                                criterion="maxclust")
    return [[i for i, label in enumerate(labels) if label == value] for value in sorted(set(labels))]


def pool_one(vectors: torch.Tensor, pool_factor: int) -> torch.Tensor:
    return pool_tokens(vectors[None], torch.ones(1, vectors.shape[0], dtype=torch.bool), pool_factor)[0]


def separated_clusters(k: int, dim: int, generator: torch.Generator) -> tuple[torch.Tensor, list[list[int]]]:
    """k tight clusters of 3 nearly equal unit vectors around well-spread centres, tokens shuffled."""
    centres = unit(torch.randn(k, dim, generator=generator, dtype=torch.float64))
    while k > 1 and (centres @ centres.T - torch.eye(k)).max() > 0.8:
        centres = unit(torch.randn(k, dim, generator=generator, dtype=torch.float64))
    points = unit(centres.repeat_interleave(3, 0) + 1e-3 * torch.randn(3 * k, dim, generator=generator,
                                                                        dtype=torch.float64)).float()
    order = torch.randperm(3 * k, generator=generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(3 * k)
    clusters = [[int(position[3 * c + j]) for j in range(3)] for c in range(k)]
    return points[order], clusters


@st.composite
def page_batches(draw, max_length: int = 12):
    dim = draw(st.integers(2, 10))
    lengths = draw(st.lists(st.integers(0, max_length), min_size=1, max_size=4))
    pad = draw(st.integers(0, 3))
    left = draw(st.booleans())  # padding before the valid tokens instead of after
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths) + pad
    # padding rows hold garbage: only the mask may decide what is valid
    vectors = torch.randn(len(lengths), width, dim, generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    pages = []
    for i, n in enumerate(lengths):
        start = width - n if left else 0
        vectors[i, start : start + n] = unit(vectors[i, start : start + n])
        mask[i, start : start + n] = True
        pages.append(vectors[i, start : start + n].clone())
    return vectors, mask, pages


# ---- properties -------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(page_batches(), st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_pool_factor_one_returns_the_valid_vectors_unchanged(batch, dtype):
    vectors, mask, _ = batch
    vectors = vectors.to(dtype)
    pooled = pool_tokens(vectors, mask, 1)
    assert len(pooled) == vectors.shape[0]
    for i, page in enumerate(pooled):
        assert page.dtype == torch.float32
        assert torch.equal(page, vectors[i][mask[i]].float())


@settings(max_examples=40, deadline=None)
@given(page_batches(max_length=20), st.integers(2, 5), st.sampled_from([torch.float32, torch.bfloat16]))
def test_counts_unit_norms_and_dtype(batch, pool_factor, dtype):
    vectors, mask, pages = batch
    pooled = pool_tokens(vectors.to(dtype), mask, pool_factor)
    assert len(pooled) == len(pages)
    for page, out in zip(pages, pooled, strict=True):
        n = page.shape[0]
        assert out.shape == ((max(n // pool_factor, 1) if n else 0), vectors.shape[-1])
        assert out.dtype == torch.float32
        assert torch.allclose(out.norm(dim=-1), torch.ones(out.shape[0]), atol=TOL)


@settings(max_examples=40, deadline=None)
@given(page_batches(max_length=20), st.integers(2, 4))
def test_a_page_pools_alike_alone_and_in_any_batch(batch, pool_factor):
    vectors, mask, pages = batch
    together = pool_tokens(vectors, mask, pool_factor)
    for page, out in zip(pages, together, strict=True):
        alone = pool_tokens(page[None], torch.ones(1, page.shape[0], dtype=torch.bool), pool_factor)[0]
        assert alone.shape == out.shape
        assert torch.allclose(alone, out, atol=TOL, rtol=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(4, 32), st.integers(0, 2**31 - 1))
def test_well_separated_clusters_are_recovered_exactly(k, dim, seed):
    points, clusters = separated_clusters(k, dim, torch.Generator().manual_seed(seed))
    assert torch.allclose(pool_one(points, 3), pooled_means(points, clusters), atol=TOL, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(4, 16), st.integers(0, 2**31 - 1))
def test_matches_sequential_ward_on_separable_pages(k, dim, seed):
    points, _ = separated_clusters(k, dim, torch.Generator().manual_seed(seed))
    # 3 and 6 cut between the tight clusters; a cut inside one (pool factor 2) would rest on float noise
    for pool_factor in (3, 6):
        expected = pooled_means(points, sequential_ward(points, max(points.shape[0] // pool_factor, 1)))
        assert torch.allclose(pool_one(points, pool_factor), expected, atol=TOL, rtol=0)


def random_pages(count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        n, dim, pool_factor = (int(torch.randint(lo, hi, (1,), generator=generator)) for lo, hi in
                               ((2, 21), (2, 17), (2, 5)))
        yield unit(torch.randn(n, dim, generator=generator)), pool_factor


def test_agrees_with_sequential_ward_on_random_pages():
    """Random pages have no ties to speak of: every one of them gives sequential Ward's clusters."""
    agree = 0
    for points, pool_factor in random_pages(100, seed=0):
        expected = pooled_means(points, sequential_ward(points, max(points.shape[0] // pool_factor, 1)))
        got = pool_one(points, pool_factor)
        agree += got.shape == expected.shape and torch.allclose(got, expected, atol=TOL, rtol=0)
    assert agree == 100, f"{agree}/100 random pages pooled as sequential Ward"


def test_agrees_with_scipy_fcluster_maxclust():
    """colpali-engine's exact recipe, where scipy is installed (it is not a dependency of vlzoo)."""
    pytest.importorskip("scipy")
    generator = torch.Generator().manual_seed(1)
    for k in range(1, 7):
        points, _ = separated_clusters(k, 12, generator)
        expected = pooled_means(points, scipy_ward(points, k))
        assert torch.allclose(pool_one(points, 3), expected, atol=TOL, rtol=0)
    agree = 0
    for points, pool_factor in random_pages(100, seed=2):
        expected = pooled_means(points, scipy_ward(points, max(points.shape[0] // pool_factor, 1)))
        got = pool_one(points, pool_factor)
        agree += got.shape == expected.shape and torch.allclose(got, expected, atol=TOL, rtol=0)
    assert agree >= 95, f"{agree}/100 random pages pooled as scipy's Ward"


# ---- examples ---------------------------------------------------------------------------------------------


def test_pages_without_tokens_and_single_tokens():
    vectors = unit(torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)))
    mask = torch.tensor([[False] * 4, [False, True, False, False], [True] * 4])
    empty, single, full = pool_tokens(vectors, mask, 3)
    assert empty.shape == (0, 5)
    assert torch.allclose(single, vectors[1, 1:2], atol=TOL)
    assert full.shape == (1, 5)
    assert torch.allclose(full[0], F.normalize(vectors[2].mean(0), dim=0), atol=TOL)
    assert pool_tokens(torch.zeros(0, 4, 5), torch.zeros(0, 4, dtype=torch.bool), 2) == []


def test_the_cheapest_merges_are_kept_not_the_first_rounds():
    """Two far tokens are each other's nearest neighbours from the start, yet are never merged.

    The first round of reciprocal-nearest-neighbour merging joins (a, b) along with the close pairs (c, d)
    and (e, f): three merges, as many as pool factor 2 asks for. The three cheapest merges are the ones
    inside c, d, e, f, which leaves a and b apart.
    """
    a, b = [1.0, 0.0, 0.0], [0.8, 0.6, 0.0]
    c, d, e, f = [0.0, 0.0, 1.0], [0.0, 0.02, 1.0], [0.03, 0.0, 1.0], [0.03, 0.025, 1.0]
    points = unit(torch.tensor([a, b, c, d, e, f]))
    expected = pooled_means(points, [[0], [1], [2, 3, 4, 5]])
    assert torch.allclose(pool_one(points, 2), expected, atol=TOL)
    assert torch.allclose(expected, pooled_means(points, sequential_ward(points, 3)), atol=TOL)


def test_duplicate_tokens_merge_first_and_in_few_rounds(monkeypatch):
    """Exact duplicates cost 0 to merge, so they go first; their ties must not cost one round per merge."""
    import vlzoo_core.index.pooling as pooling

    rounds = []
    distances = pooling._ward_distances
    monkeypatch.setattr(pooling, "_ward_distances", lambda *args: rounds.append(1) or distances(*args))
    generator = torch.Generator().manual_seed(0)
    repeated, others = unit(torch.randn(1, 16, generator=generator)), unit(torch.randn(60, 16, generator=generator))
    points = torch.cat([repeated.expand(300, 16), others])[torch.randperm(360, generator=generator)]
    pooled = pool_one(points, 3)  # 120 clusters: 240 merges, all among the 300 duplicates
    assert pooled.shape == (120, 16)
    is_repeated = (pooled - repeated).abs().amax(dim=-1) < 1e-5
    assert int(is_repeated.sum()) == 60
    # the other 60 tokens stay alone: each is one pooled vector
    matches = (pooled[~is_repeated][:, None, :] - others[None, :, :]).abs().amax(dim=-1) < 1e-6
    assert torch.equal(matches.sum(dim=0), torch.ones(60, dtype=torch.int64))
    assert torch.equal(matches.sum(dim=1), torch.ones(60, dtype=torch.int64))
    assert len(rounds) <= 30, f"{len(rounds)} rounds"


def test_rejects_bad_arguments():
    vectors, mask = torch.randn(1, 3, 2), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError):
        pool_tokens(vectors, mask, 0)
    with pytest.raises(ValueError):
        pool_tokens(vectors[0], mask[0], 2)
    with pytest.raises(ValueError):
        pool_tokens(vectors.masked_fill(torch.eye(3, 2, dtype=torch.bool)[None], float("nan")), mask, 2)
