"""Stage 4, evaluation: embeddings, the HEAR interface and the probes (docs/design.md §2)."""
