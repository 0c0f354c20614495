"""Training and evaluation data: sources loaded through `datasets`, the synthetic generator, the collator."""
