"""Checkpoints saved by colpali-engine and by transformers' ColQwen2ForRetrieval load into vlzoo and give the
embeddings those libraries computed (tests/fixtures, made by tools/make_colqwen_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vlzoo

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOLERANCE = 1e-4


def _inputs(fixture: Path) -> tuple[list[str], list[Image.Image], dict[str, torch.Tensor], dict]:
    manifest = json.loads((fixture / "manifest.json").read_text(encoding="utf-8"))
    queries = json.loads((fixture / "inputs" / "queries.json").read_text(encoding="utf-8"))
    pages = [Image.open(fixture / "inputs" / f"page_{i}.png").convert("RGB") for i in range(2)]
    return queries, pages, load_file(str(fixture / "embeddings.safetensors")), manifest


def _valid_rows(embeddings: torch.Tensor) -> list[torch.Tensor]:
    """Each row's non-padding vectors in order; the libraries pad on the left, vlzoo on the right."""
    return [row[row.abs().amax(-1) > 0] for row in embeddings]


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    worst = 0.0
    for mine, expected in zip(_valid_rows(ours), _valid_rows(theirs), strict=True):
        assert mine.shape == expected.shape
        worst = max(worst, (mine - expected).abs().max().item())
    assert worst <= TOLERANCE
    return worst


def _budget(manifest: dict) -> dict:
    return {"processor": {"config": {"min_pixels": manifest["min_pixels"], "max_pixels": manifest["max_pixels"]}}}


def test_colpali_engine_base_and_adapter_give_colpali_engine_embeddings():
    fixture = FIXTURES / "colqwen2_colpali_engine"
    queries, pages, expected, manifest = _inputs(fixture)
    model = vlzoo.build("colqwen2", weights=str(fixture / "colqwen2-base"),
                        adapter=str(fixture / "colqwen2-adapter"), **_budget(manifest)).eval()
    _assert_same(model.embed_queries(queries), expected["query_embeddings"])
    _assert_same(model.embed_images(pages), expected["page_embeddings"])
    scores = model.score(model.embed_queries(queries), model.embed_images(pages))
    assert torch.allclose(scores, expected["scores"], atol=1e-3)
    # colpali-engine's method names work on the processor, so porting code is a one-import change
    processor = model.processor
    batch = processor.process_queries(queries)
    assert torch.allclose(processor.score(model(**batch), model(**processor.process_images(pages))), scores,
                          atol=1e-5)


def test_the_adapter_matters():
    fixture = FIXTURES / "colqwen2_colpali_engine"
    queries, _, expected, manifest = _inputs(fixture)
    base = vlzoo.build("colqwen2", weights=str(fixture / "colqwen2-base"), **_budget(manifest)).eval()
    _assert_same(base.embed_queries(queries), expected["query_embeddings_base"])
    with pytest.raises(AssertionError):
        _assert_same(base.embed_queries(queries), expected["query_embeddings"])


def test_transformers_colqwen2_for_retrieval_gives_transformers_embeddings():
    fixture = FIXTURES / "colqwen2_transformers"
    queries, pages, expected, manifest = _inputs(fixture)
    model = vlzoo.build("colqwen2", weights=str(fixture / "colqwen2-hf"), **_budget(manifest)).eval()
    assert model.processor.config.query_prefix == manifest["query_prefix"]
    _assert_same(model.embed_queries(queries), expected["query_embeddings"])
    _assert_same(model.embed_images(pages), expected["page_embeddings"])


def test_loaded_checkpoints_train_and_round_trip(tmp_path):
    fixture = FIXTURES / "colqwen2_transformers"
    queries, pages, _, manifest = _inputs(fixture)
    model = vlzoo.build("colqwen2", weights=str(fixture / "colqwen2-hf"), **_budget(manifest)).eval()
    model.save_pretrained(tmp_path / "saved")
    again = vlzoo.load(tmp_path / "saved")
    assert torch.equal(again.embed_queries(queries), model.embed_queries(queries))
    assert torch.equal(again.embed_images(pages), model.embed_images(pages))
