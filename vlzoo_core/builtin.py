"""Components that are not specific to any family, registered like any plugin's."""

from __future__ import annotations

from vlzoo_core.config import HeadConfig
from vlzoo_core.hooks import hookimpl
from vlzoo_core.registry import Registrar


@hookimpl
def vlzoo_register(register: Registrar) -> None:
    register.component(
        "head", "multi_vector", "vlzoo_core.heads:MultiVectorHead", HeadConfig,
        "Per-token linear projection to `dim`, L2-normalised (late interaction).",
    )
    register.component(
        "head", "mean_pooled", "vlzoo_core.heads:MeanPooledHead", HeadConfig,
        "Masked mean pooling, linear projection, L2 norm (single vector).",
    )
