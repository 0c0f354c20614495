"""Commands under `accelerate launch`: joining the process group, who prints, and leaving together."""

from __future__ import annotations

import os


def process_device():
    """Join the process group when started by `accelerate launch` with several processes; the device to use."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        return PartialState(cpu=not torch.cuda.is_available()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_main_process() -> bool:
    import torch

    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def leave_process_group() -> None:
    """Leave together: a process exiting with a live process group aborts in gloo's threads."""
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
