"""Build the tiny byte-level BPE tokenizer shipped for `colqwen2_tiny` (run once; the output is committed).

    python plugins/colqwen/assets/make_tiny_tokenizer.py

It has Qwen2-VL's special tokens (same strings, small ids: `<|image_pad|>` is 12), `<|endoftext|>` as the
pad token as in Qwen2-VL, and a vocabulary learnt from the words of the synthetic quick-start pages.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

VOCAB_SIZE = 512
# Qwen2-VL's special tokens, in the order of their ids there (151643, 151644, ...).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
WORDS = (
    "red green blue yellow orange purple black white gray pink brown cyan "
    "circle square triangle star cross diamond ring bar stripe dot "
    "big small large tiny left right top bottom center corner page document "
    "Query: Describe the image. user assistant which with a an of and in on "
    "shows contains has shape color glyph letter number figure table chart"
).split()


def corpus() -> list[str]:
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [str(d) for d in range(10)]
    lines = [" ".join(pair) for pair in itertools.permutations(WORDS[:40], 2)]
    lines += [f"letter {a} and letter {b}" for a, b in itertools.product(letters[:26], repeat=2)]
    lines += [f"glyph {a}{b}" for a, b in itertools.product(letters, repeat=2)]
    return lines


def main() -> None:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    out = Path(__file__).parent / "tiny_tokenizer"
    fast.save_pretrained(str(out))
    print(f"wrote {out} ({len(fast)} tokens; <|image_pad|> = {fast.convert_tokens_to_ids('<|image_pad|>')})")


if __name__ == "__main__":
    main()
