"""Small byte-level BPE tokenizers for offline `*_tiny` recipes, built from a word list and saved as HF files."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

# Words of the synthetic quick-start pages and queries, plus prompt words: what tiny recipes must tokenise well.
WORDS = (
    "red green blue yellow orange purple black white gray pink brown cyan "
    "circle square triangle star cross diamond ring bar stripe dot "
    "big small large tiny left right top bottom center corner page document "
    "Query: Describe the image. user assistant which with a an of and in on "
    "shows contains has shape color glyph letter number figure table chart"
).split()


def default_corpus() -> list[str]:
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [str(d) for d in range(10)]
    lines = [" ".join(pair) for pair in itertools.permutations(WORDS[:40], 2)]
    lines += [f"letter {a} and letter {b}" for a, b in itertools.product(letters[:26], repeat=2)]
    lines += [f"glyph {a}{b}" for a, b in itertools.product(letters, repeat=2)]
    return lines


def build_tiny_tokenizer(
    output: Path,
    *,
    special_tokens: Sequence[str],
    eos_token: str,
    pad_token: str,
    vocab_size: int = 512,
    corpus: Sequence[str] | None = None,
):
    """Train a byte-level BPE tokenizer (special tokens get the first ids, in order) and save it to `output`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus if corpus is not None else default_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=eos_token,
        pad_token=pad_token,
        additional_special_tokens=[token for token in special_tokens if token != pad_token],
    )
    fast.save_pretrained(str(output))
    return fast
