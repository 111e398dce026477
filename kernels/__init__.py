"""Numba kernels of fastgd (being rewritten)."""
