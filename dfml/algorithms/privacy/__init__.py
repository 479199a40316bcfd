"""Differentially private local training: DP-SGD and its privacy accounting.

* :mod:`~dfml.algorithms.privacy.dpsgd` — the math, pure functions of
  tensors: per-sample gradients (one vectorised pass), clipping to norm C,
  Gaussian noise σC from a seeded generator (:class:`Privatizer`, one per
  client and round).
* :mod:`~dfml.algorithms.privacy.accounting` — how many noised steps a
  round takes at which sampling rate (:class:`Usage`), and ε / σ from
  Opacus's RDP accountant.
* :mod:`~dfml.algorithms.privacy.config` — the ``privacy`` config section
  (``--dp-clip``, ``--dp-noise``, ``--dp-epsilon``, ``--dp-delta``).
* :mod:`~dfml.algorithms.privacy.accountant` — the run's accountant: each
  client's ε per round in ``metrics.parquet``, the final ε in
  ``summary.json``.

The SGD paths that honour a :class:`~dfml.algorithms.privacy.dpsgd.Privatizer`
are :func:`~dfml.algorithms.sgd.sgd_epochs`, the vectorised cohorts
(:func:`~dfml.algorithms.batched.batched_sgd_epochs`) and the meta-learners'
first-order paths; an algorithm says which of its steps are noised through
:meth:`~dfml.algorithms.base.Algorithm.private_usage`.
"""
