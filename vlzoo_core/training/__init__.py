"""Training: contrastive fine-tuning of any registered retriever on transformers' Trainer."""
