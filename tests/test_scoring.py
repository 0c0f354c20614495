"""MaxSim / dot-product scoring, checked against brute force."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_page
from vlzoo_core.model.scoring import dot_scores, maxsim, maxsim_block, pad_by_duplicates, pad_embeddings

TOL = 1e-5


# ---- helpers ----------------------------------------------------------------------------------------------


def unit_rows(n: int, dim: int, generator: torch.Generator, sign: int = 0) -> torch.Tensor:
    """n random unit vectors; sign=+1 / -1 forces every component positive / negative."""
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    if sign:
        x = sign * (x.abs() + 0.05)
    return (x / x.norm(dim=-1, keepdim=True)).float()


def brute_force_maxsim(queries: list[torch.Tensor], documents: list[torch.Tensor]) -> torch.Tensor:
    """Double loop over queries and documents; the valid tokens are given explicitly, in float64."""
    scores = torch.zeros(len(queries), len(documents), dtype=torch.float64)
    for i, q in enumerate(queries):
        for j, d in enumerate(documents):
            total = 0.0
            for q_token in q.double():
                if d.shape[0] == 0:
                    continue  # a document with no tokens contributes nothing
                total += max(float(q_token @ d_token) for d_token in d.double())
            scores[i, j] = total
    return scores


def pad(rows: list[torch.Tensor], dim: int) -> torch.Tensor:
    length = max(r.shape[0] for r in rows)
    out = torch.zeros(len(rows), length, dim)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


@st.composite
def embedding_sets(draw, min_document_length: int = 1):
    dim = draw(st.integers(1, 12))
    q_lengths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=5))
    d_lengths = draw(st.lists(st.integers(min_document_length, 8), min_size=1, max_size=5))
    seed = draw(st.integers(0, 2**31 - 1))
    all_negative = draw(st.booleans())
    generator = torch.Generator().manual_seed(seed)
    queries = [unit_rows(n, dim, generator, +1 if all_negative else 0) for n in q_lengths]
    documents = [unit_rows(n, dim, generator, -1 if all_negative else 0) for n in d_lengths]
    return queries, documents, dim, all_negative


# ---- properties -------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(embedding_sets())
def test_maxsim_matches_brute_force_padded_and_lists(data):
    queries, documents, dim, all_negative = data
    expected = brute_force_maxsim(queries, documents).float()

    padded_q, padded_d = pad(queries, dim), pad(documents, dim)
    # the padded inputs really are padded: rows past each length are exactly zero
    for batch, rows in ((padded_q, queries), (padded_d, documents)):
        for i, r in enumerate(rows):
            assert torch.all(batch[i, r.shape[0] :] == 0)

    from_padded = maxsim(padded_q, padded_d)
    from_lists = maxsim(queries, documents)
    mixed = maxsim(padded_q, documents)
    for got in (from_padded, from_lists, mixed):
        assert got.shape == (len(queries), len(documents))
        assert got.dtype == torch.float32
        assert torch.allclose(got, expected, atol=TOL, rtol=0), (got, expected)
    if all_negative:
        # every similarity is negative, so every score is negative: padding must not win with 0
        assert torch.all(expected < 0)
        assert torch.all(from_padded < 0)


@settings(max_examples=40, deadline=None)
@given(embedding_sets(), st.sampled_from([1, 2, 3, 1000]), st.sampled_from([1, 2, 3, 1000]))
def test_maxsim_independent_of_chunking(data, query_chunk, document_chunk):
    queries, documents, dim, _ = data
    padded_q, padded_d = pad(queries, dim), pad(documents, dim)
    reference = maxsim(padded_q, padded_d, query_chunk=10_000, document_chunk=10_000)
    chunked = maxsim(padded_q, padded_d, query_chunk=query_chunk, document_chunk=document_chunk)
    chunked_lists = maxsim(queries, documents, query_chunk=query_chunk, document_chunk=document_chunk)
    assert torch.allclose(chunked, reference, atol=1e-6, rtol=0)
    assert torch.allclose(chunked_lists, reference, atol=1e-6, rtol=0)
    assert torch.allclose(reference, brute_force_maxsim(queries, documents).float(), atol=TOL, rtol=0)


@settings(max_examples=60, deadline=None)
@given(embedding_sets(min_document_length=0))
def test_maxsim_block_matches_brute_force_on_duplicate_padded_documents(data):
    queries, documents, dim, all_negative = data
    expected = brute_force_maxsim(queries, documents).float()
    padded_q, q_mask = pad_embeddings(pad(queries, dim))
    padded_d, d_mask = pad_embeddings(pad(documents, dim))
    got = maxsim_block(padded_q, q_mask, pad_by_duplicates(padded_d, d_mask))
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=TOL, rtol=0), (got, expected)
    # documents without tokens score exactly 0, the others as brute force, through maxsim as well
    empty = torch.tensor([d.shape[0] == 0 for d in documents])
    assert torch.all(got[:, empty] == 0)
    assert torch.allclose(maxsim(queries, documents), expected, atol=TOL, rtol=0)
    if all_negative:
        assert torch.all(got[:, ~empty] < 0)


@settings(max_examples=60, deadline=None)
@given(embedding_sets(min_document_length=0), st.booleans())
def test_pad_by_duplicates_replaces_only_padding_rows(data, left_padded):
    _, documents, dim, _ = data
    padded = pad(documents, dim)
    if left_padded:
        padded = torch.stack([row.roll(padded.shape[1] - d.shape[0], dims=0) for row, d in zip(padded, documents)])
    _, mask = pad_embeddings(padded)
    before = padded.clone()
    out = pad_by_duplicates(padded, mask)
    assert torch.equal(padded, before)  # a copy: the input is untouched
    assert out.shape == padded.shape and torch.equal(out[mask], padded[mask])
    for i, d in enumerate(documents):
        first = padded[i][mask[i]][:1] if d.shape[0] else torch.zeros(1, dim)
        assert torch.equal(out[i][~mask[i]], first.expand(int((~mask[i]).sum()), dim))
        # the set of rows is the document's own, so every max over its rows is unchanged
        if d.shape[0]:
            assert torch.all((out[i][:, None, :] == d[None, :, :]).all(-1).any(-1))


def test_documents_with_no_valid_tokens_score_zero_in_every_form():
    q = unit_rows(3, 4, torch.Generator().manual_seed(0), sign=+1)
    d_negative = unit_rows(2, 4, torch.Generator().manual_seed(1), sign=-1)
    documents = [torch.zeros(0, 4), d_negative, torch.zeros(0, 4)]
    scores = maxsim([q], documents, document_chunk=2)
    assert scores[0, 0] == 0 and scores[0, 2] == 0 and scores[0, 1] < 0
    assert torch.equal(maxsim([q], [torch.zeros(0, 4)] * 3), torch.zeros(1, 3))  # no document has a token
    assert torch.equal(maxsim_block(q[None], torch.ones(1, 3, dtype=torch.bool), torch.zeros(2, 5, 4)),
                       torch.zeros(1, 2))
    assert torch.equal(maxsim_block(q[None], torch.ones(1, 3, dtype=torch.bool), torch.zeros(2, 0, 4)),
                       torch.zeros(1, 2))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([(1, 1), (7, 5), (1000, 1000)]))
def test_maxsim_with_more_queries_and_documents_than_one_chunk(seed, chunks):
    """40 queries x 40 documents span several chunks of the defaults (32, 16) too."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 6, (40,), generator=generator).tolist()
    queries = [unit_rows(int(n) + 1, 8, generator) for n in torch.randint(0, 4, (40,), generator=generator)]
    documents = [unit_rows(n, 8, generator) for n in lengths]
    expected = brute_force_maxsim(queries, documents).float()
    assert torch.allclose(maxsim(queries, documents), expected, atol=TOL, rtol=0)
    chunked = maxsim(queries, documents, query_chunk=chunks[0], document_chunk=chunks[1])
    assert torch.allclose(chunked, maxsim(queries, documents), atol=1e-6, rtol=0)


@settings(max_examples=30, deadline=None)
@given(embedding_sets())
def test_pad_embeddings_mask_marks_exactly_the_valid_rows(data):
    queries, _, dim, _ = data
    padded, mask = pad_embeddings(queries)
    assert padded.shape == (len(queries), max(q.shape[0] for q in queries), dim)
    expected = torch.zeros(mask.shape, dtype=torch.bool)
    for i, q in enumerate(queries):
        expected[i, : q.shape[0]] = True
        assert torch.equal(padded[i, : q.shape[0]], q)
    assert torch.equal(mask, expected)


# ---- examples ---------------------------------------------------------------------------------------------


def test_all_negative_similarities_with_padding_example():
    """Short documents padded to a long length: the zero padding rows would score 0 > every true similarity."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d_short = torch.tensor([[-0.6, -0.8]])
    d_long = torch.tensor([[-0.6, -0.8], [-0.8, -0.6], [-0.28, -0.96]])
    padded_d = pad([d_short, d_long], 2)
    assert torch.all(padded_d[0, 1:] == 0)
    scores = maxsim(q[None], padded_d)
    # d_short: -0.6 + -0.8; d_long: max(-0.6, -0.8, -0.28) + max(-0.8, -0.6, -0.96)
    expected = brute_force_maxsim([q], [d_short, d_long]).float()
    assert torch.allclose(scores, expected, atol=TOL)
    assert scores[0, 0] == pytest.approx(-1.4, abs=1e-6)
    assert scores[0, 1] == pytest.approx(-0.88, abs=1e-6)


def test_document_without_tokens_scores_zero():
    q = [torch.tensor([[1.0, 0.0]])]
    d = [torch.zeros(0, 2), torch.tensor([[0.6, 0.8]])]
    scores = maxsim(q, d)
    assert scores.shape == (1, 2)
    assert scores[0, 0] == 0
    assert scores[0, 1] == pytest.approx(0.6, abs=1e-6)


def test_maxsim_rejects_dimension_mismatch_and_bad_rank():
    with pytest.raises(ValueError):
        maxsim(torch.ones(1, 2, 3), torch.ones(1, 2, 4))
    with pytest.raises(ValueError):
        maxsim(torch.ones(2, 3), torch.ones(1, 2, 3))


def test_dot_scores_is_the_matrix_product():
    generator = torch.Generator().manual_seed(3)
    q, d = unit_rows(4, 8, generator), unit_rows(5, 8, generator)
    expected = torch.tensor([[float(q[i].double() @ d[j].double()) for j in range(5)] for i in range(4)])
    assert torch.allclose(dot_scores(q, d), expected.float(), atol=TOL)
    with pytest.raises(ValueError):
        dot_scores(q[None], d)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 1000))
def test_model_score_equals_brute_force_from_embeddings(tiny_model, seed):
    queries = ["red circle", "blue glyph AB 12 red red blue", "12"]
    images = [make_page(seed, (64, 48)), make_page(seed + 1, (30, 70))]
    q = tiny_model.embed_queries(queries)
    d = tiny_model.embed_images(images)
    q_mask = tiny_model.processor.process_queries(queries)["attention_mask"].bool()
    d_mask = tiny_model.processor.process_images(images)["attention_mask"].bool()
    assert q.shape[:2] == q_mask.shape and d.shape[:2] == d_mask.shape

    scores = tiny_model.score(q, d)
    assert scores.shape == (3, 2)
    expected = brute_force_maxsim([q[i][q_mask[i]] for i in range(3)], [d[j][d_mask[j]] for j in range(2)])
    assert torch.allclose(scores, expected.float(), atol=TOL, rtol=0)
