"""Attention kernels: NumPy references, single-module builds, autotuning."""
