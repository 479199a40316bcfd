"""Meta-learning math: pure functions of flat parameter vectors (torch.func).

* :mod:`~dfml.algorithms.meta.maml` — MAML (second order), FOMAML, Meta-SGD
  and Per-FedAvg's first-order / Hessian-free meta-gradients;
* :mod:`~dfml.algorithms.meta.reptile` — Reptile's interpolation step;
* :mod:`~dfml.algorithms.meta.eoa` — MEFL's equilibrated optimizing
  aggregation weights;
* :mod:`~dfml.algorithms.meta.afml` — AFML's Gaussian-weight encoder,
  trade-off regularizers and client objective.

Nothing here knows about Ray, actors or clients: a function takes tensors (or
numpy arrays) and returns tensors, so each is tested against an independent
computation (explicit autograd, closed forms, hand-computed numbers).
"""
