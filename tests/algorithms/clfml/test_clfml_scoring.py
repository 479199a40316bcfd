"""The requester's task score, the support set and tasks on clients lacking labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts
from torch import nn

from dfml.actors.state import ClientContext, ClientData, ClientState
from dfml.algorithms.base import Algorithm, LocalSGDConfig, Message
from dfml.algorithms.clfml.scoring import TaskTestSet, restricted_predictions, score_task
from dfml.algorithms.clfml.service import TaskConfig
from dfml.algorithms.clfml.task_client import (
    TASK_SALT,
    balanced_count,
    support_set,
    task_finetune,
    train_generator,
)
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel


def _linear(weight: np.ndarray) -> tuple[FlatModel, torch.Tensor]:
    """A bias-free linear model over 2 features whose logits are x @ weight.T."""
    model = FlatModel(nn.Linear(2, weight.shape[0], bias=False))
    return model, torch.from_numpy(weight.astype(np.float32).reshape(-1))


def test_score_task_against_a_hand_example():
    # Logits x @ W.T with W rows per class 0..3; samples are one-hot-ish.
    model, vector = _linear(np.array([[1, 0], [0, 1], [5, 5], [-1, -1]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    test = TaskTestSet(x, np.array([0, 1, 0, 3, 2]), np.array([10, 11, 12, 13, 14]))
    # Restricted to 𝒯 = {0, 1, 3}, class 2 (which always wins) cannot be predicted.
    pred = restricted_predictions(model, vector, x, [0, 1, 3])
    assert pred.tolist() == [0, 1, 0, 1, 0]
    # Client 7's cluster holds {0, 1}; client 8's holds {0}; label 3 is missing for both.
    other = torch.from_numpy(np.array([[1, 0], [-1, -1], [9, 9], [0, 5]], np.float32).ravel())
    score = score_task(model, {7: vector, 8: other}, test, [0, 1, 3], {7: [0, 1], 8: [0]})
    # Samples of 𝒯: positions 0, 1, 2, 3 (labels 0, 1, 0, 3); position 4 (label 2) is not.
    # Client 7 predicts 0, 1, 0, 1 → 3/4; client 8: logits rows → 0, 3, 0, 3 → 3/4.
    assert score.accuracy == pytest.approx(0.75)
    # Present: client 7 labels {0, 1} → positions 0, 1, 2 all right (1.0); client 8
    # label {0} → positions 0, 2 right (1.0). Missing: client 7 → [3] wrong (0.0);
    # client 8 → [1, 3]: 3 right, 1 wrong (0.5).
    assert score.present == pytest.approx(1.0)
    assert score.missing == pytest.approx(0.25)
    assert [(c, p, v) for c, p, v, _ in score.rows] == [
        (7, 0, 0), (7, 1, 1), (7, 2, 0), (7, 3, 1),
        (8, 0, 0), (8, 1, 3), (8, 2, 0), (8, 3, 3),
    ]  # fmt: skip


def test_a_label_without_test_samples_is_refused():
    test = TaskTestSet(torch.zeros(2, 2), np.array([0, 1]), np.array([0, 1]))
    test.check([0, 1])
    with pytest.raises(ConfigError, match="label 5 has no held-out test sample"):
        test.check([0, 5])


def test_support_set_keeps_at_most_shots_per_label_and_is_seeded():
    ctxs, _ = make_contexts(3)
    ctx = ctxs[0]
    labels = sorted(set(ctx.data.y_query.tolist()))[:3]
    full_x, full_y = support_set(ctx, labels, 0, seed=1)
    assert set(full_y.tolist()) == set(labels) and len(full_y) == int(
        torch.isin(ctx.data.y_query, torch.tensor(labels)).sum()
    )
    x, y = support_set(ctx, labels, 1, seed=1)
    assert sorted(y.tolist()) == sorted(labels)  # one of each
    again_x, _ = support_set(ctx, labels, 1, seed=1)
    assert torch.equal(x, again_x)
    # Each kept sample is one of the client's query samples of its label.
    for xi, yi in zip(x, y, strict=True):
        assert any(torch.equal(xi, q) for q in full_x[full_y == yi])


def _message(**extra) -> Message:
    return Message(0, (), (), 1.0, extra)


def test_task_steps_on_a_client_without_samples_of_the_labels():
    """The crash class: a generator or a task over labels the client does not hold."""
    ctxs, params = make_contexts(3)
    full = ctxs[0]
    d = full.data
    keep = {part: getattr(d, f"y_{part}") < 2 for part in ("meta", "query", "test")}
    data = ClientData(
        *(t for part in ("meta", "query", "test") for t in (
            getattr(d, f"x_{part}")[keep[part]], getattr(d, f"y_{part}")[keep[part]]
        ))
    )  # fmt: skip
    ctx = ClientContext(0, full.model, data, full.device, full.seed)  # labels 0 and 1 only
    absent = [5, 7]
    algorithm = Algorithm(LocalSGDConfig())
    state = ClientState(0, params[0])
    universe = list(range(10))
    first = {"labels": absent, "universe": universe, "first": True}
    state, metrics = train_generator(algorithm, ctx, state, [], _message(**first))
    assert np.isnan(metrics["generator_loss"]) and "generator" in state.extras
    extra = {
        "labels": absent, "first": True, "adapt": (1, 0.1), "neighbors": 0, "generated": [],
        "universe": universe, "per_label": 2, "lr": 0.05, "batch_size": 8, "shots": 1, "task": 0,
        "scratch": False, "head": "linear", "rows": {},
    }  # fmt: skip
    state, metrics = task_finetune(algorithm, ctx, state, [], _message(**extra))
    assert torch.equal(state.extras["task"], params[0])  # nothing to fit: unchanged
    state, metrics = task_finetune(algorithm, ctx, state, [], _message(**{**extra, "adapt": None}))
    assert torch.equal(state.extras["task"], params[0])


def test_reference_classifier_recognises_real_samples_not_mislabelled_ones():
    from dfml.algorithms.clfml.scoring import ReferenceClassifier
    from dfml.data.config import DataConfig
    from dfml.data.registry import load_dataset

    data = load_dataset(DataConfig(dataset="digits"))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.y))
    train, held = order[:1200], order[1200:]
    reference = ReferenceClassifier(data.features(train), data.labels(train))
    x, y = data.features(held), data.labels(held)
    assert reference.recognition(x, y) > 0.9
    assert reference.recognition(x, (y + 1) % 10) < 0.1


def test_balanced_generation_matches_the_real_support_per_label():
    assert balanced_count(torch.tensor([0, 0, 0, 4, 4, 4, 7, 7, 7])) == 3
    assert balanced_count(torch.tensor([0, 0, 0, 0, 1])) == 2  # mean 2.5 rounds to even
    assert balanced_count(torch.tensor([3])) == 1
    assert balanced_count(torch.tensor([], dtype=torch.long)) == 1
    assert TaskConfig(generated_per_label=0).generated_per_label == 0
    with pytest.raises(ConfigError, match=r"generated_per_label must be in 0\.\.100000"):
        TaskConfig(generated_per_label=-1)


def test_finetune_generates_as_many_per_missing_label_as_real_support_per_label():
    ctxs, params = make_contexts(2)
    ctx, algorithm, universe = ctxs[0], Algorithm(LocalSGDConfig()), list(range(10))
    held = sorted(set(ctx.data.y_query.tolist()))[:2]
    absent = [label for label in universe if label not in ctx.data.y_query.tolist()][:1]
    if not absent:  # the client's D^Q holds every label: treat one it holds as generated
        absent, held = held[1:], held[:1]
    state = ClientState(0, params[0])
    first = {"labels": absent, "universe": universe, "first": True}
    state, _ = train_generator(algorithm, ctx, state, [], _message(**first))
    generator = state.extras["generator"].numpy()
    extra = {
        "labels": [*held, *absent], "first": True, "adapt": None, "neighbors": 0,
        "generated": [absent], "universe": universe, "per_label": 0, "lr": 0.05,
        "batch_size": 8, "shots": 2, "task": 0, "scratch": False, "head": "linear", "rows": {},
    }  # fmt: skip
    real = support_set(ctx, [*held, *absent], 2, 0)[1]
    _, metrics = task_finetune(algorithm, ctx, state, [generator], _message(**extra))
    assert absent and len(real)
    assert metrics["generated"] == balanced_count(real) * len(absent) > 0


def test_a_task_from_scratch_starts_at_the_initial_model_whatever_was_trained():
    ctxs, params = make_contexts(2)
    ctx, algorithm = ctxs[0], Algorithm(LocalSGDConfig())
    labels = sorted(set(ctx.data.y_query.tolist()))[:2]
    extra = {
        "labels": labels, "first": True, "adapt": (2, 0.1), "neighbors": 0, "generated": [],
        "universe": list(range(10)), "per_label": 0, "lr": 0.05, "batch_size": 8, "shots": 0,
        "task": 0, "scratch": True, "head": "linear", "rows": {},
    }  # fmt: skip
    trained = [ClientState(0, params[0]), ClientState(0, params[0] + 1.0)]
    out = [task_finetune(algorithm, ctx, s, [], _message(**extra))[0] for s in trained]
    assert torch.equal(out[0].extras["task"], out[1].extras["task"])
    # Independently: two full-batch steps of 0.1 from θ_0 on the support set, over 𝒯's logits.
    theta = ctx.model.init_flat(ctx.seed).clone().requires_grad_(True)
    x, y = support_set(ctx, labels, 0, ctx.round_seed(0, TASK_SALT + 4))
    index = torch.as_tensor(labels)
    for _ in range(2):
        logits = ctx.model(theta, x)[:, index]
        target = torch.searchsorted(index, y)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, target), theta)
        theta = (theta - 0.1 * grad).detach().requires_grad_(True)
    torch.testing.assert_close(out[0].extras["task"], theta.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="task_start must be one of trained, scratch"):
        TaskConfig(task_start="random")
