"""Build the tiny byte-level BPE tokenizer shipped for `colqwen2_tiny` (run once; the output is committed).

    python plugins/colqwen/assets/make_tiny_tokenizer.py

It has Qwen2-VL's special tokens (same strings, small ids: `<|image_pad|>` is 12), `<|endoftext|>` as the
pad token as in Qwen2-VL, and a vocabulary learnt from the words of the synthetic quick-start pages.
"""

from __future__ import annotations

from pathlib import Path

from vlzoo_core import build_tiny_tokenizer

# Qwen2-VL's special tokens, in the order of their ids there (151643, 151644, ...).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]


def main() -> None:
    out = Path(__file__).parent / "tiny_tokenizer"
    fast = build_tiny_tokenizer(out, special_tokens=SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    print(f"wrote {out} ({len(fast)} tokens; <|image_pad|> = {fast.convert_tokens_to_ids('<|image_pad|>')})")


if __name__ == "__main__":
    main()
