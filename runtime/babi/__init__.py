"""The bAbI reference model and benchmark.

- ``data``: bAbI files → :class:`~runtime.babi.data.Story` objects; seeded splits by story.
- ``generate``: an embedded generator for 12 task families (no download needed).
- ``model``: :class:`~runtime.babi.model.BabiModel` over a build's generated ``encoding``
  (story → integer-coded facts, parsed once), ``experts`` (typed reasoners writing evidence
  rows) and ``scoring`` (weights, coefficients and routing rules baked in) modules.
- ``evaluate``: per-task accuracy and throughput (``rsi eval``, see ``cli``).
- ``learn``: answer vocabulary and associations learned from the train split;
  ``lexicon``: verb classes (move, take, drop, give) learned from its supporting facts.
- ``tune``: evidence collection, the exact NumPy proposal screener and a seeded search
  (reusable by the RSI loop); ``pipeline`` chains learning and tuning.

The model is never given a task number or a file name; tasks only group the results.
"""
