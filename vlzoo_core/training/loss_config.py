"""Options of the registered training losses (see `vlzoo_core.training.losses`). Pure data: never imports torch.

The options and their defaults follow colpali-engine's loss classes (`colpali_engine/loss/
late_interaction_losses.py` and `bi_encoder_losses.py`, the `ColbertModule` / `BiEncoderModule`
generation). colpali-engine's implementation knobs (`max_batch_size` of its index buffer, `norm_tol` of
its out-of-range warning) are left out: they do not change the loss.
"""

from __future__ import annotations

from pydantic import Field

from vlzoo_core.config import StrictModel


class _Temperature(StrictModel):
    temperature: float = Field(
        0.02, gt=0, description="Scores are divided by this before the softmax / softplus (logit scale 1/T)."
    )


class _NegativeFiltering(StrictModel):
    pos_aware_negative_filtering: bool = Field(
        False,
        description="Before the loss, multiply every in-batch negative scoring above "
        "filter_threshold * (its query's positive score) by filter_factor (likely false negatives).",
    )
    filter_threshold: float = Field(0.95, ge=0, description="Fraction of the positive score that flags a negative.")
    filter_factor: float = Field(0.5, ge=0, description="Factor applied to flagged negative scores.")


class _LateInteraction(StrictModel):
    normalize_scores: bool = Field(
        True, description="Divide each MaxSim score by its query's number of (non-padding) tokens."
    )
    use_smooth_max: bool = Field(
        False, description="Replace the max over document tokens by smooth_max_tau * logsumexp(sims / smooth_max_tau)."
    )
    smooth_max_tau: float = Field(0.1, gt=0, description="Sharpness of the smooth max (colpali-engine's `tau`).")


class _InBatchTerm(StrictModel):
    in_batch_term_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="loss = (1 - w) * hard-negative term + w * in-batch term (0 turns the in-batch term off).",
    )


# ---- multi-vector (late interaction) ----------------------------------------------------------------


class ColbertCEConfig(_LateInteraction, _NegativeFiltering, _Temperature):
    """In-batch InfoNCE over MaxSim scores (colpali-engine `ColbertLoss`)."""


class ColbertPairwiseConfig(_LateInteraction, _NegativeFiltering, _Temperature):
    """softplus(hardest in-batch negative - positive) (colpali-engine `ColbertPairwiseCELoss`)."""

    temperature: float = Field(
        1.0, gt=0, description="Score differences are divided by this (colpali-engine's default here is 1.0)."
    )


class ColbertNegativeCEConfig(_InBatchTerm, _LateInteraction, _NegativeFiltering, _Temperature):
    """Hard negative softplus term plus weighted in-batch InfoNCE (colpali-engine `ColbertNegativeCELoss`).

    pos_aware_negative_filtering only acts on the in-batch term.
    """


class ColbertNegativePairwiseConfig(_InBatchTerm, _LateInteraction, _NegativeFiltering, _Temperature):
    """Hard negative softplus term plus weighted in-batch pairwise term
    (colpali-engine `ColbertPairwiseNegativeCELoss`). pos_aware_negative_filtering only acts on the in-batch term.
    """


# ---- single vector (bi-encoder) ---------------------------------------------------------------------


class BiCEConfig(_NegativeFiltering, _Temperature):
    """In-batch InfoNCE over dot products (colpali-engine `BiEncoderLoss`)."""


class BiPairwiseConfig(_NegativeFiltering, _Temperature):
    """softplus(hardest in-batch negative - positive) (colpali-engine `BiPairwiseCELoss`)."""


class BiNegativeCEConfig(_InBatchTerm, _NegativeFiltering, _Temperature):
    """Hard negative softplus term plus weighted in-batch InfoNCE (colpali-engine `BiNegativeCELoss`).

    pos_aware_negative_filtering only acts on the in-batch term.
    """


class BiNegativePairwiseConfig(_InBatchTerm, _Temperature):
    """Hard negative softplus term plus weighted in-batch pairwise term
    (colpali-engine `BiPairwiseNegativeCELoss`, which has no negative filtering).
    """
