"""Secure aggregation (``--secure-aggregation``): clients publish only masked vectors.

* :mod:`~dfml.algorithms.secure.masks` — the math, pure functions: the
  fixed-point ring, pairwise seeds and PRG masks, the dropout correction.
* :mod:`~dfml.algorithms.secure.config` — the ``secure`` config section.
* :mod:`~dfml.algorithms.secure.aggregation` — the mixin in front of any
  learner whose aggregation is a weighted sum
  (:func:`~dfml.algorithms.secure.aggregation.secure`), server and gossip mode.
* :mod:`~dfml.algorithms.secure.report` — the summary key.

The protocol, its costs and the threat model are in docs/privacy.md.
"""
