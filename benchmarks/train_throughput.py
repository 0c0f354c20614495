"""Training throughput and peak memory of ColLlavaI through the real `vlzoo train` path.

Two benchmarks (`--which tiny|full|all`), each run in its own fresh subprocess so that peak memories
never mix:

tiny   colllava_tiny, random init, with examples/quickstart.yaml's LoRA choice (vision_tower full,
       projector full, language_model LoRA r=16, heads full), colbert_ce, synthetic pages from
       vlzoo_core.data.synthetic collated by ContrastiveCollator with the model's processor.
       Default: batch 32, 3 warm-up steps, then 30 measured steps.
full   colllava_interleave at full size (SigLIP so400m @384 px + Qwen2 0.5B, ~0.9B parameters), random
       init (weights=None), its default LoRA rules (colllava_default: LM q/k/v/o, projector, heads;
       r=32, dropout 0.1), same loss and data. Default on CPU: batch 2, no warm-up, 1 measured step
       (~3.5 GB of fp32 weights plus activations: expect ~10 GB RSS and minutes per step).
       Default on CUDA: batch 8, 3 warm-up steps, 20 measured steps.

Both go through the same setup as `vlzoo train` (vlzoo_core.training.run.train): validate() resolves the
rule set, build_retriever + apply_lora + build_loss, load_source for the synthetic data,
training_arguments() for the Trainer's arguments, and RetrievalTrainer.train() (its training_step,
gradient clipping, AdamW step and scheduler). Evaluation and saving are left out.

Measured per step: the time from the Trainer's on_step_begin to on_step_end (forward, backward,
clipping, optimizer; the batch is already collated), the time of training_step alone (forward +
backward), and end-to-end samples/s over the measured steps (including data loading and collation in
the dataloader, as in a real run). Peak memory: on CUDA, torch.cuda.max_memory_allocated over the whole
training loop, next to memory_allocated before it; on CPU, the process's peak RSS (VmHWM, reset just
before training) next to the RSS before training (model, LoRA, dataset and Trainer already built). With glibc's default malloc the CPU
peak of the full-size step varies from run to run (freed blocks are kept and reused unevenly: 7.5 or
10 GB were both seen for the same step); `--malloc-mmap-threshold 65536` makes RSS follow live memory
(steadier, lower peak) at the cost of slower CPU steps.

The full-size recipe's tokenizer (llava-hf/llava-interleave-qwen-0.5b-hf) comes from the Hub; offline,
`--tokenizer auto` (default) falls back to the bundled tiny tokenizer with image token id 3. Page
sequences are unchanged by that (729 image tokens + a short prompt); query token counts differ slightly.

Examples:
  python benchmarks/train_throughput.py --which tiny
  python benchmarks/train_throughput.py --which full                  # CPU: one step at batch 2
  python benchmarks/train_throughput.py --which full --device cuda --dtype bfloat16 --batch 8 --steps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, TINY_TOKENIZER, MemoryProbe, emit, environment, run_worker, table  # noqa: E402

MODELS = {
    "tiny": {"name": "colllava_tiny", "lora": "quickstart.yaml components",
             "defaults": {"cpu": (32, 3, 30), "cuda": (32, 3, 30)}},  # (batch, warm-up, steps)
    "full": {"name": "colllava_interleave", "lora": "colllava_default",
             "defaults": {"cpu": (2, 0, 1), "cuda": (8, 3, 20)}},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", choices=["tiny", "full", "all"], default="tiny",
                        help="which benchmark to run (default: tiny; 'full' needs ~10 GB RAM on CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="dtype the model is built in (vlzoo.build(dtype=...)); default float32")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="the run config's optim.precision (Trainer autocast); default fp32")
    parser.add_argument("--batch", type=int, default=None,
                        help="per-device batch (queries = pages); default tiny 32, full 2 on CPU / 8 on CUDA")
    parser.add_argument("--steps", type=int, default=None,
                        help="measured optimizer steps; default tiny 30, full 1 on CPU / 20 on CUDA")
    parser.add_argument("--warmup", type=int, default=None,
                        help="unmeasured steps first; default tiny 3, full 0 on CPU / 3 on CUDA")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="the run config's optim.gradient_checkpointing (off by default)")
    parser.add_argument("--tokenizer", choices=["auto", "recipe", "tiny"], default="auto",
                        help="full size only: the recipe's Hub tokenizer, the bundled tiny one, or the recipe's "
                             "if it is in the local Hub cache else the tiny one (default)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the worker")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=0,
                        help="CPU: set MALLOC_MMAP_THRESHOLD_ (bytes, e.g. 65536) in the worker, so glibc returns "
                             "freed tensors to the kernel and peak RSS follows live memory more closely (slows "
                             "CPU steps); default 0 leaves malloc alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--in-process", action="store_true",
                        help="run in this process instead of one subprocess per benchmark (peaks may mix)")
    parser.add_argument("--_worker", choices=["tiny", "full"], default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolved(opts: argparse.Namespace, which: str) -> tuple[int, int, int]:
    batch, warmup, steps = MODELS[which]["defaults"][opts.device]
    return (opts.batch or batch, warmup if opts.warmup is None else opts.warmup, opts.steps or steps)


# ---- the worker: one benchmark in this process -------------------------------------------------------------


def run_config(which: str, opts: argparse.Namespace, output: Path, tokenizer_overrides: dict):
    import yaml

    from vlzoo_core.training.run_config import parse_run_config

    batch, warmup, steps = resolved(opts, which)
    if which == "tiny":
        data = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text(encoding="utf-8"))
    else:
        data = {"model": {"name": MODELS["full"]["name"]}, "lora": {},  # the recipe's default rule set
                "loss": {"name": "colbert_ce", "params": {"temperature": 0.02}},
                "optim": {"lr": 5.0e-5, "scheduler": "linear", "seed": 0}}
    data["model"].update(weights=None, overrides=tokenizer_overrides)
    pages = batch * min(warmup + steps, 64)  # cycled by max_steps when fewer than all steps need
    data["data"] = {"train": {"kind": "synthetic", "synthetic": {"pages": pages, "seed": 0, "split": "train"}}}
    data["optim"].update(per_device_batch_size=batch, gradient_accumulation_steps=1, max_steps=warmup + steps,
                         epochs=None, precision=opts.precision, gradient_checkpointing=opts.gradient_checkpointing)
    data["eval"] = {}
    data["output"] = {"dir": str(output), "save_interval": None}
    data["logging"] = {"interval": 1_000_000, "report_to": ["none"]}
    return parse_run_config(data, f"{which} benchmark config")


def tokenizer_overrides(which: str, mode: str) -> tuple[dict, str]:
    import vlzoo

    recipe = vlzoo.recipe(MODELS[which]["name"])
    location = recipe.processor.config.get("tokenizer")
    if which == "tiny" or mode == "recipe":
        return {}, str(location)
    if mode == "auto":
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(location, local_files_only=True)
            return {}, str(location)
        except Exception:  # noqa: BLE001 - not in the local cache
            pass
    return {"processor": {"config": dict(TINY_TOKENIZER)}}, f"{TINY_TOKENIZER['tokenizer']} (fallback)"


def worker(which: str, opts: argparse.Namespace) -> dict:
    import torch
    from transformers import TrainerCallback, set_seed

    import vlzoo
    from vlzoo_core.model.builder import build_retriever
    from vlzoo_core.data.collator import ContrastiveCollator
    from vlzoo_core.data.sources import load_source
    from vlzoo_core.model.lora import apply_lora, count_parameters
    from vlzoo_core.training.arguments import training_arguments
    from vlzoo_core.training.run import build_loss, validate
    from vlzoo_core.training.trainer import ContrastiveModel, RetrievalTrainer

    if opts.threads:
        torch.set_num_threads(opts.threads)
    cuda = opts.device == "cuda"
    batch, warmup, steps = resolved(opts, which)
    registry = vlzoo.registry()
    overrides, tokenizer = tokenizer_overrides(which, opts.tokenizer)

    with tempfile.TemporaryDirectory(prefix="vlzoo-bench-") as tmp:
        config = run_config(which, opts, Path(tmp) / "run", overrides)
        checked = validate(config, registry)  # the same checks and rule set as `vlzoo train`
        set_seed(config.optim.seed)
        started = time.perf_counter()
        retriever = build_retriever(registry, registry.recipe(config.model.name), weights=None,
                                    overrides=config.model.overrides, device=opts.device, dtype=opts.dtype)
        build_s = time.perf_counter() - started
        if config.optim.gradient_checkpointing:
            retriever.gradient_checkpointing_enable()
        model = apply_lora(retriever, checked.rule_set)
        trainable, total = count_parameters(model)
        loss_fn = build_loss(registry, config)
        train_data = load_source(config.data.train)
        collator = ContrastiveCollator(retriever.processor, strict=config.data.strict,
                                       with_negatives=loss_fn.uses_negatives)
        args, chunk_size = training_arguments(config, config.output.dir, len(train_data))
        if not cuda and args.device.type != "cpu":
            args = dataclasses.replace(args, use_cpu=True)
        trainer = RetrievalTrainer(
            model=ContrastiveModel(model), args=args, train_dataset=train_data, data_collator=collator,
            loss_fn=loss_fn, chunk_size=chunk_size, eval_set=None, eval_metrics=[], eval_batch_size=1,
            base_weights=None, rule_set=checked.rule_set,
        )

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        begins, ends, fwd_bwd, losses = [], [], [], []

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                sync()
                begins.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                sync()
                ends.append(time.perf_counter())

        real_step = trainer.training_step

        def timed_training_step(*a, **kw):
            sync()
            t0 = time.perf_counter()
            loss = real_step(*a, **kw)
            sync()
            fwd_bwd.append(time.perf_counter() - t0)
            losses.append(float(loss))
            return loss

        trainer.training_step = timed_training_step  # the loop calls self.training_step
        trainer.add_callback(Clock())

        probe = MemoryProbe(opts.device)
        probe.start()
        trainer.train()
        memory = probe.stop()

    measured = slice(warmup, warmup + steps)
    step_s = [e - b for b, e in zip(begins[measured], ends[measured])]
    window_start = ends[warmup - 1] if warmup > 0 else begins[0]
    wall = ends[-1] - window_start
    return {
        "which": which, "model": config.model.name, "device": opts.device, "dtype": opts.dtype,
        "precision": opts.precision, "gradient_checkpointing": opts.gradient_checkpointing,
        "lora": MODELS[which]["lora"], "tokenizer": tokenizer, "batch": batch, "warmup": warmup, "steps": steps,
        "trainable_params": trainable, "total_params": total, "build_s": build_s, "threads": torch.get_num_threads(),
        "samples_per_s": batch * steps / wall,
        "step_s": statistics.mean(step_s), "step_s_min": min(step_s),
        "fwd_bwd_s": statistics.mean(fwd_bwd[measured]), "fwd_bwd_s_min": min(fwd_bwd[measured]),
        "compute_samples_per_s": batch / statistics.mean(step_s),
        "first_loss": losses[0], "last_loss": losses[-1], **memory,
    }


# ---- the parent ----------------------------------------------------------------------------------------------

COLUMNS = [
    ("model", "model", ""), ("device", "device", ""), ("dtype", "dtype", ""), ("batch", "batch", "d"),
    ("steps", "steps", "d"), ("samples_per_s", "samples/s", ".4g"), ("compute_samples_per_s", "samples/s (compute)", ".4g"),
    ("step_s", "s/step", ".3f"), ("fwd_bwd_s", "fwd+bwd s", ".3f"), ("baseline_mib", "mem before MiB", ".0f"),
    ("peak_mib", "peak MiB", ".0f"), ("delta_mib", "peak-before MiB", ".0f"),
]


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.device is None:
        import torch

        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts._worker:
        emit(worker(opts._worker, opts))
        return 0

    chosen = ["tiny", "full"] if opts.which == "all" else [opts.which]
    passthrough = ["--device", opts.device, "--dtype", opts.dtype, "--precision", opts.precision,
                   "--tokenizer", opts.tokenizer]
    for flag, value in (("--batch", opts.batch), ("--steps", opts.steps), ("--warmup", opts.warmup),
                        ("--threads", opts.threads)):
        if value is not None:
            passthrough += [flag, str(value)]
    if opts.gradient_checkpointing:
        passthrough.append("--gradient-checkpointing")

    results = []
    for which in chosen:
        batch, warmup, steps = resolved(opts, which)
        print(f"== {which}: {MODELS[which]['name']} on {opts.device}, batch {batch}, {warmup} warm-up + {steps} "
              f"measured steps", file=sys.stderr, flush=True)
        if opts.in_process:
            result = worker(which, opts)
        else:
            env = ({"MALLOC_MMAP_THRESHOLD_": str(opts.malloc_mmap_threshold)}
                   if opts.malloc_mmap_threshold and opts.device == "cpu" else None)
            result = run_worker(Path(__file__), ["--_worker", which, *passthrough], env=env)
        result.setdefault("which", which)
        results.append(result)

    print()
    print("environment: " + ", ".join(f"{k} {v}" for k, v in environment().items())
          + (f", MALLOC_MMAP_THRESHOLD_={opts.malloc_mmap_threshold}" if opts.malloc_mmap_threshold else ""))
    ok = [r for r in results if "error" not in r]
    if ok:
        print(table(ok, COLUMNS))
        print()
        for r in ok:
            print(f"{r['which']}: {r['model']}, LoRA {r['lora']}, {r['trainable_params']:,} trainable of "
                  f"{r['total_params']:,} params, tokenizer {r['tokenizer']}, precision {r['precision']}, "
                  f"gradient checkpointing {'on' if r['gradient_checkpointing'] else 'off'}, threads {r['threads']}; "
                  f"build {r['build_s']:.1f}s; loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}; "
                  f"min s/step {r['step_s_min']:.3f}, min fwd+bwd {r['fwd_bwd_s_min']:.3f}s; memory: {r['memory_method']}")
        print("samples/s: end to end over the measured steps (dataloader + collation included); "
              "(compute): batch / mean s/step, where s/step runs from the Trainer's on_step_begin to on_step_end "
              "(forward, backward, clipping, optimizer).")
    for r in results:
        if "error" in r:
            print(f"{r['which']}: FAILED: {r['error']}")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
