"""Statistics shared by ``report``, ``compare`` and ``check``: per-unit data, resampling, paired tests.

- :mod:`.units` — :class:`UnitData`, the per-image data behind a metric, and pooling of replicates;
- :mod:`.resample` — cluster bootstrap weights, swap patterns, intervals, Holm's correction;
- :mod:`.paired` — the paired bootstrap CI and permutation p-value of B − A for one metric;
- :mod:`.build` — unit data from a suite's sample records, and metrics (value + CI) from unit data;
- :mod:`.power` — the power of the paired test at a given n and effect, simulated from stored units.
"""
