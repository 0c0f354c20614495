"""Components that are not specific to any family, registered like any plugin's."""

from __future__ import annotations

from vlzoo_core.config import HeadConfig
from vlzoo_core.hooks import hookimpl
from vlzoo_core.training.loss_config import (
    BiCEConfig,
    BiNegativeCEConfig,
    BiNegativePairwiseConfig,
    BiPairwiseConfig,
    ColbertCEConfig,
    ColbertNegativeCEConfig,
    ColbertNegativePairwiseConfig,
    ColbertPairwiseConfig,
)
from vlzoo_core.registry import Registrar


@hookimpl
def vlzoo_register(register: Registrar) -> None:
    register.component(
        "head", "multi_vector", "vlzoo_core.model.heads:MultiVectorHead", HeadConfig,
        "Per-token linear projection to `dim`, L2-normalised (late interaction).",
    )
    register.component(
        "head", "mean_pooled", "vlzoo_core.model.heads:MeanPooledHead", HeadConfig,
        "Masked mean pooling, linear projection, L2 norm (single vector).",
    )
    _register_losses(register)
    _register_index_backends(register)


def _register_index_backends(register: Registrar) -> None:
    from vlzoo_core.index.configs import LocalConfig, QdrantConfig

    register.component("index_backend", "local", "vlzoo_core.index.backends:LocalBackend", LocalConfig,
                       "The index folder itself: exact MaxSim over memory-mapped shards, optional candidate stage.")
    register.component("index_backend", "qdrant", "vlzoo_core.index.qdrant:QdrantBackend", QdrantConfig,
                       "A Qdrant multivector collection (MaxSim): in-process (path) or a server/cluster (url).")


def _register_losses(register: Registrar) -> None:
    """The training losses (`vlzoo_core.training.losses`, formulas of colpali-engine's loss classes)."""
    losses = (
        ("colbert_ce", "ColbertCELoss", ColbertCEConfig,
         "Multi-vector in-batch InfoNCE over MaxSim scores / temperature (colpali-engine ColbertLoss)."),
        ("colbert_pairwise", "ColbertPairwiseLoss", ColbertPairwiseConfig,
         "Multi-vector softplus(hardest in-batch negative - positive) (colpali-engine ColbertPairwiseCELoss)."),
        ("colbert_negative_ce", "ColbertNegativeCELoss", ColbertNegativeCEConfig,
         "Multi-vector hard-negative softplus term + weighted in-batch InfoNCE "
         "(colpali-engine ColbertNegativeCELoss); needs negatives."),
        ("colbert_negative_pairwise", "ColbertNegativePairwiseLoss", ColbertNegativePairwiseConfig,
         "Multi-vector hard-negative softplus term + weighted in-batch pairwise term "
         "(colpali-engine ColbertPairwiseNegativeCELoss); needs negatives."),
        ("bi_ce", "BiCELoss", BiCEConfig,
         "Single-vector in-batch InfoNCE over dot products / temperature (colpali-engine BiEncoderLoss)."),
        ("bi_pairwise", "BiPairwiseLoss", BiPairwiseConfig,
         "Single-vector softplus(hardest in-batch negative - positive) (colpali-engine BiPairwiseCELoss)."),
        ("bi_negative_ce", "BiNegativeCELoss", BiNegativeCEConfig,
         "Single-vector hard-negative softplus term + weighted in-batch InfoNCE "
         "(colpali-engine BiNegativeCELoss); needs negatives."),
        ("bi_negative_pairwise", "BiNegativePairwiseLoss", BiNegativePairwiseConfig,
         "Single-vector hard-negative softplus term + weighted in-batch pairwise term "
         "(colpali-engine BiPairwiseNegativeCELoss); needs negatives."),
    )
    for name, attribute, config, description in losses:
        register.component("loss", name, f"vlzoo_core.training.losses:{attribute}", config, description)
