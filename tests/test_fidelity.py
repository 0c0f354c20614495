"""Training keeps each checkpoint's semantics: the pad token's embedding row gets no gradient, as in the library
that trained the checkpoint (transformers' `padding_idx`), for every family and its tiny recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vlzoo
from vlzoo_core.errors import VlzooError

FIXTURES = Path(__file__).parent / "fixtures"


def token_embedding(model) -> torch.nn.Embedding:
    return model.language_model.get_input_embeddings()


@pytest.mark.parametrize("name", ["colllava_tiny", "colqwen2_tiny"])
def test_the_pad_token_row_gets_no_gradient(name):
    torch.manual_seed(0)
    model = vlzoo.build(name).train()
    embedding = token_embedding(model)
    pad = embedding.padding_idx
    assert pad == model.processor.tokenizer.pad_token_id == 0
    # the pad token as a real, attended token (colqwen's ten query augmentation tokens are that token too)
    batch = model.processor.process_queries(["red circle and blue letter K", "a<|endoftext|>"])
    assert bool(((batch["input_ids"] == pad) & batch["attention_mask"].bool()).any())
    model.encode_queries(**batch).sum().backward()
    grad = embedding.weight.grad
    assert float(grad[pad].abs().max()) == 0.0
    assert float(grad.abs().sum()) > 0.0  # the other rows do learn


def test_a_checkpoint_keeps_its_pad_token_id():
    model = vlzoo.build("colqwen2", weights=FIXTURES / "colqwen2_colpali_engine" / "colqwen2-base")
    assert token_embedding(model).padding_idx == 320  # config.json: text_config.pad_token_id
    assert model.recipe.backbone.config["pad_token_id"] == 320


def test_a_pad_token_outside_the_vocabulary_is_refused():
    with pytest.raises(VlzooError, match="pad_token_id 600 is outside the vocabulary"):
        vlzoo.build("colqwen2_tiny", backbone={"config": {"pad_token_id": 600}})


# ---- one training step, gradient for gradient, against colpali-engine --------------------------------------


def test_one_training_step_gives_colpali_engines_gradients():
    """tools/make_colpali_grad_fixture.py ran one full fine-tuning step of colpali-engine 0.3.18's ColQwen2 (its
    collator, ContrastiveTrainer.compute_loss, ColbertLoss) on the tiny checkpoint; vlzoo's step on the same
    queries and pages must give the same loss and, for every parameter, the same gradient."""
    from PIL import Image
    from safetensors.torch import load_file

    from vlzoo_core.model.builder import checkpoint_format
    from vlzoo_core.training.loss_config import ColbertCEConfig
    from vlzoo_core.training.losses import ColbertCELoss

    fixture, inputs = FIXTURES / "colqwen2_grads", FIXTURES / "colqwen2_colpali_engine"
    manifest = json.loads((fixture / "manifest.json").read_text(encoding="utf-8"))
    budget = json.loads((inputs / "manifest.json").read_text(encoding="utf-8"))
    expected_grads = load_file(str(fixture / "grads.safetensors"))
    expected_loss = load_file(str(fixture / "outputs.safetensors"))["loss"]
    model = vlzoo.build("colqwen2", weights=inputs / "colqwen2-base", processor={"config": {
        "min_pixels": budget["min_pixels"], "max_pixels": budget["max_pixels"]}}).train()
    pages = [Image.open(inputs / "inputs" / name).convert("RGB") for name in manifest["batch"]["page_files"]]
    queries = model(**model.processor.process_queries(manifest["batch"]["queries"]))
    documents = model(**model.processor.process_images(pages))
    args = manifest["loss"]["args"]
    loss = ColbertCELoss(ColbertCEConfig(temperature=args["temperature"], normalize_scores=args["normalize_scores"],
                                         use_smooth_max=args["use_smooth_max"],
                                         pos_aware_negative_filtering=args["pos_aware_negative_filtering"]))
    value = loss(queries, documents)
    value.backward()
    assert value.item() == pytest.approx(expected_loss.item(), abs=1e-6)

    key_map = checkpoint_format(vlzoo.registry(), model.recipe).map_key
    ours = dict(model.named_parameters())
    compared, worst = set(), 0.0
    for name, expected in expected_grads.items():
        target = key_map(name)
        assert target in ours, name
        got = ours[target].grad
        assert got is not None, target
        worst = max(worst, (got - expected).abs().max().item())
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (target, (got - expected).abs().max().item())
        compared.add(target)
    assert compared == set(ours), set(ours) - compared  # every parameter, none left out
    pad = manifest["embedding"]["padding_idx"]
    assert float(token_embedding(model).weight.grad[pad].abs().max()) == 0.0


def test_colllava_training_step_gives_the_gradients_of_transformers_llava(tmp_path):
    """The same step on transformers' LlavaForConditionalGeneration (the tiny architecture, its pad token 0 as
    the embedding's padding index) with vlzoo's heads on top: same loss, same gradient for every parameter."""
    import copy

    from tests.conftest import make_page
    from tests.test_checkpoints import OURS_TO_HF, make_hf_model, rename, write_v5
    from vlzoo_core.training.loss_config import ColbertCEConfig
    from vlzoo_core.training.losses import ColbertCELoss

    hf = make_hf_model(seed=3, text={"pad_token_id": 0}).train()
    model = vlzoo.build("colllava_tiny", weights=write_v5(tmp_path / "llava", hf), dtype="float32").train()
    assert token_embedding(model).padding_idx == hf.model.language_model.embed_tokens.padding_idx == 0
    queries = model.processor.process_queries(["red circle and blue letter K", "a green<|endoftext|> square"])
    assert bool(((queries["input_ids"] == 0) & queries["attention_mask"].bool()).any())  # the pad token, attended
    pages = model.processor.process_images([make_page(1), make_page(2)])
    loss = ColbertCELoss(ColbertCEConfig())
    ours = loss(model(**queries), model(**pages))
    ours.backward()

    heads = {id(head): copy.deepcopy(head) for head in (model.query_head, model.document_head)}
    for head in heads.values():
        head.zero_grad()
    q_hidden = hf.model(input_ids=queries["input_ids"], attention_mask=queries["attention_mask"]).last_hidden_state
    d_hidden = hf.model(**pages).last_hidden_state
    reference = loss(heads[id(model.query_head)](q_hidden, queries["attention_mask"]),
                     heads[id(model.document_head)](d_hidden, pages["attention_mask"]))
    reference.backward()
    assert ours.item() == pytest.approx(reference.item(), abs=1e-6)

    hf_params = dict(hf.named_parameters())
    head_params = {f"heads.{module}.{name}": parameter for module, head in model.heads.items()
                   for name, parameter in heads[id(head)].named_parameters()}
    unused = []
    for name, parameter in model.named_parameters():
        expected = head_params[name] if name in head_params else hf_params[rename(name, OURS_TO_HF)]
        if parameter.grad is None:  # outside the computation in both, e.g. SigLIP's unused post-layernorm
            assert expected.grad is None, name
            unused.append(name)
            continue
        assert torch.allclose(parameter.grad, expected.grad, atol=1e-5, rtol=0), name
    assert all(name.startswith("vision_tower.model.post_layernorm.") for name in unused), unused
    assert float(token_embedding(model).weight.grad[0].abs().max()) == 0.0
