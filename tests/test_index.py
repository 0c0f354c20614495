"""The index: exact search against brute force, incremental updates, removal, compaction, backends."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlzoo
from tests.index_corpus import make_corpus, synthetic_pages, write_pdf
from vlzoo_core.errors import SearchIndexError, VlzooError
from vlzoo_core.index.backends import IndexBackend
from vlzoo_core.index import search
from vlzoo_core.index.index import Index
from vlzoo_core.index.search import LiveShard, exact_search
from vlzoo_core.index.sources import iter_pages
from vlzoo_core.index.store import PageRecord, Shard, write_shard
from vlzoo_core.model.scoring import maxsim

QUERIES = ["red circle and blue letter K", "green square and black cross", "yellow triangle", "purple letter O"]
FP16_TOL = 2e-2  # a score sums ~10 dot products of float16-rounded unit vectors


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlzoo.build("colllava_tiny").eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def brute_force(model, corpus: Path, queries: list[str]):
    pages = list(iter_pages([corpus]))
    scores = model.score(model.embed_queries(queries), model.embed_images([p.image for p in pages], batch_size=16))
    return [p.id for p in pages], scores


def assert_same_ranking(results, ids, scores, k):
    for row, (found, expected) in enumerate(zip(results, scores, strict=True)):
        order = torch.sort(expected, descending=True, stable=True)
        assert len(found) == k
        for rank, hit in enumerate(found):
            assert abs(hit.score - float(order.values[rank])) <= FP16_TOL
            # the same page at each rank, unless the next-best page is within the tolerance (a near tie)
            gap = float(order.values[rank] - order.values[rank + 1]) if rank + 1 < len(order.values) else 1.0
            prev_gap = float(order.values[rank - 1] - order.values[rank]) if rank else 1.0
            if gap > 2 * FP16_TOL and prev_gap > 2 * FP16_TOL:
                assert hit.id == ids[int(order.indices[rank])], f"query {row} rank {rank + 1}"


def test_exact_search_equals_retriever_score_over_all_pages(model, corpus, tmp_path):
    index = Index.create(tmp_path / "idx", model, shard_size=64)
    report = index.add([corpus], batch_size=16)
    ids, scores = brute_force(model, corpus, QUERIES)
    assert len(ids) >= 200 and report.added == len(ids) and len(index) == len(ids)
    assert_same_ranking(index.search(QUERIES, k=10), ids, scores, 10)
    info = index.info()
    assert info["pages"] == len(ids) and info["documents"] == 3 + 90 and info["shards"] == -(-len(ids) // 64)


def test_int8_vectors_score_like_the_model_and_take_less_space(model, corpus, tmp_path):
    ids, scores = brute_force(model, corpus, QUERIES)
    column = {page_id: i for i, page_id in enumerate(ids)}
    int8 = Index.create(tmp_path / "idx8", model, dtype="int8")
    int8.add([corpus], batch_size=16)
    for q, row in enumerate(int8.search(QUERIES, k=20)):
        # one scale per vector: each dot product is off by well under 1e-2, a score (a sum of ~10) by < 0.05
        assert max(abs(hit.score - float(scores[q, column[hit.id]])) for hit in row) < 0.05
        assert float(scores[q].max()) - row[0].score < 0.05
    fp16 = Index.create(tmp_path / "idx16", model)
    fp16.add([corpus], batch_size=16)
    assert int8.info()["bytes_per_page"] < 0.65 * fp16.info()["bytes_per_page"]


def test_pooling_reduces_vectors_and_keeps_the_top_page(model, corpus, tmp_path):
    plain = Index.create(tmp_path / "plain", model)
    plain.add([corpus / "scans"], batch_size=16)
    pooled = Index.create(tmp_path / "pooled", model, pool_factor=3)
    pooled.add([corpus / "scans"], batch_size=16)
    assert pooled.info()["vectors"] <= plain.info()["vectors"] // 3 + plain.info()["pages"]
    assert pooled.info()["bytes_per_page"] < plain.info()["bytes_per_page"]
    assert len(pooled.search(QUERIES, k=5)[0]) == 5


def test_qdrant_local_mode_returns_the_top_k_of_local_exact(model, corpus, tmp_path):
    pytest.importorskip("qdrant_client")
    local = Index.create(tmp_path / "local", model)
    local.add([corpus], batch_size=16)
    remote = Index.create(tmp_path / "qdrant", model, backend="qdrant")
    remote.add([corpus], batch_size=16)
    for a, b in zip(local.search(QUERIES, k=10), remote.search(QUERIES, k=10), strict=True):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=FP16_TOL)
        assert {h.id for h in a[:5]} == {h.id for h in b[:5]} or \
            abs(a[4].score - a[5].score) < 2 * FP16_TOL


# ---- incremental updates ------------------------------------------------------------------------------


def _snapshot_contents(root: Path) -> dict[str, tuple[str, bytes]]:
    index = Index.open(root)
    snap = index.snapshot()
    out = {}
    for ref, record in snap.records():
        row = ref & 0xFFFFFFFF
        out[record.id] = (record.sha256, snap.shards[ref >> 32].vectors(row, row + 1).half().numpy().tobytes())
    return out


def test_indexing_twice_adds_nothing_and_changes_nothing(model, corpus, tmp_path):
    index = Index.create(tmp_path / "idx", model, shard_size=50)
    first = index.add([corpus], batch_size=16)
    before = _snapshot_contents(index.root)
    shards = sorted(p.name for p in (index.root / "shards").iterdir())
    second = index.add([corpus], batch_size=16)
    assert (second.added, second.changed, second.removed, second.encoded) == (0, 0, 0, 0)
    assert second.unchanged == first.added
    assert _snapshot_contents(index.root) == before
    assert sorted(p.name for p in (index.root / "shards").iterdir()) == shards


def test_a_changed_page_is_encoded_again_and_a_removed_one_disappears(model, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    pages = synthetic_pages(6, 1)
    write_pdf(folder / "a.pdf", pages[:4])
    pages[4].save(folder / "b.png")
    index = Index.create(tmp_path / "idx", model)
    index.add([folder])
    old = _snapshot_contents(index.root)

    write_pdf(folder / "a.pdf", [pages[0], pages[5], pages[2], pages[3]])  # page 2 changes
    report = index.add([folder])
    assert (report.added, report.changed, report.unchanged, report.encoded) == (0, 1, 4, 1)
    new = _snapshot_contents(index.root)
    assert new["a.pdf#2"] != old["a.pdf#2"] and {k: v for k, v in new.items() if k != "a.pdf#2"} == \
        {k: v for k, v in old.items() if k != "a.pdf#2"}

    index.remove(["b.png#1"])
    assert all(hit.id != "b.png#1" for row in index.search(QUERIES, k=4) for hit in row)
    assert len(index) == 4

    (folder / "a.pdf").unlink()
    report = index.add([folder], delete_missing=True)
    assert (report.removed, report.added) == (4, 1) and len(index) == 1  # b.png is back: it is still a source
    index.remove(["b.png#1"])
    assert index.search(QUERIES[:1], k=3) == [[]]


def test_compaction_keeps_results_identical_and_frees_space(model, corpus, tmp_path):
    index = Index.create(tmp_path / "idx", model, shard_size=40)
    index.add([corpus], batch_size=16)
    victims = [hit.id for hit in index.search(QUERIES[0], k=30)[0][::3]]
    index.remove(victims)
    before = index.search(QUERIES, k=20)
    bytes_before = index.info()["bytes"]
    freed = index.compact()
    after = index.search(QUERIES, k=20)
    assert freed > 0 and index.info()["bytes"] == bytes_before - freed
    assert index.info()["deleted_pages_awaiting_compaction"] == 0
    assert [[(h.id, h.score) for h in row] for row in after] == [[(h.id, h.score) for h in row] for row in before]
    assert sum(1 for _ in (index.root / "shards").glob("*.safetensors")) == index.info()["shards"]


# ---- model identity and bad requests ------------------------------------------------------------------


def test_searching_with_another_model_names_both(model, corpus, tmp_path):
    index = Index.create(tmp_path / "idx", model)
    index.add([corpus / "scans"], batch_size=16)
    torch.manual_seed(1)
    other = vlzoo.build("colllava_tiny")
    with pytest.raises(SearchIndexError, match="built with colllava_tiny .*but this model is colllava_tiny"):
        Index.open(index.root, model=other)


@pytest.mark.parametrize(("k", "queries", "message"), [
    (0, ["red circle"], "k must be a positive integer"),
    (-3, ["red circle"], "k must be a positive integer"),
    (5, ["  "], "query 0 is empty"),
    (5, [], "no query given"),
])
def test_bad_search_requests_are_one_line_errors(model, tmp_path, k, queries, message):
    index = Index.create(tmp_path / "idx", model)
    with pytest.raises(SearchIndexError, match=message):
        index.search(queries, k=k)


def test_an_index_of_another_format_version_is_refused(model, tmp_path):
    index = Index.create(tmp_path / "idx", model)
    manifest = json.loads((index.root / "manifest.json").read_text())
    manifest["format_version"] = 99
    (index.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SearchIndexError, match="format version 99"):
        Index.open(index.root)


# ---- the search kernel against brute force, on stored vectors -------------------------------------------


@st.composite
def stored_corpus(draw):
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    n_shards = draw(st.integers(1, 3))
    shards = []
    for _ in range(n_shards):
        lengths = draw(st.lists(st.integers(1, 9), min_size=1, max_size=12))
        shards.append([torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1) for n in lengths])
    queries = [torch.nn.functional.normalize(torch.randn(draw(st.integers(1, 6)), 16, generator=g), dim=-1)
               for _ in range(draw(st.integers(1, 4)))]
    deleted = draw(st.lists(st.integers(0, 40), max_size=6))
    k = draw(st.integers(1, 15))
    dtype = draw(st.sampled_from(["float16", "int8"]))
    block_tokens = draw(st.integers(1, 30))  # one page per block up to a few, so blocks and chunks cross
    return shards, queries, deleted, k, dtype, block_tokens


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=stored_corpus())
def test_exact_search_equals_brute_force_maxsim(tmp_path, data):
    shards, queries, deleted, k, dtype, block_tokens = data
    root = tmp_path / f"s{abs(hash(str(data))) % 10**8}"
    live, everything, stored = [], [], []
    for s, pages in enumerate(shards):
        records = [PageRecord(f"{s}-{i}", "x", i + 1, "h", p.shape[0], {}) for i, p in enumerate(pages)]
        write_shard(root, f"shard{s}", records, pages, dtype)
        shard = Shard(root, f"shard{s}")
        mask = torch.ones(len(pages), dtype=torch.bool)
        for row in deleted:
            if row < len(pages):
                mask[row] = False
        live.append(LiveShard(shard, mask))
        for i, page in enumerate(pages):
            everything.append(((s << 32) | i, shard.vectors(i, i + 1)))  # dequantized as stored
            stored.append(bool(mask[i]))
    with mock.patch.multiple(search, BLOCK_TOKENS=block_tokens, CHUNK_PAGES=3):  # many blocks and merges
        scores, refs = exact_search(live, queries, k)
    expected = maxsim(queries, [v for _, v in everything])
    expected[:, ~torch.tensor(stored)] = float("-inf")
    n_live = sum(stored)
    assert scores.shape == (len(queries), min(k, n_live))
    order = torch.sort(expected, dim=1, descending=True, stable=True)
    torch.testing.assert_close(scores, order.values[:, : min(k, n_live)], atol=1e-4, rtol=0)
    ref_of = torch.tensor([r for r, _ in everything])
    for q in range(len(queries)):
        for rank in range(scores.shape[1]):
            ties = (expected[q] - scores[q, rank]).abs() <= 1e-4
            assert ties[(ref_of == refs[q, rank]).nonzero()[0, 0]]


@pytest.mark.parametrize("method", ["muvera", "tokens"])
def test_approximate_search_reranks_exactly_and_follows_updates(model, corpus, tmp_path, method):
    index = Index.create(tmp_path / "idx", model, backend_config={"approximate": {"method": method, "nlist": 16}},
                         shard_size=64)
    index.add([corpus], batch_size=16)
    exact = index.search(QUERIES, k=10)
    everything = index.search(QUERIES, k=10, approximate=True, candidates=len(index))
    assert [[(h.id, h.score) for h in row] for row in everything] == [[(h.id, h.score) for h in row] for row in exact]
    some = index.search(QUERIES, k=10, approximate=True, candidates=50)
    for row, truth in zip(some, exact, strict=True):
        assert len(row) == 10 and all(a.score <= truth[0].score + 1e-6 for a in row)
    gone = exact[0][0].id
    index.remove([gone])
    assert gone not in {h.id for h in index.search(QUERIES[0], k=10, approximate=True, candidates=len(index))[0]}
    with pytest.raises(SearchIndexError, match="no approximate stage"):
        Index.create(tmp_path / "plain", model).search(QUERIES[0], approximate=True)


class MemoryBackend(IndexBackend):
    """A third-party backend: keeps page vectors in a dict, brute-force MaxSim."""

    pages: dict = {}

    def sync(self, snapshot):
        MemoryBackend.pages = {key: snapshot.vectors_of(key) for key in snapshot.keys()}

    def search(self, snapshot, queries, k, *, approximate=False, candidates=None, device=None):
        keys = list(MemoryBackend.pages)
        scores = maxsim(list(queries), [MemoryBackend.pages[key] for key in keys])
        return [[(keys[int(i)], float(row[i])) for i in torch.argsort(row, descending=True)[:k]] for row in scores]


def test_a_plugin_can_register_an_index_backend(model, corpus, tmp_path, isolated_registry):
    import types

    from vlzoo_core import StrictModel, hookimpl

    class NoConfig(StrictModel):
        pass

    plugin = types.SimpleNamespace(vlzoo_register=hookimpl(lambda register: register.component(
        "index_backend", "memory", "tests.test_index:MemoryBackend", NoConfig, "in memory")))
    isolated_registry(plugins=[("memory_plugin", plugin)])
    index = Index.create(tmp_path / "idx", model, backend="memory")
    index.add([corpus / "scans"], batch_size=16)
    assert len(MemoryBackend.pages) == 90
    local = Index.create(tmp_path / "local", model)
    local.add([corpus / "scans"], batch_size=16)
    assert [h.id for h in index.search(QUERIES, k=3)[0]] == [h.id for h in local.search(QUERIES, k=3)[0]]
    with pytest.raises(VlzooError, match="unknown index_backend 'memroy'; did you mean 'memory'"):
        Index.create(tmp_path / "other", model, backend="memroy")


def test_pool_factor_1_stores_exactly_the_models_vectors_and_prompt_tokens_can_be_dropped(model, corpus, tmp_path):
    pages = list(iter_pages([corpus / "reports"]))
    embedded = model.embed_images([p.image for p in pages], batch_size=5)
    index = Index.create(tmp_path / "idx", model, pool_factor=1)
    index.add([corpus / "reports"], batch_size=16)
    snap = index.snapshot()
    by_id = {record.id: ref for ref, record in snap.records()}
    for page, vectors in zip(pages, embedded, strict=True):
        ref = by_id[page.id]
        stored, scales = snap.shards[ref >> 32].stored(ref & 0xFFFFFFFF, (ref & 0xFFFFFFFF) + 1)
        assert scales is None
        expected = vectors[vectors.abs().amax(-1) > 0].half()
        assert torch.equal(stored, expected)

    image_only = Index.create(tmp_path / "images", model, drop_prompt_tokens=True)
    image_only.add([corpus / "reports"], batch_size=16)
    tokens_per_page = model.processor.tokens_per_image
    assert {record.n_vectors for _, record in image_only.snapshot().records()} == {tokens_per_page}
    assert tokens_per_page < expected.shape[0]


def test_pages_of_different_sizes_index_like_the_model_embeds_them(tmp_path):
    """ColQwen2's dynamic resolution: page sizes differ, so batches are bucketed; vectors must not change."""
    torch.manual_seed(0)
    qwen = vlzoo.build("colqwen2_tiny").eval()
    folder = tmp_path / "pages"
    folder.mkdir()
    sizes = [(56, 56), (112, 56), (56, 168), (140, 112), (84, 84), (168, 112), (56, 84), (112, 112)]
    for i, (page, size) in enumerate(zip(synthetic_pages(len(sizes), 7), sizes, strict=True)):
        page.resize(size).save(folder / f"p{i}.png")
    index = Index.create(tmp_path / "idx", qwen)
    index.add([folder], batch_size=3)
    pages = list(iter_pages([folder]))
    scores = qwen.score(qwen.embed_queries(QUERIES), [qwen.embed_images([p.image])[0] for p in pages])
    lengths = {record.n_vectors for _, record in index.snapshot().records()}
    assert len(lengths) > 2, "the pages must give sequences of different lengths"
    for q, row in enumerate(index.search(QUERIES, k=len(pages))):
        expected = {pages[i].id: float(scores[q, i]) for i in range(len(pages))}
        assert max(abs(hit.score - expected[hit.id]) for hit in row) < FP16_TOL
