"""Stage 3, pretraining: objective, train step, checkpoints, diagnostics, the loop (docs/design.md §2)."""
