"""Make the one-training-step gradient fixture that vlzoo's ColQwen2 training is checked against, computed by
colpali-engine itself.

It writes ``tests/fixtures/colqwen2_grads/``:

* ``grads.safetensors``: after one ``loss.backward()``, every parameter's ``.grad`` (float32), keyed by its
  colpali-engine ``ColQwen2.named_parameters()`` name (``visual.…``, ``language_model.…``, ``custom_text_proj.…``:
  the checkpoint's key names).
* ``batch.safetensors``: the exact collated batch the model saw, with colpali-engine's key names
  (``query_input_ids``, ``query_attention_mask``, ``query_mm_token_type_ids``, ``doc_input_ids``,
  ``doc_attention_mask``, ``doc_mm_token_type_ids``, ``doc_pixel_values``, ``doc_image_grid_thw``).
* ``outputs.safetensors``: ``loss`` (shape [1]), ``query_embeddings`` and ``doc_embeddings`` (the two model outputs
  ``compute_loss`` passed to the loss), ``scores`` (the loss's normalised in-batch score matrix, before the
  temperature) and ``logits`` (``scores / temperature``, what the cross-entropy sees).
* ``manifest.json`` (versions, the loss class and all its arguments, the collator and call path, the batch, gradient
  norms, parameters without a gradient, side checks) and a short ``README.md``.

The model is the tiny colpali-engine checkpoint of ``tests/fixtures/colqwen2_colpali_engine/colqwen2-base`` (made by
``tools/make_colqwen_fixtures.py``), loaded with ``ColQwen2.from_pretrained(..., dtype=torch.float32)`` (default
attention implementation: sdpa), FULL fine-tuning (every parameter ``requires_grad=True``, no PEFT), ``model.train()``
(the model has no dropout, so train and eval modes compute the same). The processor is loaded as
``make_colqwen_fixtures.py`` loads it (``ColQwen2Processor.from_pretrained`` with the PIL image processor).

The batch: queries 0 and 2 of the fixture's ``inputs/queries.json`` ("red circle", "green triangle, 3 lines"), paired
with ``inputs/page_0.png`` and ``inputs/page_1.png`` (query i of the batch with page i). It goes through
colpali-engine's training path: ``ColPaliEngineDataset`` items -> ``VisualRetrieverCollator`` (what
``ColModelTraining`` gives the trainer) -> ``ContrastiveTrainer.compute_loss`` (a real ``ContrastiveTrainer`` on CPU,
called inside ``trainer.compute_loss_context_manager()`` as ``Trainer.training_step`` does) with ``ColbertLoss()`` at
its defaults (temperature 0.02, normalize_scores True, use_smooth_max False, pos_aware_negative_filtering False: what
``ColModelTrainingConfig`` defaults to and what colpali-engine's ``scripts/configs/qwen2/train_colqwen2_model.py``
builds for its default ``--loss ce``), then ``loss.backward()``. ``training_step`` would divide the loss by the
gradient-accumulation steps (1) and call ``accelerator.backward`` (= ``loss.backward()`` without mixed precision), so
the gradients are the same. The whole step is done twice in-process from a fresh model and checked bit-identical.

How to run it (from the repository root), in the separate virtualenv of ``tools/make_colqwen_fixtures.py`` (NOT
vlzoo's: colpali-engine must never become a vlzoo dependency), plus ``datasets`` (imported by colpali-engine's
collator and trainer modules; it is in colpali-engine's ``train`` extra, whose other packages are not needed here)::

    python3.11 -m venv /work/venv-colpali
    . /work/venv-colpali/bin/activate
    pip install torch==2.13.0                      # the CPU build; never an open-ended torch
    pip install "colpali-engine==0.3.18" "torch==2.13.0"
    pip install datasets "torch==2.13.0" "pillow==13.0.0" "numpy==2.4.6"
    python tools/make_colpali_grad_fixture.py     # --out DIR writes elsewhere (to compare two runs)

The fixture in the repository was made with Python 3.11.7, torch 2.13.0+cpu, colpali-engine 0.3.18, transformers
5.25.0 (what that recipe installs now; the checkpoint itself was saved with 5.24.0, and 5.24.0 gives bit-identical
files), peft 0.20.0, safetensors 0.8.0, tokenizers 0.23.3, pillow 13.0.0, numpy 2.4.6, datasets 5.2.0, accelerate
1.16.0; CPU, 1 thread. Two runs of the script write byte-identical files. torchvision is imported through
``make_colqwen_fixtures.make_torchvision_importable()`` (see there); pages are processed with the PIL backend.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / TOKENIZERS_PARALLELISM and imports torch.
import make_colqwen_fixtures as mcf  # noqa: E402

# The loss's MaxSim backend: "auto" (the default) falls back to this pure-torch einsum on CPU anyway
# (late-interaction-kernels is not installed and needs CUDA/MPS); set explicitly so the path is unambiguous.
os.environ.setdefault("COLPALI_SCORES_BACKEND", "torch")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

REPO = mcf.REPO
SOURCE = mcf.FIXTURES / "colqwen2_colpali_engine"
BASE_DIR = SOURCE / "colqwen2-base"
OUT_DIR = mcf.FIXTURES / "colqwen2_grads"

QUERY_INDICES = (0, 2)  # of inputs/queries.json; batch query i pairs with inputs/page_i.png
PAGE_FILES = ("page_0.png", "page_1.png")
LOSS_ARGS = (  # every ColbertLoss.__init__ argument (its defaults)
    "temperature", "normalize_scores", "use_smooth_max", "pos_aware_negative_filtering",
    "max_batch_size", "tau", "norm_tol", "filter_threshold", "filter_factor",
)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = mcf.versions()
    for name in ("datasets", "accelerate", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def load_inputs() -> tuple[list[str], list[Image.Image]]:
    all_queries = json.loads((SOURCE / "inputs" / "queries.json").read_text(encoding="utf-8"))
    queries = [all_queries[i] for i in QUERY_INDICES]
    pages = [Image.open(SOURCE / "inputs" / name) for name in PAGE_FILES]
    for page in pages:
        page.load()
    return queries, pages


def load_model(attn_implementation: str | None = None):
    from colpali_engine.models import ColQwen2

    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = ColQwen2.from_pretrained(str(BASE_DIR), dtype=torch.float32, **kwargs)
    for param in model.parameters():
        param.requires_grad_(True)
    model.train()
    return model


def load_processor():
    from colpali_engine.models import ColQwen2Processor

    return ColQwen2Processor.from_pretrained(str(BASE_DIR), image_processor=mcf.load_pil_image_processor(BASE_DIR))


def build_trainer(model, collator, dataset, loss_func, workdir: str):
    """The lightest real ContrastiveTrainer: CPU, no reporting/saving; never trained, only compute_loss is used."""
    from colpali_engine.trainer.contrastive_trainer import ContrastiveTrainer
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=workdir,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=len(dataset),
        save_strategy="no",
        logging_strategy="no",
        eval_strategy="no",
        remove_unused_columns=False,  # what ColModelTrainingConfig sets
        dataloader_num_workers=0,
    )
    return ContrastiveTrainer(
        model=model,
        train_dataset=dataset,
        eval_dataset=None,
        args=args,
        data_collator=collator,
        loss_func=loss_func,
        is_vision_model=True,  # what ColModelTraining passes (processor is not None)
    )


def one_step(queries, pages, *, attn_implementation=None, gradient_checkpointing=False) -> dict:
    """Fresh model, colpali-engine's collator and ContrastiveTrainer.compute_loss, one backward."""
    from colpali_engine.collators import VisualRetrieverCollator
    from colpali_engine.data.dataset import ColPaliEngineDataset
    from colpali_engine.loss.late_interaction_losses import ColbertLoss

    model = load_model(attn_implementation)
    if gradient_checkpointing:  # as colpali-engine's training configs set it (the Trainer does this in train())
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    processor = load_processor()
    collator = VisualRetrieverCollator(processor=processor, max_length=256)  # ColModelTrainingConfig.max_length
    dataset = ColPaliEngineDataset(
        [{"query": q, "pos_target": p} for q, p in zip(queries, pages, strict=True)]
    )
    loss_func = ColbertLoss()
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build_trainer(model, collator, dataset, loss_func, workdir)
        examples = [dataset[i] for i in range(len(dataset))]  # what the DataLoader hands the collate_fn, in order
        inputs = collator(examples)
        batch = mcf.tensors_of(inputs)  # before the model sees it (compute_loss does not modify it)
        model.zero_grad(set_to_none=True)
        model.train()
        inputs = trainer._prepare_inputs(inputs)  # as training_step (a no-op move to CPU)
        with trainer.compute_loss_context_manager():
            loss, (query_out, doc_out) = trainer.compute_loss(trainer.model, inputs, return_outputs=True)
        loss.backward()
    grads = {}
    no_grad = []
    for name, param in model.named_parameters():
        if param.grad is None:
            no_grad.append(name)
        else:
            grads[name] = param.grad.detach().to(torch.float32).clone().contiguous()
    with torch.no_grad():
        scores = loss_func._inbatch_scores(query_out.detach(), doc_out.detach())
    return {
        "model": model,
        "processor": processor,
        "collator": collator,
        "trainer_class": type(trainer),
        "loss_func": loss_func,
        "batch": batch,
        "loss": loss.detach().clone(),
        "query_embeddings": query_out.detach().clone().contiguous(),
        "doc_embeddings": doc_out.detach().clone().contiguous(),
        "scores": scores.clone().contiguous(),
        "logits": (scores / loss_func.temperature).contiguous(),
        "grads": grads,
        "no_grad": no_grad,
    }


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a
    )


def unpadded_scores(q: torch.Tensor, d: torch.Tensor, q_mask: torch.Tensor, d_mask: torch.Tensor) -> torch.Tensor:
    """MaxSim over real tokens only, normalised by query length (to see whether zero padding changed a max)."""
    out = torch.empty(q.shape[0], d.shape[0])
    for i in range(q.shape[0]):
        qi = q[i][q_mask[i].bool()]
        for j in range(d.shape[0]):
            dj = d[j][d_mask[j].bool()]
            out[i, j] = (qi @ dj.T).amax(dim=1).sum() / qi.shape[0]
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def readme(m: dict) -> str:
    la = m["loss"]["args"]
    v = m["versions"]
    top = ", ".join(f"`{n}` {g:.4g}" for n, g in m["grad_norm_top5"])
    return f"""# One ColQwen2 training step's gradients, computed by colpali-engine

Generated by `tools/make_colpali_grad_fixture.py` (read its docstring; do not edit these files by hand), with
colpali-engine {v["colpali-engine"]}, transformers {v["transformers"]}, torch {v["torch"]}, peft {v["peft"]}, Python {v["python"]}; CPU, 1 thread, float32.

The model is `../colqwen2_colpali_engine/colqwen2-base` (colpali-engine `ColQwen2`, attention `{m["attn_implementation"]}`), fully fine-tuned
(all {m["n_parameters"]} parameters trainable, no PEFT, `model.train()`; the model has no dropout). Batch: {len(m["batch"]["queries"])} (query, page) pairs,
{json.dumps(m["batch"]["queries"])} with `inputs/{m["batch"]["page_files"][0]}`, `inputs/{m["batch"]["page_files"][1]}` of that fixture (query i with page i),
collated by `VisualRetrieverCollator` and scored by `ContrastiveTrainer.compute_loss` (two forward passes: queries, then pages)
with `ColbertLoss(temperature={la["temperature"]}, normalize_scores={la["normalize_scores"]}, use_smooth_max={la["use_smooth_max"]},
pos_aware_negative_filtering={la["pos_aware_negative_filtering"]})` (the class defaults), then one `loss.backward()`.

- `grads.safetensors`: every parameter's gradient, keyed by colpali-engine's `named_parameters()` name ({len(m["grad_keys"])} tensors;
  parameters without a gradient: {m["params_without_grad"] or "none"}).
- `batch.safetensors`: the collated batch as the model saw it (colpali-engine's keys: {", ".join(f"`{k}`" for k in m["batch"]["keys"])}).
- `outputs.safetensors`: `loss` [1], `query_embeddings` {m["outputs"]["query_embeddings"]}, `doc_embeddings` {m["outputs"]["doc_embeddings"]},
  `scores` (normalised MaxSim, 2 x 2) and `logits` (`scores / temperature`).
- `manifest.json`: versions, the loss and its arguments, the call path, the batch, gradient norms, side checks.

Loss = {m["loss"]["value"]:.9g}; total gradient norm {m["grad_norm_total"]:.6g}; largest per-parameter gradient norms: {top}.
The `<|endoftext|>` row ({m["embedding"]["padding_idx"]}, the embedding's `padding_idx`, also the query augmentation token) of
`language_model.embed_tokens.weight` gets a gradient of exactly 0. Two in-process runs, and two runs of the script, are bit-identical.
"""


def make(out_dir: Path) -> dict:
    torch.set_num_threads(1)  # bit-stable CPU results
    tv_status = mcf.make_torchvision_importable()
    queries, pages = load_inputs()

    run = one_step(queries, pages)
    again = one_step(queries, pages)
    assert bit_identical(run["grads"], again["grads"]), "two in-process runs differ"
    assert torch.equal(run["loss"], again["loss"]) and torch.equal(run["query_embeddings"], again["query_embeddings"])
    assert torch.equal(run["doc_embeddings"], again["doc_embeddings"])
    assert run["no_grad"] == again["no_grad"]
    del again
    for name, g in run["grads"].items():
        assert torch.isfinite(g).all(), name

    model, processor, loss_func, batch = run["model"], run["processor"], run["loss_func"], run["batch"]
    tokenizer = processor.tokenizer
    aug_token = processor.query_augmentation_token
    aug_id = tokenizer.convert_tokens_to_ids(aug_token)
    embed = model.language_model.embed_tokens
    pad_idx = embed.padding_idx
    pad_token_id = tokenizer.pad_token_id
    g_embed = run["grads"]["language_model.embed_tokens.weight"]
    rows_nonzero = [i for i in range(g_embed.shape[0]) if bool(g_embed[i].abs().max() > 0)]
    ids_in_batch = sorted(
        set(batch["query_input_ids"].flatten().tolist()) | set(batch["doc_input_ids"].flatten().tolist())
    )

    # Side checks (not saved): gradient checkpointing as colpali-engine's configs use it, and eager attention.
    side = {}
    gc = one_step(queries, pages, gradient_checkpointing=True)
    side["gradient_checkpointing_use_reentrant_false"] = {
        "grads_max_abs_diff": max_abs_diff(run["grads"], gc["grads"]),
        "bit_identical": bit_identical(run["grads"], gc["grads"]),
        "loss_diff": float(gc["loss"] - run["loss"]),
    }
    del gc
    eager = one_step(queries, pages, attn_implementation="eager")
    side["attn_implementation_eager"] = {
        "grads_max_abs_diff": max_abs_diff(run["grads"], eager["grads"]),
        "grads_max_rel_diff_per_param_max": max(
            float((run["grads"][k] - eager["grads"][k]).norm() / max(run["grads"][k].norm(), 1e-30))
            for k in run["grads"]
        ),
        "loss_diff": float(eager["loss"] - run["loss"]),
    }
    del eager

    q_mask, d_mask = batch["query_attention_mask"], batch["doc_attention_mask"]
    # The same pages and processor as ../colqwen2_colpali_engine: its page tensors must come back unchanged, and
    # each query's unpadded ids too (that fixture padded 3 queries, this batch 2).
    from safetensors.torch import load_file

    source = load_file(str(SOURCE / "processor_outputs.safetensors"))
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(batch[f"doc_{key}"], source[f"page_{key}"]), key
    for row, qi in enumerate(QUERY_INDICES):
        mine = batch["query_input_ids"][row][q_mask[row].bool()]
        theirs = source["query_input_ids"][qi][source["query_attention_mask"][qi].bool()]
        assert torch.equal(mine, theirs), row
    lengths = (run["query_embeddings"][:, :, 0] != 0).sum(dim=1)
    unpadded = unpadded_scores(run["query_embeddings"], run["doc_embeddings"], q_mask, d_mask)

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.iterdir():
        if old.is_file():
            old.unlink()
    save_file(run["grads"], str(out_dir / "grads.safetensors"))
    save_file(batch, str(out_dir / "batch.safetensors"))
    outputs = {
        "loss": run["loss"].reshape(1).to(torch.float32).contiguous(),
        "query_embeddings": run["query_embeddings"],
        "doc_embeddings": run["doc_embeddings"],
        "scores": run["scores"],
        "logits": run["logits"],
    }
    save_file(outputs, str(out_dir / "outputs.safetensors"))

    norms = {name: float(g.norm()) for name, g in run["grads"].items()}
    total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in run["grads"].values()))
    top5 = sorted(norms.items(), key=lambda kv: kv[1], reverse=True)[:5]
    loss_value = float(run["loss"])
    manifest = {
        "library": "colpali-engine",
        "versions": versions(),
        "torchvision": tv_status,
        "torch_num_threads": torch.get_num_threads(),
        "device": "cpu",
        "dtype": "float32",
        "checkpoint": "../colqwen2_colpali_engine/colqwen2-base",
        "model_class": "colpali_engine.models.ColQwen2",
        "model_load": "ColQwen2.from_pretrained(colqwen2-base, dtype=torch.float32)",
        "attn_implementation": model.config._attn_implementation,
        "training": {
            "full_finetuning": True,
            "peft": None,
            "model_train_mode": True,
            "dropout_modules": [n for n, mod in model.named_modules() if isinstance(mod, torch.nn.Dropout)],
            "text_attention_dropout": model.config.text_config.attention_dropout,
            "gradient_checkpointing": False,
        },
        "processor_class": "colpali_engine.models.ColQwen2Processor",
        "processor_load": "ColQwen2Processor.from_pretrained(colqwen2-base, image_processor="
        "AutoImageProcessor.from_pretrained(colqwen2-base, backend='pil'))",
        "image_processor_class": type(processor.image_processor).__name__,
        "collator": {
            "class": "colpali_engine.collators.VisualRetrieverCollator",
            "max_length": run["collator"].max_length,
            "max_length_used": False,
            "query_prefix_key": run["collator"].query_prefix,
            "pos_doc_prefix_key": run["collator"].pos_doc_prefix,
            "neg_doc_prefix_key": run["collator"].neg_doc_prefix,
            "query_text": "processor.query_prefix + query + processor.query_augmentation_token * 10, then "
            "processor.process_texts (padding='longest', left)",
            "doc": "processor.process_images (visual prompt per image, padding='longest', left; pixel_values "
            "zero-padded per image)",
        },
        "trainer": {
            "class": f"{run['trainer_class'].__module__}.{run['trainer_class'].__name__}",
            "training_arguments": "TrainingArguments(output_dir=<tmp>, use_cpu=True, report_to='none', "
            "per_device_train_batch_size=2, save_strategy='no', logging_strategy='no', eval_strategy='no', "
            "remove_unused_columns=False, dataloader_num_workers=0)",
        },
        "call_path": [
            "dataset = ColPaliEngineDataset([{'query': q, 'pos_target': page}, ...])",
            "inputs = VisualRetrieverCollator(processor, max_length=256)([dataset[0], dataset[1]])",
            "model.train(); inputs = trainer._prepare_inputs(inputs)",
            "with trainer.compute_loss_context_manager(): loss, (query_out, doc_out) = "
            "ContrastiveTrainer.compute_loss(model, inputs, return_outputs=True)",
            "  -> query_out = model(**{k[len('query_'):]: v for query_* keys})",
            "  -> doc_out = model(**{k[len('doc_'):]: v for doc_* keys})",
            "  -> loss = ColbertLoss()(query_embeddings=query_out, doc_embeddings=doc_out, offset=0)",
            "loss.backward()",
        ],
        "call_path_note": "Trainer.training_step would do the same plus loss / gradient_accumulation_steps (1) and "
        "accelerator.backward(loss) (= loss.backward() without mixed precision or DeepSpeed).",
        "loss": {
            "class": "colpali_engine.loss.late_interaction_losses.ColbertLoss",
            "args": {
                k: int(loss_func.idx_buffer.numel()) if k == "max_batch_size" else getattr(loss_func, k)
                for k in LOSS_ARGS
            },
            "defaults_source": "ColbertLoss() class defaults = ColModelTrainingConfig.loss_func default = "
            "scripts/configs/qwen2/train_colqwen2_model.py --loss ce (tau 0.02)",
            "scores_backend": os.environ["COLPALI_SCORES_BACKEND"],
            "value": loss_value,
            "value_hex": loss_value.hex(),
            "query_lengths_used_for_normalisation": lengths.tolist(),
            "target": list(range(len(queries))),
        },
        "scores": run["scores"].tolist(),
        "scores_over_unpadded_tokens_only": unpadded.tolist(),
        "scores_max_abs_diff_padded_vs_unpadded": float((unpadded - run["scores"]).abs().max()),
        "batch": {
            "queries": queries,
            "query_indices_in_inputs_queries_json": list(QUERY_INDICES),
            "page_files": list(PAGE_FILES),
            "pairs": "batch query i is paired with batch page i (target i)",
            "query_texts_as_fed": [
                processor.query_prefix + q + aug_token * 10 for q in queries
            ],
            "keys": sorted(batch),
            "matches_colqwen2_colpali_engine_processor_outputs": "doc_* == page_* exactly; each query's unpadded "
            "input_ids == that fixture's query_input_ids row (queries 0 and 2) without its padding",
            "shapes": {k: list(v.shape) for k, v in sorted(batch.items())},
            "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in sorted(batch.items())},
        },
        "outputs": {k: list(v.shape) for k, v in outputs.items()},
        "embedding": {
            "module": "language_model.embed_tokens",
            "padding_idx": pad_idx,
            "config_text_pad_token_id": model.config.text_config.pad_token_id,
            "tokenizer_pad_token": tokenizer.pad_token,
            "tokenizer_pad_token_id": pad_token_id,
            "query_augmentation_token": aug_token,
            "query_augmentation_token_id": aug_id,
            "query_augmentation_count": 10,
            "queries_contain_pad_token_id": bool((batch["query_input_ids"] == pad_token_id).any()),
            "query_pad_token_count_per_row": (batch["query_input_ids"] == pad_token_id).sum(dim=1).tolist(),
            "query_attention_mask_sum_per_row": q_mask.sum(dim=1).tolist(),
            "docs_contain_pad_token_id": bool((batch["doc_input_ids"] == pad_token_id).any()),
            "padding_row_grad_max_abs": float(g_embed[pad_idx].abs().max()) if pad_idx is not None else None,
            "token_ids_in_batch": ids_in_batch,
            "embedding_rows_with_nonzero_grad": rows_nonzero,
        },
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "n_parameter_tensors": len(list(model.parameters())),
        "grad_keys": sorted(run["grads"]),
        "params_without_grad": run["no_grad"],
        "grad_norm_total": total,
        "grad_norm_top5": top5,
        "grad_max_abs": max((float(g.abs().max()), n) for n, g in run["grads"].items())[0],
        "grad_max_abs_param": max((float(g.abs().max()), n) for n, g in run["grads"].items())[1],
        "grad_norms": norms,
        "side_checks": side,
        "determinism": "two in-process runs from a fresh model are bit-identical (checked by the script); two runs "
        "of the script write byte-identical files",
    }
    manifest["params_without_grad_expected"] = (
        "every parameter takes part in both forward passes' graph (the vision tower only in the page pass), so none "
        "is expected to lack a gradient" if not run["no_grad"] else "see the list"
    )
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out_dir / "README.md").write_text(readme(manifest))
    mcf.assert_no_pickles(out_dir)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    m = make(args.out)
    print(json.dumps({k: m[k] for k in ("loss", "grad_norm_total", "grad_norm_top5", "params_without_grad")}, indent=1))
    print(json.dumps(m["embedding"], indent=1))
    print(json.dumps(m["side_checks"], indent=1))
    for path in sorted(args.out.iterdir()):
        print(f"{path.name}  {path.stat().st_size}  {sha256(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
