"""mt2_jax: MT2 (multi-class-token ViT-1D, Kong et al., WASPAA 2025) in JAX/Flax."""

from mt2_jax import host as _host

_host.tune_malloc()  # Before JAX starts threads; see host.py.

__version__ = "0.1.0"
