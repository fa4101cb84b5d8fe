"""Synthetic data and the demo tour, shipped with the package so `tessera demo` runs
anywhere Tessera is installed.

* :mod:`tessera.samples.cohort` — a multi-hospital cohort for secure SQL and DP.
* :mod:`tessera.samples.hiv` — an HIV-clinic cohort for ``tessera recommend``.
* :mod:`tessera.samples.risk_cohort` — the 2,000-patient table of ``risk/cohort.csv``.
* ``risk/`` — that table, generalisation hierarchies and a researcher's request.
* ``demo/NN-*.sh`` — the narrated steps of ``tessera demo`` (and ``make demo``).

All generators are seeded (numpy's PCG64): reproducible test data, never secrets.
"""
