"""mt2_jax: MT2 (multi-class-token ViT-1D, Kong et al., WASPAA 2025) in JAX/Flax."""

__version__ = "0.1.0"
