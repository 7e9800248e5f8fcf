"""Stage 1, the data: audio -> CQT -> prepared dataset -> training views (docs/design.md §2)."""
