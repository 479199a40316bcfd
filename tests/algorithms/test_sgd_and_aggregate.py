from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dfml.algorithms import aggregate
from dfml.algorithms.aggregate import (
    data_size_weights,
    stacked_weighted_averages,
    weighted_average,
)
from dfml.algorithms.sgd import evaluate, minibatches, sgd_epochs
from dfml.channels import row_runs
from dfml.models.zoo import ModelConfig, build_model


def test_weighted_average_hand_example():
    out = weighted_average(
        [np.array([1.0, 2.0], np.float32), np.array([3.0, -2.0], np.float32)], [0.25, 0.75]
    )
    np.testing.assert_array_equal(out, np.array([2.5, -1.0], np.float32))
    assert out.dtype == np.float32
    with pytest.raises(ValueError):
        weighted_average([np.zeros(2)], [0.5, 0.5])


def test_stacked_weighted_averages_have_each_rows_per_client_bits():
    """Ragged neighbour lists (none, one, three), a float16 neighbour and
    weights that do not sum to 1: every row has the bits of weighted_average."""
    rng = np.random.default_rng(0)
    own = rng.standard_normal((4, 7)).astype(np.float32)
    neighbors = [
        [],
        [rng.standard_normal(7).astype(np.float32)],
        [rng.standard_normal(7).astype(np.float32) for _ in range(3)],
        [rng.standard_normal(7).astype(np.float16), rng.standard_normal(7).astype(np.float32)],
    ]
    self_weights = [1.0, 0.5, 0.1, 1 / 3]
    weights = [[], [0.5], [0.2, 0.3, 0.4], [1 / 3, 1 / 3]]
    got = stacked_weighted_averages(torch.from_numpy(own.copy()), self_weights, neighbors, weights)
    for c in range(4):
        want = weighted_average([own[c], *neighbors[c]], [self_weights[c], *weights[c]])
        assert got[c].numpy().tobytes() == want.tobytes()
    # Alone, each row is still the same bits (a row does not depend on its cohort).
    alone = stacked_weighted_averages(
        torch.from_numpy(own[2:3].copy()), self_weights[2:3], neighbors[2:3], weights[2:3]
    )
    assert alone[0].numpy().tobytes() == got[2].numpy().tobytes()


@pytest.mark.parametrize("block_bytes", [24, aggregate.MIX_BLOCK_BYTES])
def test_stacked_weighted_averages_of_packed_rows_have_each_rows_per_client_bits(
    block_bytes, monkeypatch
):
    """Neighbours read as rows of packed objects (a ring over two blocks and a
    float16 block) are mixed block by block where they lie — own vectors given
    as rows (a new matrix) or as the matrix itself (in place) — with the bits
    of weighted_average row by row."""
    rng = np.random.default_rng(1)
    n = 40
    own = rng.standard_normal((n, 5)).astype(np.float32)
    left = rng.standard_normal((n, 5)).astype(np.float32)
    right = rng.standard_normal((n, 5)).astype(np.float32)
    halves = rng.standard_normal((n, 5)).astype(np.float16)
    neighbors = [[left[c], right[(c + 1) % n], halves[c]] for c in range(n)]
    weights = [[0.25, 0.5, 1 / 7 + c / 100] for c in range(n)]
    self_weights = [1 - sum(w) for w in weights]
    assert [(a, b) for a, b, _ in row_runs([v[1] for v in neighbors])] == [(0, n - 1), (n - 1, n)]
    monkeypatch.setattr(aggregate, "MIX_BLOCK_BYTES", block_bytes)  # 1 row, or all, a block
    fused = aggregate._fused_mix(list(torch.from_numpy(own)), self_weights, neighbors, weights)
    assert fused is not None  # this layout takes the blockwise path
    matrix = torch.from_numpy(own.copy())
    from_rows = stacked_weighted_averages(list(matrix), self_weights, neighbors, weights)
    in_place = stacked_weighted_averages(matrix, self_weights, neighbors, weights)
    assert in_place is matrix
    for c in range(n):
        want = weighted_average([own[c], *neighbors[c]], [self_weights[c], *weights[c]])
        assert from_rows[c].numpy().tobytes() == want.tobytes()
        assert in_place[c].numpy().tobytes() == want.tobytes()


def test_stacked_weighted_averages_refuse_mismatched_lengths():
    with pytest.raises(ValueError, match="row 0: 1 vectors but 2 weights"):
        stacked_weighted_averages(torch.zeros(1, 3), [0.5], [[np.zeros(3, np.float32)]], [[1, 2]])
    with pytest.raises(ValueError, match="2 rows, 1 self weights"):
        stacked_weighted_averages(torch.zeros(2, 3), [0.5], [[]], [[]])


def test_data_size_weights():
    np.testing.assert_allclose(data_size_weights([1, 3]), [0.25, 0.75])
    with pytest.raises(ValueError):
        data_size_weights([0, 1])


def test_minibatches_cover_each_sample_once():
    batches = list(minibatches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))


def test_sgd_epochs_equals_torch_optim_sgd():
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="mlp", hidden=6), (4,), 3)
    flat0 = model.init_flat(0)
    x, y = torch.randn(23, 4), torch.randint(0, 3, (23,))
    got, loss = sgd_epochs(model, flat0, x, y, lr=0.3, epochs=2, batch_size=5, seed=11)

    module = model.module
    vector_to_parameters(flat0.clone(), module.parameters())
    opt = torch.optim.SGD(module.parameters(), lr=0.3)
    rng = np.random.default_rng(11)
    losses = []
    for _ in range(2):
        order = rng.permutation(23)
        for s in range(0, 23, 5):
            b = torch.from_numpy(order[s : s + 5])
            opt.zero_grad()
            ell = torch.nn.functional.cross_entropy(module(x[b]), y[b])
            ell.backward()
            opt.step()
            losses.append(float(ell.detach()))
    torch.testing.assert_close(
        got, parameters_to_vector(module.parameters()).detach(), rtol=0, atol=1e-6
    )
    assert loss == pytest.approx(np.mean(losses), abs=1e-6)


def test_regularizer_enters_the_gradient():
    model = build_model(ModelConfig(model="mlp", hidden=3), (2,), 2)
    flat0 = model.init_flat(0)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    plain, _ = sgd_epochs(model, flat0, x, y, lr=0.1, epochs=1, batch_size=4, seed=0)
    anchored, _ = sgd_epochs(
        model,
        flat0,
        x,
        y,
        lr=0.1,
        epochs=1,
        batch_size=4,
        seed=0,
        regularizer=lambda t: 0.5 * ((t - flat0 - 1.0) ** 2).sum(),
    )
    # One full-batch step: the extra gradient is (θ0 − θ0 − 1) = −1, times lr.
    torch.testing.assert_close(anchored - plain, torch.full_like(plain, 0.1), rtol=0, atol=1e-6)


def test_evaluate_counts_correct_predictions():
    model = build_model(ModelConfig(model="mlp", hidden=3), (2,), 2)
    flat = torch.zeros(model.size)
    last_bias = model.size - 2
    flat[last_bias + 1] = 1.0  # always predicts class 1
    loss, acc = evaluate(model, flat, torch.randn(4, 2), torch.tensor([1, 1, 0, 1]))
    assert acc == 0.75
    assert loss == pytest.approx(
        float(
            torch.nn.functional.cross_entropy(
                torch.tensor([[0.0, 1.0]] * 4), torch.tensor([1, 1, 0, 1])
            )
        )
    )
