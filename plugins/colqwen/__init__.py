"""ColQwen2 (Qwen2-VL) and ColQwen2.5 (Qwen2.5-VL) as late-interaction retrievers.

Components: the Qwen vision towers without their merger (encoders), the patch mergers (projectors), the
Qwen2-VL / Qwen2.5-VL text models (backbones, M-RoPE), the ColQwen2 processor and the checkpoint formats.
The hook module (`colqwen.plugin`) and the configs import no torch; the component modules do.
"""
