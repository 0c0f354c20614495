"""vlzoo_core: what plugin authors import. Interfaces, the hook marker, the registry and the config models.

Importing this package does not import torch; the torch-based names load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from vlzoo_core.config import (
    ComponentRef,
    HeadConfig,
    HeadRef,
    LoraRule,
    LoraRuleSet,
    ProcessorConfig,
    Recipe,
    StrictModel,
    TokenEmbeddingConfig,
)
from vlzoo_core.errors import CheckpointError, ConfigError, InputError, LoraRuleError, UnknownNameError, VlzooError
from vlzoo_core.hooks import hookimpl
from vlzoo_core.registry import Registrar, Registry

_LAZY = {
    "VisionEncoder": "vlzoo_core.interfaces",
    "Projector": "vlzoo_core.interfaces",
    "LanguageBackbone": "vlzoo_core.interfaces",
    "TransformersBackbone": "vlzoo_core.interfaces",
    "RetrievalHead": "vlzoo_core.interfaces",
    "Processor": "vlzoo_core.interfaces",
    "CheckpointFormat": "vlzoo_core.interfaces",
    "Retriever": "vlzoo_core.model.retriever",
    "TokenProcessor": "vlzoo_core.model.processing",
    "load_tokenizer": "vlzoo_core.model.processing",
    "resolve_tokenizer_location": "vlzoo_core.model.processing",
    "open_image": "vlzoo_core.model.processing",
    "build_tiny_tokenizer": "vlzoo_core.model.tiny_tokenizer",
    "PrefixKeyMap": "vlzoo_core.model.weights",
    "maxsim": "vlzoo_core.model.scoring",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlzoo_core' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "ComponentRef", "ConfigError", "InputError", "HeadConfig", "HeadRef", "LoraRule", "LoraRuleError", "LoraRuleSet", "ProcessorConfig", "Recipe",
    "Registrar", "Registry", "StrictModel", "TokenEmbeddingConfig", "UnknownNameError", "VlzooError", "hookimpl", *_LAZY,
]
