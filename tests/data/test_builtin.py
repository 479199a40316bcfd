"""The embedded digits: scikit-learn's own data, read without importing scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from dfml.data.builtin import load_digits


def test_digits_equal_scikit_learns_own_loader():
    from sklearn.datasets import load_digits as sk_load_digits

    ours, theirs = load_digits(), sk_load_digits()
    assert ours.x.shape == (1797, 1, 8, 8) and ours.num_classes == 10
    np.testing.assert_array_equal(ours.x[:, 0], theirs.images.astype(np.float32))
    np.testing.assert_array_equal(ours.y, theirs.target)


def test_loading_digits_imports_no_scikit_learn():
    # Every Ray actor loads its dataset: scikit-learn's import (~2 s) would be paid
    # by each one. A fresh process, as an actor is.
    code = "import sys; from dfml.data.builtin import load_digits; load_digits(); "
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
