"""Translate a RunConfig into transformers' TrainingArguments (the one place the two vocabularies meet)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainingArguments

from vlzoo_core.errors import ConfigError
from vlzoo_core.training.run_config import OPTIMIZERS, RunConfig
from vlzoo_core.training.gather import world_size


def training_arguments(config: RunConfig, output: Path, train_rows: int) -> tuple[TrainingArguments, int | None]:
    """The Trainer's arguments, and the GradCache chunk size (None when no chunking is needed).

    With grad_cache the Trainer sees one batch of per_device_batch_size * gradient_accumulation_steps rows
    per step, which the trainer embeds in chunks of per_device_batch_size: the whole accumulated batch is
    one pool of in-batch negatives. Without it, the Trainer accumulates gradients over separate batches
    (each its own, smaller pool of negatives). Either way the global batch is
    per_device_batch_size * gradient_accumulation_steps * number of processes.
    """
    optim = config.optim
    cached = optim.grad_cache and optim.gradient_accumulation_steps > 1
    per_device = optim.per_device_batch_size * (optim.gradient_accumulation_steps if cached else 1)
    check_batch_fits(config, train_rows)
    evaluate_every = config.eval.interval if config.data.eval is not None else None
    args = TrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=1 if cached else optim.gradient_accumulation_steps,
        optim=OPTIMIZERS[optim.optimizer],
        learning_rate=optim.lr,
        weight_decay=optim.weight_decay,
        lr_scheduler_type=optim.scheduler,
        warmup_steps=optim.warmup_steps or optim.warmup_ratio,
        num_train_epochs=optim.epochs or 1.0,
        max_steps=optim.max_steps or -1,
        bf16=optim.precision == "bf16",
        fp16=optim.precision == "fp16",
        max_grad_norm=optim.max_grad_norm,
        seed=optim.seed,
        data_seed=optim.seed,
        logging_steps=config.logging.interval,
        report_to=[name for name in config.logging.report_to if name != "none"] or "none",
        save_strategy="steps" if config.output.save_interval else "no",
        save_steps=config.output.save_interval or 500,
        save_total_limit=config.output.keep,
        eval_strategy="steps" if evaluate_every else "no",
        eval_steps=evaluate_every,
        dataloader_drop_last=True,
        dataloader_num_workers=config.data.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        label_names=[],
        ddp_find_unused_parameters=False,
        disable_tqdm=not config.logging.progress,
    )
    return args, optim.per_device_batch_size if cached else None


def check_batch_fits(config: RunConfig, train_rows: int) -> None:
    """Every step takes a full batch (the last partial one is dropped), so the data must hold one."""
    optim = config.optim
    needed = optim.per_device_batch_size * optim.gradient_accumulation_steps * world_size()
    if train_rows < needed:
        raise ConfigError(f"optim.per_device_batch_size: the training data has {train_rows} rows, fewer than one "
                          f"global batch ({needed})")
