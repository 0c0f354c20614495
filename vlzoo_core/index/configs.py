"""Configuration models of the index backends (no torch: the registry reads them when plugins load)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vlzoo_core.config import StrictModel


class CandidateConfig(StrictModel):
    """Which candidate generator, and its parameters (the other method's parameters are ignored)."""

    method: Literal["muvera", "tokens"] = "tokens"
    seed: int = Field(0, ge=0, description="Seeds the SimHash planes and projections, or the IVF training.")
    # MUVERA
    reps: int = Field(20, gt=0, description="MUVERA: independent SimHash partitions.")
    k_sim: int = Field(5, gt=0, le=12, description="MUVERA: hyperplanes per partition (2**k_sim buckets).")
    d_proj: int | None = Field(16, gt=0, description="MUVERA: inner projection size; None keeps the vectors.")
    # token-level IVF
    nlist: int = Field(1024, gt=0, description="tokens: inverted lists (capped to keep >= 39 tokens per list).")
    nprobe: int = Field(16, gt=0, description="tokens: lists visited per query token.")
    token_k: int = Field(64, gt=0, description="tokens: nearest page tokens fetched per query token.")
    pq_m: int | None = Field(32, gt=0, description="tokens: PQ sub-quantizers (4 bits each); None stores floats.")

    @model_validator(mode="after")
    def _probe_within_lists(self) -> CandidateConfig:
        if self.nprobe > self.nlist:
            raise ValueError(f"nprobe ({self.nprobe}) exceeds nlist ({self.nlist})")
        return self


class LocalConfig(StrictModel):
    """The embedded backend: exact MaxSim over the memory-mapped shards, optionally with a candidate stage."""

    approximate: CandidateConfig | None = None


class QdrantConfig(StrictModel):
    url: str | None = None
    path: str = "qdrant"  # relative to the index folder; used when `url` is not set
    collection: str = Field("vlzoo", min_length=1)
    timeout: int = Field(60, gt=0)

    @model_validator(mode="after")
    def _check(self) -> QdrantConfig:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self
