"""Attention kernels: NumPy references, single-module builds, autotuning.

The kernels themselves are generated: one module per mechanism, rendered from
``codegen/templates/attention*.py.j2`` with the state's shapes and knobs baked in
(``attention`` is scaled dot-product; the others are ``attention_<mechanism>``). A build
carries ``attention`` plus the module of the mechanism ``architecture.attention`` selects
(:func:`codegen.render.build_modules`); :mod:`runtime.kernels.build` renders any other on
demand. Each module reads only its own knobs, so changing one knob recompiles one module.

* :mod:`runtime.kernels.reference` — the executable specification (float64 NumPy), masks
  and the fully-masked-row rule (zeros) included.
* :mod:`runtime.kernels.build` — render, compile and import one module outside a full build
  (tests, benchmark, tuner).
* :mod:`runtime.kernels.inputs` — standard inputs and FLOP counts per mechanism.
* :mod:`runtime.kernels.tune` — ``rsi tune kernels``: cached, interleaved measurements of
  the loop-structure candidates; winners go into ``kernels.tuned`` with a machine
  fingerprint.

Kernel conventions: float32 C-contiguous inputs of at most ``architecture.seq_len`` rows,
checked at the boundary (one-line ``ValueError``); an optional ``(n,)`` key padding mask
(bool/uint8, 1 = attend); causality baked from ``architecture.causal``; the GIL is released
in the loops; the same ``.py`` runs interpreted (pure-Python tier).
"""
