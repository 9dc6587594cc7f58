"""Shared test setup: CPU, fast compiles."""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

# The suite compiles many small programs; optimisations cost more than they save.
jax.config.update('jax_disable_most_optimizations', True)
# The comparisons against numpy and reference cells assume float32 products;
# GPUs would otherwise multiply float32 in TF32 (~1e-3 relative error).
jax.config.update('jax_default_matmul_precision', 'highest')
