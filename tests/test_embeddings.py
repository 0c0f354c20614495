"""Embedding shapes, normalisation, padding invariance, head variants and input validation (tiny model)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import vlzoo
from tests.conftest import make_page
from vlzoo_core.errors import InputError, VlzooError

TOL = 1e-5
DIM = 128
WORDS = ["red", "blue", "circle", "glyph", "AB", "12", "page", "x"]

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

query_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
query_lists = st.lists(query_text, min_size=1, max_size=6)


@st.composite
def pages(draw):
    width, height = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "noise"]))
    if mode == "noise":
        return make_page(draw(st.integers(0, 10_000)), (width, height))
    colour = tuple(draw(st.integers(0, 255)) for _ in range(len(mode)))
    return Image.new(mode, (width, height), colour if len(colour) > 1 else colour[0])


page_lists = st.lists(pages(), min_size=1, max_size=4)


def assert_unit_where_valid(embeddings: torch.Tensor, mask: torch.Tensor) -> None:
    """Rows are unit-norm exactly where mask == 1, exactly zero elsewhere."""
    assert embeddings.shape[:2] == mask.shape
    norms = embeddings.norm(dim=-1)
    valid = mask.bool()
    assert torch.all((norms[valid] - 1).abs() <= TOL), norms[valid]
    assert torch.all(embeddings[~valid] == 0)


def brute_force_maxsim(q: torch.Tensor, d: torch.Tensor, q_mask: torch.Tensor, d_mask: torch.Tensor) -> torch.Tensor:
    scores = torch.zeros(q.shape[0], d.shape[0], dtype=torch.float64)
    for i in range(q.shape[0]):
        for j in range(d.shape[0]):
            sims = q[i][q_mask[i].bool()].double() @ d[j][d_mask[j].bool()].double().T
            scores[i, j] = sims.max(dim=1).values.sum()
    return scores


# ---- shapes and normalisation -----------------------------------------------------------------------------


@SETTINGS
@given(query_lists)
def test_query_embeddings_shape_and_unit_norm(tiny_model, queries):
    embeddings = tiny_model.embed_queries(queries)
    mask = tiny_model.processor.process_queries(queries)["attention_mask"]
    # the longest tokenised query, found by tokenising each query on its own
    lengths = [tiny_model.processor.process_queries([q])["input_ids"].shape[1] for q in queries]
    assert embeddings.shape == (len(queries), max(lengths), DIM)
    assert mask.sum(dim=1).tolist() == lengths
    assert embeddings.dtype == torch.float32
    assert_unit_where_valid(embeddings, mask)


@SETTINGS
@given(page_lists)
def test_image_embeddings_shape_and_unit_norm(tiny_model, images):
    embeddings = tiny_model.embed_images(images)
    mask = tiny_model.processor.process_images(images)["attention_mask"]
    assert embeddings.shape == (len(images), mask.shape[1], DIM)
    assert_unit_where_valid(embeddings, mask)
    # every page carries one image token per patch
    ids = tiny_model.processor.process_images(images)["input_ids"]
    cfg = tiny_model.recipe.encoder.config
    patches = (cfg["image_size"] // cfg["patch_size"]) ** 2
    assert torch.all((ids == tiny_model.image_token_id).sum(dim=1) == patches)


# ---- padding / batching invariance ------------------------------------------------------------------------


@SETTINGS
@given(query_text, st.lists(query_text, min_size=1, max_size=5), st.integers(0, 5))
def test_query_padding_invariance(tiny_model, query, others, position):
    position = min(position, len(others))
    batch = others[:position] + [query] + others[position:]
    # make sure at least one query in the batch is strictly longer, so `query` really gets padded
    batch.append(query + " " + " ".join(WORDS))
    alone = tiny_model.embed_queries([query])[0]
    together = tiny_model.embed_queries(batch)
    valid = int(tiny_model.processor.process_queries([query])["attention_mask"].sum())
    assert alone.shape[0] == valid
    assert together.shape[1] > valid
    assert (together[position, :valid] - alone).abs().max() <= TOL
    assert torch.all(together[position, valid:] == 0)


@SETTINGS
@given(query_lists, st.integers(1, 5))
def test_query_batch_size_invariance(tiny_model, queries, batch_size):
    one_batch = tiny_model.embed_queries(queries, batch_size=len(queries))
    one_by_one = tiny_model.embed_queries(queries, batch_size=1)
    chunked = tiny_model.embed_queries(queries, batch_size=batch_size)
    assert one_by_one.shape == one_batch.shape == chunked.shape
    assert (one_by_one - one_batch).abs().max() <= TOL
    assert (chunked - one_batch).abs().max() <= TOL


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page_lists, st.integers(1, 4))
def test_image_batch_invariance(tiny_model, images, batch_size):
    together = tiny_model.embed_images(images, batch_size=len(images))
    chunked = tiny_model.embed_images(images, batch_size=batch_size)
    assert (chunked - together).abs().max() <= TOL
    for i, image in enumerate(images):
        alone = tiny_model.embed_images([image])[0]
        assert alone.shape[0] <= together.shape[1]
        assert (together[i, : alone.shape[0]] - alone).abs().max() <= TOL
        assert torch.all(together[i, alone.shape[0] :] == 0)


# ---- head variants and document paths ---------------------------------------------------------------------


def test_pooled_single_vector_variant():
    torch.manual_seed(1)
    model = vlzoo.build(
        "colllava_tiny", query_head={"name": "mean_pooled"}, document_head={"name": "mean_pooled"}
    ).eval()
    assert not model.multi_vector
    queries = ["red circle", "blue glyph AB 12 12 12", "x"]
    images = [make_page(1), make_page(2, (20, 90))]
    q = model.embed_queries(queries)
    d = model.embed_images(images)
    assert q.shape == (3, DIM) and d.shape == (2, DIM)
    assert torch.all((q.norm(dim=-1) - 1).abs() <= TOL)
    assert torch.all((d.norm(dim=-1) - 1).abs() <= TOL)
    expected = torch.tensor([[float(q[i].double() @ d[j].double()) for j in range(2)] for i in range(3)])
    scores = model.score(q, d)
    assert scores.shape == (3, 2)
    assert torch.allclose(scores, expected.float(), atol=TOL, rtol=0)
    # pooled query embedding does not depend on padding either
    alone = model.embed_queries(["x"])
    assert (alone[0] - q[2]).abs().max() <= TOL


def test_vision_only_document_path():
    torch.manual_seed(2)
    model = vlzoo.build("colllava_tiny", document_path="vision").eval()
    cfg = model.recipe.encoder.config
    num_patches = (cfg["image_size"] // cfg["patch_size"]) ** 2
    assert num_patches == 16
    images = [make_page(3), make_page(4, (90, 17)), make_page(5, (14, 14))]
    d = model.embed_images(images)
    assert d.shape == (3, num_patches, DIM)
    assert torch.all((d.norm(dim=-1) - 1).abs() <= TOL)
    queries = ["red circle", "AB 12"]
    q = model.embed_queries(queries)
    scores = model.score(q, d)
    assert scores.shape == (2, 3)
    assert torch.all(torch.isfinite(scores))
    q_mask = model.processor.process_queries(queries)["attention_mask"]
    d_mask = torch.ones(d.shape[:2], dtype=torch.long)
    assert torch.allclose(scores, brute_force_maxsim(q, d, q_mask, d_mask).float(), atol=TOL, rtol=0)

    # the vision path does not run pages through the language model: its weights do not matter
    with torch.no_grad():
        for p in model.language_model.parameters():
            p.add_(torch.randn_like(p))
    assert (model.embed_images(images) - d).abs().max() <= TOL


def test_multi_vector_query_head_with_pooled_document_head_is_rejected():
    with pytest.raises((ValueError, VlzooError)):
        vlzoo.build("colllava_tiny", document_head={"name": "mean_pooled"})
    with pytest.raises((ValueError, VlzooError)):
        vlzoo.build("colllava_tiny", query_head={"name": "mean_pooled"})


# ---- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "   ", 42, None, b"red circle"], ids=repr)
def test_bad_query_raises_input_error_naming_index(tiny_model, bad):
    with pytest.raises(InputError) as info:
        tiny_model.embed_queries(["red circle", bad])
    assert "query 1" in str(info.value)


@pytest.fixture
def not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a PNG file\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["object", "int", "text_file", "text_file_str", "missing", "missing_str"])
def test_bad_image_raises_input_error_naming_index(tiny_model, tmp_path, not_an_image, kind):
    bad = {
        "object": object(),
        "int": 7,
        "text_file": not_an_image,
        "text_file_str": str(not_an_image),
        "missing": tmp_path / "does_not_exist.png",
        "missing_str": str(tmp_path / "does_not_exist.png"),
    }[kind]
    with pytest.raises(InputError) as info:
        tiny_model.embed_images([make_page(0), bad])
    assert "image 1" in str(info.value)


def test_image_file_path_is_accepted(tiny_model, tmp_path):
    path = tmp_path / "page.png"
    make_page(9).save(path)
    from_path = tiny_model.embed_images([path, str(path)])
    from_pil = tiny_model.embed_images([make_page(9)])
    assert (from_path[0] - from_pil[0]).abs().max() <= TOL
    assert (from_path[1] - from_pil[0]).abs().max() <= TOL


def test_bad_input_index_is_the_position_in_the_whole_input(tiny_model):
    """The index in the message must point at the item the caller passed, whatever the batch size."""
    with pytest.raises(InputError) as info:
        tiny_model.embed_queries(["red", "blue", "circle", ""], batch_size=2)
    assert "query 3" in str(info.value)
    with pytest.raises(InputError) as info:
        tiny_model.embed_images([make_page(i) for i in range(4)] + [object()])  # default batch_size=4
    assert "image 4" in str(info.value)


# ---- no vocabulary logits ---------------------------------------------------------------------------------


def test_forward_never_computes_vocabulary_logits(tiny_model):
    vocab_size = tiny_model.recipe.backbone.config["vocab_size"]
    assert vocab_size == tiny_model.language_model.get_input_embeddings().num_embeddings
    names = [name for name, _ in tiny_model.named_modules()]
    assert not any(name.split(".")[-1] == "lm_head" for name in names)

    seen: list[tuple[str, int]] = []
    handles = []

    def record(name):
        def hook(module, inputs, output):
            seen.append((name, output.shape[-1]))

        return hook

    for name, module in tiny_model.named_modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(record(name)))
    try:
        tiny_model.embed_queries(["red circle glyph", "AB"])
        tiny_model.embed_images([make_page(0)])
    finally:
        for handle in handles:
            handle.remove()
    called = {name for name, _ in seen}
    assert any(name.startswith("language_model.") for name in called)
    assert "heads.custom_text_proj.proj" in called and "heads.image_proj.proj" in called
    assert all(width != vocab_size for _, width in seen), [s for s in seen if s[1] == vocab_size]
