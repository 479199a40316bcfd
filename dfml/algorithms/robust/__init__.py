"""Byzantine clients and robust mixing (``--byzantine``, ``--robust-aggregation``).

* :mod:`~dfml.algorithms.robust.aggregators` — the rules, pure functions of
  vectors: coordinate median, trimmed mean, Krum / multi-Krum, ClippedGossip.
* :mod:`~dfml.algorithms.robust.attacks` — the attackers (drawn from the
  seed) and what they publish: sign flip, Gaussian noise, ALIE; label flipping.
* :mod:`~dfml.algorithms.robust.config` — the ``robustness`` config section.
* :mod:`~dfml.algorithms.robust.settings` — :class:`Robustness`, what the
  run's algorithm carries to every actor; :mod:`~dfml.algorithms.robust.setup`
  builds and checks it before any actor starts.
* :mod:`~dfml.algorithms.robust.mixing` — the mixin in front of any learner
  that sends its vector (:func:`~dfml.algorithms.robust.mixing.robust`).
* :mod:`~dfml.algorithms.robust.report` — ``honest_accuracy`` and the summary keys.

The threat model is in docs/robustness.md.
"""
