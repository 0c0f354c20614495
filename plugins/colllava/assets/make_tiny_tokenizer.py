"""Build the tiny byte-level BPE tokenizer shipped for `colllava_tiny` (run once; the output is committed).

    python plugins/colllava/assets/make_tiny_tokenizer.py
"""

from __future__ import annotations

from pathlib import Path

from vlzoo_core import build_tiny_tokenizer

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


def main() -> None:
    out = Path(__file__).parent / "tiny_tokenizer"
    fast = build_tiny_tokenizer(out, special_tokens=SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    print(f"wrote {out} ({len(fast)} tokens; <image> = {fast.convert_tokens_to_ids('<image>')})")


if __name__ == "__main__":
    main()
