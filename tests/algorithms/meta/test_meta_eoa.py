"""MEFL's EOA weights: properties, documented choices and a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dfml.algorithms.meta.eoa import EOAParams, EOAState, cosine, eoa_step, eoa_weights


def test_hand_computed_example():
    # d = 2, x^t = 0; history: m = (1, 0), μ_0 = (1, 0), μ_1 = (0, 1), v_0 = 0.5, v_1 = 1.5.
    state = EOAState(
        direction=np.array([1.0, 0.0]),
        means={0: np.array([1.0, 0.0]), 1: np.array([0.0, 1.0])},
        variances={0: 0.5, 1: 1.5},
    )
    params = EOAParams(
        direction_decay=0.5, variance_decay=0.5, variance_eps=0.1, min_similarity=0.1, global_lr=0.5
    )
    ref = np.zeros(2, np.float32)
    out = eoa_step(
        ref,
        [np.array([2.0, 0.0], np.float32), np.array([1.0, 1.0], np.float32)],
        [0, 1],
        state,
        params,
    )
    # s = (1, 1/√2); σ² = (‖(1,0)‖²/2, ‖(1,0)‖²/2) = (0.5, 0.5)
    # v = (0.5·0.5 + 0.5·0.5, 0.5·1.5 + 0.5·0.5) = (0.5, 1.0); v̄ = 0.75; εv̄ = 0.075
    # r = (1/0.575, (1/√2)/1.075)  →  w_0 = 43√2 / (43√2 + 23)
    w0 = 43 * math.sqrt(2) / (43 * math.sqrt(2) + 23)
    np.testing.assert_allclose(out.similarities, [1.0, 1 / math.sqrt(2)], rtol=1e-12)
    np.testing.assert_allclose(out.variances, [0.5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(out.weights, [w0, 1 - w0], rtol=1e-12)
    # x^{t+1} = 0 + 0.5 (w_0 (2, 0) + w_1 (1, 1))
    np.testing.assert_allclose(out.aggregate, [0.5 * (2 * w0 + 1 - w0), 0.5 * (1 - w0)], rtol=1e-6)
    # m = 0.5 (1, 0) + 0.5 Δ̄, Δ̄ = (1.5, 0.5); μ_k = 0.5 μ_k + 0.5 Δ_k
    np.testing.assert_allclose(out.state.direction, [1.25, 0.25])
    np.testing.assert_allclose(out.state.means[0], [1.5, 0.0])
    np.testing.assert_allclose(out.state.means[1], [0.5, 1.0])
    assert out.state.variances == {0: 0.5, 1: 1.0}
    # The input state is not mutated (pure function).
    assert state.variances == {0: 0.5, 1: 1.5}
    np.testing.assert_array_equal(state.means[0], [1.0, 0.0])


def random_history(rng, ids, d=20):
    return EOAState(
        direction=rng.normal(size=d),
        means={k: rng.normal(size=d) for k in ids},
        variances={k: 1.0 for k in ids},
    )


def test_weights_sum_to_one_and_are_positive():
    rng = np.random.default_rng(0)
    ids = [3, 5, 7, 9]
    updates = [rng.normal(size=20) for _ in ids]
    updates[1] = -updates[1]
    w, s, _, _ = eoa_weights(updates, ids, random_history(rng, ids), EOAParams())
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert (w > 0).all() and (s >= EOAParams().min_similarity).all()


def test_update_aligned_with_ema_direction_gets_more_weight():
    d = 8
    direction = np.eye(d)[0]
    aligned, orthogonal = np.eye(d)[0] * 2, np.eye(d)[1] * 2
    # Equal histories and equal deviations from them: only the alignment differs.
    state = EOAState(direction, {0: aligned.copy(), 1: orthogonal.copy()}, {0: 1.0, 1: 1.0})
    w, s, v, _ = eoa_weights([aligned, orthogonal], [0, 1], state, EOAParams())
    assert v[0] == v[1]
    assert s[0] == pytest.approx(1.0) and s[1] == EOAParams().min_similarity
    assert w[0] > w[1]


def test_high_variance_client_gets_less_weight():
    d = 8
    direction = np.ones(d)
    steady, erratic = np.ones(d), np.ones(d) * 3.0  # same direction, cos = 1 for both
    state = EOAState(direction, {0: np.ones(d), 1: np.ones(d)}, {0: 0.1, 1: 0.1})
    w, s, v, _ = eoa_weights([steady, erratic], [0, 1], state, EOAParams())
    assert s[0] == pytest.approx(s[1])
    assert v[1] > v[0] and w[1] < w[0]


def test_weights_do_not_depend_on_the_scale_of_updates():
    rng = np.random.default_rng(1)
    ids = [0, 1, 2]
    updates = [rng.normal(size=10) for _ in ids]
    state = random_history(rng, ids, d=10)
    scaled_state = EOAState(
        state.direction * 1e-3,
        {k: m * 1e-3 for k, m in state.means.items()},
        {k: v * 1e-6 for k, v in state.variances.items()},
    )
    w, *_ = eoa_weights(updates, ids, state, EOAParams())
    w_small, *_ = eoa_weights([u * 1e-3 for u in updates], ids, scaled_state, EOAParams())
    np.testing.assert_allclose(w, w_small, rtol=1e-9)


def test_first_round_uses_mean_update_and_cross_client_deviation():
    updates = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 1.0])]
    _, s, v, st = eoa_weights(updates, [0, 1, 2], EOAState(), EOAParams())
    mean = np.array([2 / 3, 2 / 3])
    np.testing.assert_allclose(s, [cosine(u, mean) for u in updates])
    np.testing.assert_allclose(v, [np.sum((u - mean) ** 2) / 2 for u in updates])
    np.testing.assert_allclose(st.direction, mean)
    np.testing.assert_array_equal(st.means[2], updates[2])
    # Identical updates: no variance anywhere → weights ∝ similarity only (here uniform).
    same = [np.array([1.0, 2.0])] * 3
    w_same, *_ = eoa_weights(same, [0, 1, 2], EOAState(), EOAParams())
    np.testing.assert_allclose(w_same, [1 / 3] * 3)


def test_global_lr_interpolates_reference_and_weighted_average():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=6).astype(np.float32)
    vectors = [rng.normal(size=6).astype(np.float32) for _ in range(3)]
    full = eoa_step(ref, vectors, [0, 1, 2], EOAState(), EOAParams(global_lr=1.0))
    half = eoa_step(ref, vectors, [0, 1, 2], EOAState(), EOAParams(global_lr=0.5))
    np.testing.assert_allclose(
        full.aggregate, sum(w * x for w, x in zip(full.weights, vectors, strict=True)), rtol=1e-5
    )
    np.testing.assert_allclose(
        half.aggregate, 0.5 * ref + 0.5 * full.aggregate, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("direction_decay", 1.0),
        ("variance_decay", -0.1),
        ("variance_eps", 0.0),
        ("min_similarity", 0.0),
        ("global_lr", 0.0),
    ],
)
def test_params_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        EOAParams(**{field: value})
