"""Test-wide JAX settings: rank promotion raises, and float64 is available.

64-bit mode is on so tests can choose float64 where a tolerance needs it; the
study code casts to the dtype its config names, so float32 paths stay float32.
"""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)
