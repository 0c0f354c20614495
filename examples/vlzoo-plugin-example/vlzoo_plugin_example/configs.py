"""Config models of the example's components: pure data, no torch."""

from __future__ import annotations

from pydantic import Field

from vlzoo_core import HeadConfig


class MlpHeadConfig(HeadConfig):
    """Options of `mlp_head`: `dim` and `bias` as for the built-in heads, plus the hidden layer's width."""

    hidden_features: int | None = Field(
        None, gt=0, description="Width of the hidden layer (default: the backbone's hidden size)."
    )
