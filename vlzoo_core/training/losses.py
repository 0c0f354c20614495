"""Contrastive training losses for late-interaction (multi-vector) and single-vector retrievers.

Every loss is an `nn.Module` built as `LossClass(config)` (its config class lives in `vlzoo_core.training.loss_config`)
and called as `loss(queries, documents, negatives=None) -> scalar tensor`:

* row i of `documents` is the positive page of query i; every other row is an in-batch negative;
* `negatives`, when the loss uses them (`uses_negatives`), holds one hard-negative page per row, in the same
  layout as `documents` (its token count may differ);
* `multi_vector` says which embeddings a loss takes: zero-padded (B, L, D) token vectors (all-zero rows are
  padding, as in `vlzoo_core.model.scoring`) or (B, D) single vectors.

The formulas follow colpali-engine (`colpali_engine/loss/late_interaction_losses.py`,
`colpali_engine/loss/bi_encoder_losses.py`, the `ColbertModule` / `BiEncoderModule` generation). Where we
differ, on purpose:

* MaxSim is masked here. colpali-engine takes the max over every document token, padding included, so a
  padding row (similarity 0) wins whenever all of a query token's similarities to the real tokens are
  negative; with `use_smooth_max` its padding rows also enter the logsumexp, and padded query tokens add
  tau * log(L_doc) each. Here padding never enters a max or a logsumexp and padded query tokens add nothing,
  so a loss does not change when padding rows are added (see `maxsim_matrix`).
* The query length used by `normalize_scores` counts non-zero rows; colpali-engine counts rows whose FIRST
  component is non-zero (a real token with a 0 first component is miscounted there). A query with no tokens
  is given length 1 (its scores are all 0) instead of dividing by zero.
* colpali-engine prints a warning when normalised scores leave [0, 1]; nothing is printed here.
* The pairwise in-batch losses with a batch of one (no in-batch negative) return 0; colpali-engine's
  `topk(2)` fails there.
* Scores are computed in float32 (float64 inputs stay float64), whatever the embeddings' dtype.
* No `offset` argument (colpali-engine's cross-GPU positive shift): queries and documents are one batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import BaseModel

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

# ---- differentiable MaxSim ---------------------------------------------------------------------------


def token_mask(embeddings: torch.Tensor) -> torch.Tensor:
    """(..., L) bool: True for real token vectors, False for all-zero padding rows."""
    return embeddings.abs().amax(dim=-1) > 0


def _late_interaction(
    sims: torch.Tensor, q_valid: torch.Tensor, d_valid: torch.Tensor, smooth_max_tau: float | None
) -> torch.Tensor:
    """Reduce (..., Lq, Ld) token similarities to (...) scores: masked max (or smooth max) over Ld, sum over Lq.

    `q_valid` broadcasts to (..., Lq) and `d_valid` to (..., 1, Ld).
    """
    has_tokens = d_valid.any(dim=-1, keepdim=True)  # (..., 1, 1)
    # Padding is set to -inf so it never wins the max. A document with no tokens at all is left unmasked
    # (its similarities are all 0) and its result is zeroed below, so no max / logsumexp ever runs over a
    # row that is entirely -inf (whose backward is only NaN-free by courtesy of torch's special-casing).
    masked = sims.masked_fill(~d_valid & has_tokens, float("-inf"))
    if smooth_max_tau is None:
        best = masked.amax(dim=-1)
    else:
        best = smooth_max_tau * torch.logsumexp(masked / smooth_max_tau, dim=-1)
    best = torch.where(q_valid & has_tokens.squeeze(-1), best, best.new_zeros(()))
    return best.sum(dim=-1)


def maxsim_matrix(
    queries: torch.Tensor, documents: torch.Tensor, *, smooth_max_tau: float | None = None
) -> torch.Tensor:
    """(Nq, Nd) late-interaction scores with gradients, on the inputs' device and dtype.

    Score = sum over the query's real tokens of the best similarity with the document's real tokens
    (0 for a document without tokens); the same values as `vlzoo_core.model.scoring.maxsim`, which is detached.
    With `smooth_max_tau`, the max is replaced by tau * logsumexp(sims / tau) over the real tokens.
    """
    sims = torch.einsum("qld,nmd->qnlm", queries, documents)
    q_valid = token_mask(queries)[:, None, :]  # (Nq, 1, Lq)
    d_valid = token_mask(documents)[None, :, None, :]  # (1, Nd, 1, Ld)
    return _late_interaction(sims, q_valid, d_valid, smooth_max_tau)


def maxsim_pairs(
    queries: torch.Tensor, documents: torch.Tensor, *, smooth_max_tau: float | None = None
) -> torch.Tensor:
    """(N,) late-interaction scores of query i with document i only (the diagonal of `maxsim_matrix`)."""
    sims = torch.einsum("bld,bmd->blm", queries, documents)
    q_valid = token_mask(queries)  # (N, Lq)
    d_valid = token_mask(documents)[:, None, :]  # (N, 1, Ld)
    return _late_interaction(sims, q_valid, d_valid, smooth_max_tau)


def query_lengths(queries: torch.Tensor) -> torch.Tensor:
    """(N,) number of real tokens of each query, at least 1 (so that dividing by it is always defined)."""
    return token_mask(queries).sum(dim=-1).clamp_min(1)


# ---- shared objective pieces -------------------------------------------------------------------------


def _filter_negatives(scores: torch.Tensor, config: Any) -> torch.Tensor:
    """colpali-engine's pos-aware filtering: in-batch negatives above threshold * positive are scaled down."""
    if not getattr(config, "pos_aware_negative_filtering", False):
        return scores
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    positives = scores.diagonal().unsqueeze(1)
    flagged = (scores > config.filter_threshold * positives) & ~eye
    return torch.where(flagged, scores * config.filter_factor, scores)


def _in_batch_ce(scores: torch.Tensor, config: Any) -> torch.Tensor:
    """InfoNCE: cross-entropy of each row of scores / T against its diagonal."""
    scores = _filter_negatives(scores, config)
    targets = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores / config.temperature, targets)


def _in_batch_pairwise(scores: torch.Tensor, config: Any) -> torch.Tensor:
    """mean softplus((hardest in-batch negative - positive) / T); 0 for a batch of one."""
    positives = scores.diagonal()
    scores = _filter_negatives(scores, config)
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    hardest = scores.masked_fill(eye, float("-inf")).amax(dim=1)
    return F.softplus((hardest - positives) / config.temperature).mean()


def _hard_negative(positives: torch.Tensor, negatives: torch.Tensor, config: Any) -> torch.Tensor:
    """mean softplus((hard negative - positive) / T): a two-way cross-entropy per query."""
    return F.softplus((negatives - positives) / config.temperature).mean()


def _mix(hard_term: torch.Tensor, in_batch_term: Any, config: Any) -> torch.Tensor:
    """(1 - w) * hard_term + w * in_batch_term(), with the in-batch term skipped when w == 0."""
    weight = config.in_batch_term_weight
    if weight == 0:
        return hard_term
    return hard_term * (1 - weight) + in_batch_term() * weight


# ---- the loss modules --------------------------------------------------------------------------------


class RetrievalLoss(torch.nn.Module):
    """Base class: config handling and input validation; subclasses define `objective` and the scores."""

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    multi_vector: ClassVar[bool]
    uses_negatives: ClassVar[bool] = False

    def __init__(self, config: BaseModel | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if config is None:
            config = self.config_class()
        elif isinstance(config, Mapping):
            config = self.config_class.model_validate(dict(config))
        elif not isinstance(config, self.config_class):
            raise TypeError(
                f"loss {self.name!r} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    def extra_repr(self) -> str:
        return repr(self.config)

    # ---- scores (defined by the multi-vector / single-vector bases) ----

    def in_batch_scores(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pair_scores(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def objective(
        self, queries: torch.Tensor, documents: torch.Tensor, negatives: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    # ---- entry point ----

    def forward(
        self, queries: torch.Tensor, documents: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._validate(queries, documents, negatives)
        dtype = torch.promote_types(queries.dtype, torch.float32)
        queries, documents = queries.to(dtype), documents.to(dtype)
        if negatives is not None:
            negatives = negatives.to(dtype)
        return self.objective(queries, documents, negatives)

    def _validate(
        self, queries: torch.Tensor, documents: torch.Tensor, negatives: torch.Tensor | None
    ) -> None:
        shape = "(B, L, D) multi-vector" if self.multi_vector else "(B, D) single-vector"
        other = "a bi_* (single-vector)" if self.multi_vector else "a colbert_* (multi-vector)"
        ndim = 3 if self.multi_vector else 2
        if negatives is None and self.uses_negatives:
            raise ValueError(f"loss {self.name!r} needs hard negatives: pass one negative page per query")
        if negatives is not None and not self.uses_negatives:
            raise ValueError(
                f"loss {self.name!r} uses in-batch negatives only and takes no hard negatives; "
                "choose a *_negative_* loss to train with them"
            )
        named = [("queries", queries), ("documents", documents)]
        if negatives is not None:
            named.append(("negatives", negatives))
        for label, tensor in named:
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"loss {self.name!r}: {label} must be a tensor, got {type(tensor).__name__}")
            if tensor.dim() != ndim:
                raise ValueError(
                    f"loss {self.name!r} expects {shape} embeddings; {label} has shape {tuple(tensor.shape)}"
                    + (f" (use {other} loss for these embeddings)" if tensor.dim() in (2, 3) else "")
                )
            if not tensor.is_floating_point():
                raise ValueError(f"loss {self.name!r}: {label} must be floating point, got {tensor.dtype}")
        batch, dim = queries.shape[0], queries.shape[-1]
        if batch == 0:
            raise ValueError(f"loss {self.name!r}: empty batch")
        for label, tensor in named[1:]:
            if tensor.shape[0] != batch:
                raise ValueError(
                    f"loss {self.name!r}: {label} has {tensor.shape[0]} rows but there are {batch} queries "
                    "(row i must be the page of query i)"
                )
            if tensor.shape[-1] != dim:
                raise ValueError(f"loss {self.name!r}: {label} dim {tensor.shape[-1]} != query dim {dim}")


class _MultiVectorLoss(RetrievalLoss):
    multi_vector = True

    def _tau(self) -> float | None:
        return self.config.smooth_max_tau if self.config.use_smooth_max else None

    def in_batch_scores(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        scores = maxsim_matrix(queries, documents, smooth_max_tau=self._tau())
        if self.config.normalize_scores:
            scores = scores / query_lengths(queries).unsqueeze(1)
        return scores

    def pair_scores(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        scores = maxsim_pairs(queries, documents, smooth_max_tau=self._tau())
        if self.config.normalize_scores:
            scores = scores / query_lengths(queries)
        return scores


class _SingleVectorLoss(RetrievalLoss):
    multi_vector = False

    def in_batch_scores(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        return queries @ documents.T

    def pair_scores(self, queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
        return (queries * documents).sum(dim=-1)


class _InBatchCE:
    def objective(self, queries, documents, negatives):
        return _in_batch_ce(self.in_batch_scores(queries, documents), self.config)


class _InBatchPairwise:
    def objective(self, queries, documents, negatives):
        return _in_batch_pairwise(self.in_batch_scores(queries, documents), self.config)


class _NegativeCE:
    uses_negatives = True

    def objective(self, queries, documents, negatives):
        hard = _hard_negative(self.pair_scores(queries, documents), self.pair_scores(queries, negatives), self.config)
        return _mix(hard, lambda: _in_batch_ce(self.in_batch_scores(queries, documents), self.config), self.config)


class _NegativePairwise:
    uses_negatives = True

    def objective(self, queries, documents, negatives):
        hard = _hard_negative(self.pair_scores(queries, documents), self.pair_scores(queries, negatives), self.config)
        return _mix(
            hard, lambda: _in_batch_pairwise(self.in_batch_scores(queries, documents), self.config), self.config
        )


class ColbertCELoss(_InBatchCE, _MultiVectorLoss):
    """colpali-engine `ColbertLoss`: CE over (MaxSim [/ query length]) / T, positives on the diagonal."""

    name = "colbert_ce"
    config_class = ColbertCEConfig


class ColbertPairwiseLoss(_InBatchPairwise, _MultiVectorLoss):
    """colpali-engine `ColbertPairwiseCELoss`: softplus((hardest in-batch negative - positive) / T)."""

    name = "colbert_pairwise"
    config_class = ColbertPairwiseConfig


class ColbertNegativeCELoss(_NegativeCE, _MultiVectorLoss):
    """colpali-engine `ColbertNegativeCELoss`: (1-w) softplus((neg - pos) / T) + w * colbert_ce."""

    name = "colbert_negative_ce"
    config_class = ColbertNegativeCEConfig


class ColbertNegativePairwiseLoss(_NegativePairwise, _MultiVectorLoss):
    """colpali-engine `ColbertPairwiseNegativeCELoss`: (1-w) softplus((neg - pos) / T) + w * colbert_pairwise."""

    name = "colbert_negative_pairwise"
    config_class = ColbertNegativePairwiseConfig


class BiCELoss(_InBatchCE, _SingleVectorLoss):
    """colpali-engine `BiEncoderLoss`: CE over dot products / T, positives on the diagonal."""

    name = "bi_ce"
    config_class = BiCEConfig


class BiPairwiseLoss(_InBatchPairwise, _SingleVectorLoss):
    """colpali-engine `BiPairwiseCELoss`: softplus((hardest in-batch negative - positive) / T)."""

    name = "bi_pairwise"
    config_class = BiPairwiseConfig


class BiNegativeCELoss(_NegativeCE, _SingleVectorLoss):
    """colpali-engine `BiNegativeCELoss`: (1-w) softplus((neg - pos) / T) + w * bi_ce."""

    name = "bi_negative_ce"
    config_class = BiNegativeCEConfig


class BiNegativePairwiseLoss(_NegativePairwise, _SingleVectorLoss):
    """colpali-engine `BiPairwiseNegativeCELoss`: (1-w) softplus((neg - pos) / T) + w * bi_pairwise."""

    name = "bi_negative_pairwise"
    config_class = BiNegativePairwiseConfig


LOSSES: dict[str, type[RetrievalLoss]] = {
    cls.name: cls
    for cls in (
        ColbertCELoss,
        ColbertPairwiseLoss,
        ColbertNegativeCELoss,
        ColbertNegativePairwiseLoss,
        BiCELoss,
        BiPairwiseLoss,
        BiNegativeCELoss,
        BiNegativePairwiseLoss,
    )
}
