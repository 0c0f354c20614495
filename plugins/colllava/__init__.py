"""ColLlavaI: LLaVA-Interleave (SigLIP encoder, 2-layer GELU projector, Qwen2 LM) as a late-interaction retriever.

The hook module (`colllava.plugin`) and the configs import no torch; the component modules do.
"""
