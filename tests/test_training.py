"""The training engine: distributed negatives, GradCache, resume after a crash, atomic checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainingArguments

import vlzoo
from vlzoo_core.data.collator import ContrastiveCollator
from vlzoo_core.data.synthetic import synthetic_rows
from vlzoo_core.model.lora import apply_lora
from vlzoo_core.training.losses import ColbertCELoss
from vlzoo_core.training.run_config import SyntheticSource
from vlzoo_core.training.trainer import STAGING_DIR, ContrastiveModel, RetrievalTrainer

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_processes_give_the_loss_and_gradients_of_one_process_with_the_whole_batch(tmp_path):
    single, double = tmp_path / "single.safetensors", tmp_path / "double.safetensors"
    script = str(HERE / "distributed_step.py")
    subprocess.run([sys.executable, script, str(single)], check=True, env=ENV, capture_output=True)
    # Two processes on gloo. (`accelerate launch --cpu` starts one process unless mpirun is set up;
    # --multi_gpu uses torchrun, and the script's Accelerator(cpu=True) keeps it on the CPU with gloo.)
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", "29541", script, str(double)], check=True, env=ENV, capture_output=True)
    one, two = load_file(str(single)), load_file(str(double))
    assert (one.pop("processes").item(), two.pop("processes").item()) == (1, 2)
    assert one["loss"].item() > 0.1
    assert all(one[k].abs().max() > 0 for k in one), "every trainable parameter must get a gradient"
    assert _max_diff(one, two) <= 1e-5


def _trainer(tmp_path, model, chunk_size):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                             per_device_train_batch_size=16)
    trainer = RetrievalTrainer(model=model, args=args, loss_fn=ColbertCELoss(), chunk_size=chunk_size,
                               eval_set=None, eval_metrics=[], eval_batch_size=4, base_weights=None,
                               rule_set=vlzoo.registry().rule_set("colllava_default"))
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
    return trainer


def test_grad_cache_step_equals_one_plain_step_on_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    retriever = vlzoo.build("colllava_tiny")
    rule_set = vlzoo.registry().rule_set("colllava_default").model_copy(update={"dropout": 0.0})
    model = ContrastiveModel(apply_lora(retriever, rule_set))
    for parameter in model.parameters():
        if parameter.requires_grad:  # non-zero LoRA B, so every adapter receives gradient
            torch.nn.init.normal_(parameter.data, std=0.02)
    batch = ContrastiveCollator(retriever.processor)(list(synthetic_rows(SyntheticSource(pages=16, seed=5))))

    def step(chunk_size):
        model.zero_grad()
        loss = _trainer(tmp_path, model, chunk_size).training_step(model, batch)
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain_loss, plain_grads = step(None)
    cached_loss, cached_grads = step(4)  # 4 chunks of 4 rows
    assert plain_loss.item() > 0.1
    assert abs(plain_loss.item() - cached_loss.item()) <= 1e-5
    assert _max_diff(plain_grads, cached_grads) <= 1e-5
    # chunks of 8 embed different padding lengths than the full batch: still the same step
    chunked8_loss, chunked8_grads = step(8)
    assert _max_diff(plain_grads, chunked8_grads) <= 1e-5


def _write_config(path: Path, output: Path) -> Path:
    config = {
        "model": "colllava_tiny",
        "lora": {"components": {"vision_tower": "full", "projector": "full", "language_model": "lora",
                                "heads": "full"}, "r": 8, "dropout": 0.1},
        "data": {"train": {"kind": "synthetic", "synthetic": {"pages": 256, "seed": 0}},
                 "eval": {"kind": "synthetic", "synthetic": {"pages": 16, "seed": 1, "split": "eval"}}},
        "optim": {"lr": 1e-3, "per_device_batch_size": 8, "max_steps": 120, "seed": 0},
        "output": {"dir": str(output), "save_interval": 10, "keep": 2},
        "logging": {"interval": 50},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _final_weights(directory: Path) -> dict[str, torch.Tensor]:
    return {**load_file(str(directory / "adapter" / "adapter_model.safetensors")),
            **load_file(str(directory / "trained_modules.safetensors"))}


def _vlzoo(*args: str, **kwargs) -> list[str]:
    return [sys.executable, "-m", "vlzoo", *args]


def test_resume_after_sigkill_ends_with_the_weights_and_metrics_of_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_vlzoo("train", str(_write_config(tmp_path / "a.yaml", straight))), check=True, env=ENV,
                   capture_output=True)

    killed = tmp_path / "killed"
    config = _write_config(tmp_path / "b.yaml", killed)
    process = subprocess.Popen(_vlzoo("train", str(config)), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-20").exists():  # appears complete: checkpoints are renamed into place
        assert process.poll() is None, "the run ended before its second checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "adapter").exists(), "killed before the end, so no final model"

    resumed = subprocess.run(_vlzoo("train", "--resume", str(config)), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (killed / STAGING_DIR).exists()
    assert _max_diff(_final_weights(straight), _final_weights(killed)) <= 1e-6
    straight_metrics = yaml.safe_load((straight / "metrics.json").read_text())
    killed_metrics = yaml.safe_load((killed / "metrics.json").read_text())
    assert killed_metrics["before"] == straight_metrics["before"]
    for name, value in straight_metrics["after"].items():
        assert killed_metrics["after"][name] == pytest.approx(value, abs=1e-6)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from vlzoo_core.training import trainer as trainer_module

    torch.manual_seed(0)
    retriever = vlzoo.build("colllava_tiny")
    rule_set = vlzoo.registry().rule_set("colllava_default")
    trainer = _trainer(tmp_path, ContrastiveModel(apply_lora(retriever, rule_set)), None)
    trainer.rule_set = rule_set
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.state.global_step = 5
    trainer._save_checkpoint(trainer.model, trial=None)
    good = tmp_path / "checkpoint-5"
    files_before = sorted(p.name for p in good.rglob("*"))
    assert "adapter_model.safetensors" in files_before and "optimizer.pt" in files_before

    def crash(model, directory, **kwargs):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "vlzoo_config.json").write_text("{partial")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(trainer_module, "save_trained", crash)
    trainer.state.global_step = 10
    with pytest.raises(KeyboardInterrupt):
        trainer._save_checkpoint(trainer.model, trial=None)
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(str(tmp_path)) == str(good)
    assert sorted(p.name for p in good.rglob("*")) == files_before
    assert not (tmp_path / "checkpoint-10").exists()


def test_a_batch_whose_rows_were_all_skipped_is_a_no_op_step(tmp_path):
    retriever = vlzoo.build("colllava_tiny")
    model = ContrastiveModel(apply_lora(retriever, vlzoo.registry().rule_set("colllava_default")))
    loss = _trainer(tmp_path, model, None).training_step(model, {})  # what the collator returns then
    assert loss.item() == 0.0
    assert all(p.grad is None for p in model.parameters())


def test_optimizer_and_progress_options_reach_the_trainer(tmp_path):
    from vlzoo_core.training.arguments import training_arguments
    from vlzoo_core.training.run_config import parse_run_config

    data = {"model": {"name": "colllava_tiny"}, "data": {"train": {"kind": "synthetic"}},
            "optim": {"max_steps": 2, "optimizer": "adamw_torch_fused", "weight_decay": 0.01, "max_grad_norm": 0.5},
            "output": {"dir": str(tmp_path)}, "logging": {"progress": False}}
    args, _ = training_arguments(parse_run_config(data, "test"), tmp_path, train_rows=64)
    assert (args.optim, args.weight_decay, args.max_grad_norm, args.disable_tqdm) == \
        ("adamw_torch_fused", 0.01, 0.5, True)
    data["optim"]["optimizer"], data["logging"]["progress"] = "adafactor", True
    args, _ = training_arguments(parse_run_config(data, "test"), tmp_path, train_rows=64)
    assert (args.optim, args.disable_tqdm) == ("adafactor", False)
