"""Models: assembling retrievers from components, heads, LoRA, checkpoint loading, processors and scoring."""
