"""Peak memory of ONE contrastive training step: a plain step on the whole batch vs GradCache in chunks.

The model is colllava_tiny scaled up so that activations dominate the memory of a step (defaults:
224 px pages = 256 image tokens per page; a 6-layer Qwen2 of width 256), trained with
examples/quickstart.yaml's LoRA choice (vision_tower full, projector full, language_model LoRA r=16
alpha=32, heads full) with LoRA dropout 0, and colbert_ce (temperature 0.02). The batch is synthetic
pages from vlzoo_core.data.synthetic collated by ContrastiveCollator with the model's processor.

Both ways go through the real code: a minimal RetrievalTrainer (TrainingArguments(output_dir=tmp,
report_to="none", use_cpu=True) on CPU) and its training_step, with chunk_size=None for the plain step
(transformers' Trainer.training_step: compute_loss + backward) and chunk_size=CHUNK for GradCache
(RetrievalTrainer._grad_cache_step).

Memory: each measurement runs in its own fresh subprocess: build the model, collate the batch, run one
warm-up step of the same kind, zero the gradients (kept allocated), then reset the peak-RSS mark
(VmHWM via /proc/self/clear_refs), run the measured step and report peak RSS minus the RSS just before
it. glibc's malloc is told to serve blocks of 64 KiB and more with mmap (MALLOC_MMAP_THRESHOLD_), so
freed activations go back to the kernel and RSS follows live memory (`--malloc-mmap-threshold 0`
leaves malloc alone). On CUDA the same is done with torch.cuda.max_memory_allocated.
A plain step on one chunk is measured too, as the floor GradCache can approach.

Correctness: in one more subprocess, the same model and batch go through both steps; the script prints
the max abs difference of the losses and of every trainable parameter's gradient.

Example:
  python benchmarks/grad_cache_memory.py                 # batch 16 = 4 chunks of 4
  python benchmarks/grad_cache_memory.py --batch 32 --chunk 8 --image-size 336
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MemoryProbe, emit, environment, run_worker, table  # noqa: E402

MODES = {
    "plain": "plain step, whole batch",
    "gradcache": "GradCache, chunks",
    "plain_chunk": "plain step, one chunk only",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="contrastive batch (queries = pages); default 16")
    parser.add_argument("--chunk", type=int, default=4, help="GradCache chunk size; default 4")
    parser.add_argument("--image-size", type=int, default=224, help="encoder image size (px); default 224")
    parser.add_argument("--hidden", type=int, default=256, help="LM hidden size; default 256")
    parser.add_argument("--intermediate", type=int, default=1024, help="LM MLP size; default 1024")
    parser.add_argument("--layers", type=int, default=6, help="LM layers; default 6")
    parser.add_argument("--heads", type=int, default=8, help="LM attention heads; default 8")
    parser.add_argument("--kv-heads", type=int, default=4, help="LM key/value heads; default 4")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=65536,
                        help="MALLOC_MMAP_THRESHOLD_ for the memory workers (bytes); 0 leaves malloc alone")
    parser.add_argument("--repeats", type=int, default=3,
                        help="extra plain / GradCache step pairs timed in the check worker (min is reported); default 3")
    parser.add_argument("--skip-memory", action="store_true", help="only the loss/gradient check")
    parser.add_argument("--skip-check", action="store_true", help="only the memory measurements")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--_worker", choices=[*MODES, "check"], default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- shared setup ----------------------------------------------------------------------------------------------


def overrides(opts: argparse.Namespace) -> dict:
    return {
        "encoder": {"config": {"image_size": opts.image_size}},  # the processor follows the encoder's size
        "backbone": {"config": {"hidden_size": opts.hidden, "intermediate_size": opts.intermediate,
                                "num_hidden_layers": opts.layers, "num_attention_heads": opts.heads,
                                "num_key_value_heads": opts.kv_heads}},
    }


def setup(opts: argparse.Namespace, output_dir: str):
    """(trainer, model, batch): the model built and LoRA-wrapped, one collated batch, a minimal trainer."""
    import torch
    from transformers import TrainingArguments, set_seed

    import vlzoo
    from vlzoo_core.data.collator import ContrastiveCollator
    from vlzoo_core.data.synthetic import synthetic_rows
    from vlzoo_core.model.lora import apply_lora
    from vlzoo_core.training.losses import ColbertCELoss
    from vlzoo_core.training.run_config import LoraSection, SyntheticSource
    from vlzoo_core.training.run import resolve_rule_set
    from vlzoo_core.training.trainer import ContrastiveModel, RetrievalTrainer

    if opts.threads:
        torch.set_num_threads(opts.threads)
    registry = vlzoo.registry()
    set_seed(0)
    retriever = vlzoo.build("colllava_tiny", device=opts.device, **overrides(opts))
    section = LoraSection(components={"vision_tower": "full", "projector": "full", "language_model": "lora",
                                      "heads": "full"}, r=16, alpha=32, dropout=0.0)
    rule_set = resolve_rule_set(section, registry.recipe("colllava_tiny"), registry)
    model = ContrastiveModel(apply_lora(retriever, rule_set))
    rows = list(synthetic_rows(SyntheticSource(pages=opts.batch, seed=0, split="train")))
    batch = ContrastiveCollator(retriever.processor, strict=True)(rows)
    args = TrainingArguments(output_dir=output_dir, report_to="none", use_cpu=opts.device == "cpu",
                             per_device_train_batch_size=opts.batch)
    trainer = RetrievalTrainer(model=model, args=args, loss_fn=ColbertCELoss({"temperature": 0.02}),
                               chunk_size=None, eval_set=None, eval_metrics=[], eval_batch_size=1,
                               base_weights=None, rule_set=rule_set)
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before each step (no accumulation)
    return trainer, trainer.model, batch


def rows_of(batch: dict, count: int) -> dict:
    return {part: {key: value[:count] for key, value in inputs.items()} for part, inputs in batch.items()}


def step(trainer, model, batch: dict, chunk: int | None):
    """One training step through RetrievalTrainer.training_step (GradCache when chunk < batch)."""
    trainer.chunk_size = chunk
    return trainer.training_step(model, batch)


def shapes(batch: dict) -> str:
    return "; ".join(f"{part} " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())
                     for part, inputs in batch.items())


# ---- workers -----------------------------------------------------------------------------------------------------


def memory_worker(mode: str, opts: argparse.Namespace) -> dict:
    import torch

    with tempfile.TemporaryDirectory(prefix="vlzoo-gc-") as tmp:
        trainer, model, batch = setup(opts, tmp)
        rows, chunk = opts.batch, None
        if mode == "gradcache":
            chunk = opts.chunk
        elif mode == "plain_chunk":
            rows, batch = opts.chunk, rows_of(batch, opts.chunk)
        step(trainer, model, batch, chunk)  # warm-up: allocates the gradients, lazy kernels, caches
        model.zero_grad(set_to_none=False)
        gc.collect()
        probe = MemoryProbe(opts.device)
        probe.start()
        started = time.perf_counter()
        loss = step(trainer, model, batch, chunk)
        if opts.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        memory = probe.stop()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"mode": mode, "what": MODES[mode], "rows": rows, "chunk": chunk or rows, "loss": float(loss),
            "step_s": seconds, "params": params, "trainable": trainable, "threads": torch.get_num_threads(),
            **memory}


def check_worker(opts: argparse.Namespace) -> dict:
    import torch

    with tempfile.TemporaryDirectory(prefix="vlzoo-gc-") as tmp:
        trainer, model, batch = setup(opts, tmp)
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]

        seconds: dict[str, list[float]] = {"plain": [], "gradcache": []}

        def run(chunk):
            model.zero_grad(set_to_none=True)
            if opts.device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            loss = step(trainer, model, batch, chunk)
            if opts.device == "cuda":
                torch.cuda.synchronize()
            seconds["plain" if chunk is None else "gradcache"].append(time.perf_counter() - started)
            return loss.double(), {name: p.grad.detach().double().clone() for name, p in trainable if p.grad is not None}

        loss_a, grads_a = run(None)
        loss_b, grads_b = run(opts.chunk)
        for _ in range(opts.repeats):  # timing only, side by side, with the ordinary malloc
            run(None)
            run(opts.chunk)
    missing = sorted(set(grads_a) ^ set(grads_b))
    common = sorted(grads_a.keys() & grads_b.keys())
    scale = max(float(grads_a[name].abs().max()) for name in common)
    worst_name, worst, worst_rel, negligible = None, 0.0, 0.0, 0
    for name in common:
        diff = float((grads_a[name] - grads_b[name]).abs().max())
        if diff >= worst:
            worst_name, worst = name, diff
        size = float(grads_a[name].abs().max())
        if size <= 1e-3 * scale:  # e.g. LoRA A matrices while B is still zero: pure rounding noise
            negligible += 1
            continue
        worst_rel = max(worst_rel, diff / size)
    return {"loss_plain": float(loss_a), "loss_gradcache": float(loss_b), "loss_abs_diff": float((loss_a - loss_b).abs()),
            "grad_max_abs_diff": worst, "grad_max_abs_diff_param": worst_name, "grad_max_abs": scale,
            "grad_max_rel_diff_per_param": worst_rel, "params_compared": len(common),
            "params_negligible_grad": negligible, "seconds": seconds,
            "params_with_grad_in_only_one": missing, "batch_shapes": shapes(batch), "threads": torch.get_num_threads()}


# ---- the parent ----------------------------------------------------------------------------------------------


COLUMNS = [("what", "step", ""), ("rows", "rows", "d"), ("chunk", "chunk", "d"), ("loss", "loss", ".5f"),
           ("step_s", "seconds*", ".2f"), ("baseline_mib", "RSS before MiB", ".0f"), ("peak_mib", "peak MiB", ".0f"),
           ("delta_mib", "peak-before MiB", ".0f")]


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts._worker == "check":
        emit(check_worker(opts))
        return 0
    if opts._worker:
        emit(memory_worker(opts._worker, opts))
        return 0
    if opts.batch % opts.chunk or opts.chunk >= opts.batch:
        print("--chunk must divide --batch and be smaller than it", file=sys.stderr)
        return 2

    passthrough = []
    for flag in ("batch", "chunk", "image_size", "hidden", "intermediate", "layers", "heads", "kv_heads", "device",
                 "threads", "repeats"):
        value = getattr(opts, flag)
        if value is not None:
            passthrough += ["--" + flag.replace("_", "-"), str(value)]
    memory_env = ({"MALLOC_MMAP_THRESHOLD_": str(opts.malloc_mmap_threshold)}
                  if opts.malloc_mmap_threshold and opts.device == "cpu" else {})
    results: dict = {"config": {**vars(opts), "json": str(opts.json) if opts.json else None,
                                "overrides": overrides(opts)}, "memory": [], "check": None}
    failed = False
    if not opts.skip_memory:
        for mode in ("plain", "gradcache", "plain_chunk"):
            print(f"== memory: {MODES[mode]}", file=sys.stderr, flush=True)
            result = run_worker(Path(__file__), ["--_worker", mode, *passthrough], env=memory_env)
            result.setdefault("what", MODES[mode])
            failed |= "error" in result
            results["memory"].append(result)
    if not opts.skip_check:
        print("== check: loss and gradients, plain vs GradCache", file=sys.stderr, flush=True)
        results["check"] = run_worker(Path(__file__), ["--_worker", "check", *passthrough])
        failed |= "error" in results["check"]

    print()
    print("environment: " + ", ".join(f"{k} {v}" for k, v in environment().items())
          + (f", MALLOC_MMAP_THRESHOLD_={opts.malloc_mmap_threshold}" if memory_env else ""))
    print(f"model: colllava_tiny with overrides {json.dumps(overrides(opts))}; LoRA: quickstart components "
          f"(r=16, alpha=32, dropout 0); loss colbert_ce; batch {opts.batch}, GradCache chunk {opts.chunk}")
    ok = [r for r in results["memory"] if "error" not in r]
    if ok:
        print(f"parameters: {ok[0]['params']:,} ({ok[0]['trainable']:,} trainable); memory: {ok[0]['memory_method']}")
        print(table(ok, COLUMNS))
        by_mode = {r["mode"]: r for r in ok}
        if "plain" in by_mode and "gradcache" in by_mode:
            plain, cached = by_mode["plain"], by_mode["gradcache"]
            print(f"GradCache / plain: peak-before {cached['delta_mib'] / plain['delta_mib']:.2f}x, "
                  f"peak {cached['peak_mib'] / plain['peak_mib']:.2f}x")
        print("* seconds under the memory workers' mmap-everything malloc (slower, one run each): indicative only; "
              "see the check worker's timing below")
    check = results["check"]
    if check and "error" not in check:
        print()
        print(f"batch: {check['batch_shapes']}")
        print(f"loss: plain {check['loss_plain']:.8f}, GradCache {check['loss_gradcache']:.8f}, "
              f"max abs diff {check['loss_abs_diff']:.3e}")
        print(f"gradients ({check['params_compared']} trainable tensors): max abs diff "
              f"{check['grad_max_abs_diff']:.3e} (in {check['grad_max_abs_diff_param']}); largest gradient entry "
              f"{check['grad_max_abs']:.3e}")
        print(f"worst per-tensor max abs diff / that tensor's max |grad|: {check['grad_max_rel_diff_per_param']:.3e} "
              f"(over the tensors whose max |grad| exceeds 1e-3 x the largest; {check['params_negligible_grad']} "
              "tensors below that, e.g. LoRA A while B is zero, are only in the absolute figure)")
        timed = check["seconds"]
        if opts.repeats:
            plain_s, cached_s = min(timed["plain"][1:]), min(timed["gradcache"][1:])
            print(f"step time (check worker, ordinary malloc, min of {opts.repeats} alternating repeats): plain "
                  f"{plain_s:.2f}s, GradCache {cached_s:.2f}s, GradCache / plain {cached_s / plain_s:.2f}x")
        if check["params_with_grad_in_only_one"]:
            print(f"gradient in only one of the two: {check['params_with_grad_in_only_one']}")
    for r in [*results["memory"], *([check] if check else [])]:
        if "error" in r:
            print(f"FAILED: {r.get('what', 'check')}: {r['error']}")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
