"""Shared fixtures. Tests never touch the network: the Hub is switched off for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from PIL import Image

import vlzoo
from vlzoo_core.registry import Registry


@pytest.fixture
def isolated_registry():
    """Make registries with entry-point autoload off; `vlzoo.registry()` returns the latest one made.

    Usage: `reg = isolated_registry(plugins=[("name", module_or_object)], catalogs=[path])`.
    The process-wide registry is restored afterwards.
    """
    saved = vlzoo._registry

    def make(**kwargs) -> Registry:
        kwargs.setdefault("autoload", False)
        registry = Registry(**kwargs)
        vlzoo._registry = registry
        return registry

    yield make
    vlzoo._registry = saved


@pytest.fixture(scope="session")
def tiny_model():
    """One random-init colllava_tiny in eval mode, shared by read-only tests."""
    torch.manual_seed(0)
    return vlzoo.build("colllava_tiny").eval()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A saved random-init colllava_tiny: the CLI can load it again, so an index or eval cache remembers it."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    vlzoo.build("colllava_tiny").save_pretrained(folder)
    return folder


def make_page(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A small deterministic RGB image with a coloured block, different for each seed."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), mode="RGB")
