"""Public path of the HEAR 2021 interface; it lives in mt2_jax/eval/hear.py."""

from mt2_jax.eval.hear import get_scene_embeddings, get_timestamp_embeddings, load_model

__all__ = ["get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
