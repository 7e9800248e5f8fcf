"""`python -m mt2_jax.cli COMMAND [flags]`: the `mt2` console script without its wrapper."""

from mt2_jax.cli import main

if __name__ == "__main__":
  main()
