"""Corpus-scale retrieval: page sources, the index folder, pooling, search and backends."""
