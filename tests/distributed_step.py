"""One contrastive training step, run by tests/test_training.py alone and under `accelerate launch` (2 processes, gloo).

Each process embeds its slice of one fixed global batch of 8 rows (5 and 3 rows with two processes, so
the gather must handle unequal batch sizes and lengths); the loss uses negatives gathered from all
processes. Rank 0 writes the loss and the (DDP-averaged) gradients to the given safetensors file.
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

import vlzoo
from vlzoo_core.data.collator import ContrastiveCollator
from vlzoo_core.data.synthetic import synthetic_rows
from vlzoo_core.model.lora import apply_lora
from vlzoo_core.training.losses import ColbertCELoss
from vlzoo_core.training.run_config import SyntheticSource
from vlzoo_core.training.trainer import ContrastiveModel, global_contrastive_loss

GLOBAL_BATCH = 8


def main(output: str) -> None:
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    retriever = vlzoo.build("colllava_tiny")
    rule_set = vlzoo.registry().rule_set("colllava_default").model_copy(update={"dropout": 0.0})
    model = accelerator.prepare(ContrastiveModel(apply_lora(retriever, rule_set)))
    for parameter in model.parameters():  # make LoRA B non-zero so every adapter gets a real gradient
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter.data, std=0.02, generator=torch.Generator().manual_seed(parameter.numel()))
    rows = list(synthetic_rows(SyntheticSource(pages=GLOBAL_BATCH, seed=3)))
    bounds = [0, GLOBAL_BATCH] if accelerator.num_processes == 1 else [0, 5, GLOBAL_BATCH]
    mine = rows[bounds[accelerator.process_index] : bounds[accelerator.process_index + 1]]
    batch = ContrastiveCollator(retriever.processor)(mine)
    loss = global_contrastive_loss(ColbertCELoss(), model(**batch))
    accelerator.backward(loss)
    if accelerator.is_main_process:
        grads = {name: p.grad.detach().clone() for name, p in accelerator.unwrap_model(model).named_parameters()
                 if p.requires_grad}
        processes = torch.tensor([accelerator.num_processes])
        save_file({"loss": loss.detach().reshape(1), "processes": processes, **grads}, output)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
