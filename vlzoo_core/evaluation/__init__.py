"""Evaluation: MTEB's retrieval metrics (`metrics`), the ViDoRe dataset layouts (`datasets`), the cached-index
runner behind `vlzoo eval` (`runner`) and the ViDoRe benchmark task lists (`benchmarks`). See docs/evaluation.md."""
