"""Public path of the embedder (`mt2_jax.embed.Embedder`); it lives in mt2_jax/eval/embed.py."""

from mt2_jax.eval.embed import Embedder, embed_folder, load

__all__ = ["Embedder", "embed_folder", "load"]
