"""transformers' Trainer, taught contrastive retrieval: global in-batch negatives, GradCache, our checkpoints.

Everything else (loop, optimiser, schedule, mixed precision, logging, progress bars, checkpoint rotation,
resume, `accelerate launch` for DDP/FSDP/DeepSpeed) is the Trainer's.
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from vlzoo_core.config import LoraRuleSet
from vlzoo_core.model.persist import load_trainable_state, save_trained, unwrap
from vlzoo_core.training.evaluation import EvalSet, evaluate_retriever
from vlzoo_core.training.gather import gather_with_grad, world_size
from vlzoo_core.training.gradcache import RandomState, batch_size, pad_cat, split_batch

STAGING_DIR = ".staging"


class ContrastiveModel(nn.Module):
    """Embeds a whole contrastive batch in one forward call, as DDP expects one call per backward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.model(**inputs) for name, inputs in parts.items()}


def global_contrastive_loss(loss_fn: nn.Module, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss over the global batch: every process's rows are gathered (with gradients) first."""
    gathered = {name: gather_with_grad(value.float()) for name, value in embeddings.items()}
    return loss_fn(gathered["query"], gathered["document"], gathered.get("negative"))


def _any_process_empty(empty: bool, device: torch.device) -> bool:
    """Whether any process got an empty batch: then all skip the step together (no process waits for the
    others' gathers or gradient reduction)."""
    if world_size() == 1:
        return empty
    flag = torch.tensor([int(empty)], device=device)
    torch.distributed.all_reduce(flag)
    return bool(flag.item())


class RetrievalTrainer(Trainer):
    def __init__(
        self,
        *,
        loss_fn: nn.Module,
        chunk_size: int | None,
        eval_set: EvalSet | None,
        eval_metrics: list[str],
        eval_batch_size: int,
        base_weights: str | None,
        rule_set: LoraRuleSet,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.loss_fn = loss_fn
        self.chunk_size = chunk_size
        self.eval_set = eval_set
        self.eval_metrics = eval_metrics
        self.eval_batch_size = eval_batch_size
        self.base_weights = base_weights
        self.rule_set = rule_set
        self._staging = False

    # ---- loss ------------------------------------------------------------------------------------------

    def contrastive_loss(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        return global_contrastive_loss(self.loss_fn, embeddings)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = self.contrastive_loss(outputs)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if _any_process_empty(not inputs, self.args.device):  # the collator skipped every row somewhere
            return torch.zeros((), device=self.args.device)
        if self.chunk_size is None or batch_size(inputs) <= self.chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        return self._grad_cache_step(model, self._prepare_inputs(inputs))

    def _grad_cache_step(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """One step on the whole batch, computed `chunk_size` rows at a time (see gradcache.py)."""
        model.train()
        chunks = split_batch(inputs, self.chunk_size)
        states, cached = [], []
        with torch.no_grad():
            for chunk in chunks:
                states.append(RandomState())
                with self.compute_loss_context_manager():
                    cached.append({name: out.detach().float().requires_grad_() for name, out in model(**chunk).items()})
        loss = self.contrastive_loss({name: pad_cat([c[name] for c in cached]) for name in cached[0]})
        loss.backward()  # reaches only the cached embeddings
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            with nullcontext() if last else self.accelerator.no_sync(model):
                with states[index].replay(), self.compute_loss_context_manager():
                    outputs = model(**chunk)
                surrogate = sum((outputs[name].float() * cached[index][name].grad).sum() for name in outputs)
                self.accelerator.backward(surrogate)
        return loss.detach()

    # ---- evaluation ------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.eval_set is None:
            return {}
        retriever = unwrap(self.accelerator.unwrap_model(self.model).model)
        results = evaluate_retriever(retriever, self.eval_set, self.eval_metrics, batch_size=self.eval_batch_size,
                                     progress=self.is_world_process_zero() and not self.args.disable_tqdm)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in results.items()}
        self.log(dict(metrics))  # log() adds the epoch to the dict it is given
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- checkpoints -----------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        save_trained(self.accelerator.unwrap_model(self.model).model, output_dir,
                     base_weights=self.base_weights, rule_set=self.rule_set)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        load_trainable_state((model or self.model).model, resume_from_checkpoint)

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into a staging folder, then move it into place in one rename.

        A crash mid-save leaves only the staging folder, which resume ignores and removes: the previous
        checkpoint is never touched before the new one is complete.
        """
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        if self.args.should_save:
            staged, final = run_dir / STAGING_DIR / name, run_dir / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(run_dir / STAGING_DIR, ignore_errors=True)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()
