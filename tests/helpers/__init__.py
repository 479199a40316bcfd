"""Helpers the tests share (importable as ``helpers``: pytest puts ``tests/`` on the path).

* :mod:`helpers.fault`: the fault and runtime tests' small experiment (``run``),
  its results readers and failure-injecting callbacks;
* :mod:`helpers.contexts`: client contexts over real data for client-half tests;
* :mod:`helpers.cli`: the small run the CLI tests pass as flags (``tiny_argv``);
* :mod:`helpers.reference`: DFedAvg as a plain-PyTorch loop, and clients as
  plain ``nn.Module``s with ``torch.optim.SGD`` for references of other
  algorithms (CHOCO-SGD, compressed gossip); no code shared with dfml's training.
"""


def assert_test_accuracy(value: float, test_size: int) -> None:
    """``value`` is a fraction of one client's ``test_size`` test samples: k / n for an
    integer k (a score computed on other data, or averaged, or a NaN, fails)."""
    hits = value * test_size
    assert abs(hits - round(hits)) < 1e-6 and 0 <= round(hits) <= test_size, (value, test_size)
