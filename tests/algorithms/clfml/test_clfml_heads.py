"""A task's head: prototype initialisation and the rows shared for missing labels."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts
from helpers.fault import run
from torch import nn
from torch.nn.utils import vector_to_parameters

from dfml.actors.state import ClientState
from dfml.algorithms.base import Algorithm, LocalSGDConfig, Message
from dfml.algorithms.clfml.service import TaskConfig
from dfml.algorithms.clfml.task_client import (
    TASK_SALT,
    shared_rows,
    support_set,
    task_finetune,
    task_head_rows,
)
from dfml.errors import ConfigError
from dfml.models.head import head_layout
from dfml.records import Callback


def _message(**extra) -> Message:
    return Message(0, (), (), 1.0, extra)


def _extra(labels, **changes) -> dict:
    base = {
        "labels": labels, "first": True, "adapt": (2, 0.1), "neighbors": 0, "generated": [],
        "universe": list(range(10)), "per_label": 0, "lr": 0.05, "batch_size": 8, "shots": 0,
        "task": 0, "scratch": False, "head": "prototype", "rows": {},
    }  # fmt: skip
    return {**base, **changes}


def _module(model, vector: torch.Tensor) -> nn.Sequential:
    """A copy of the model's module holding ``vector`` (plain nn.Module arithmetic)."""
    module = copy.deepcopy(model.module)
    vector_to_parameters(vector.clone(), module.parameters())
    return module


def test_prototype_head_then_adaptation_equals_a_plain_pytorch_loop():
    ctxs, params = make_contexts(2)
    ctx, algorithm = ctxs[0], Algorithm(LocalSGDConfig())
    labels = sorted(set(ctx.data.y_query.tolist()))[:3]
    state = ClientState(0, params[0])
    out, _ = task_finetune(algorithm, ctx, state, [], _message(**_extra(labels)))
    # Independently: embeddings from the module's own layers, rows 2μ_c, −‖μ_c‖², then
    # two full-batch steps of 0.1 on the support set over 𝒯's logits.
    x, y = support_set(ctx, labels, 0, ctx.round_seed(0, TASK_SALT + 4))
    module = _module(ctx.model, params[0])
    with torch.no_grad():
        f = module[:-1](x)
        for c in labels:
            mu = f[y == c].mean(0)
            module[-1].weight[c] = 2 * mu
            module[-1].bias[c] = -(mu @ mu)
    index = torch.as_tensor(labels)
    for _ in range(2):
        loss = nn.functional.cross_entropy(module(x)[:, index], torch.searchsorted(index, y))
        grads = torch.autograd.grad(loss, list(module.parameters()))
        with torch.no_grad():
            for p, g in zip(module.parameters(), grads, strict=True):
                p -= 0.1 * g
    expected = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    torch.testing.assert_close(out.extras["task"], expected, rtol=1e-5, atol=1e-6)
    # The linear head starts from the model's own rows: another task model.
    linear, _ = task_finetune(algorithm, ctx, state, [], _message(**_extra(labels, head="linear")))
    assert not torch.allclose(linear.extras["task"], out.extras["task"])


def test_shared_rows_replace_the_receivers_rows_before_fine_tuning():
    ctxs, params = make_contexts(2)
    ctx, algorithm = ctxs[0], Algorithm(LocalSGDConfig())
    absent = [c for c in range(10) if c not in ctx.data.y_query.tolist()][:2] or [0]
    layout = head_layout(ctx.model)
    rows = {c: [float(c)] * layout.dim + [-1.0] for c in absent}
    state = ClientState(0, params[0])
    # The client holds no support sample of 𝒯 = the absent labels: no step is taken,
    # so its task model is its meta-model with exactly the shared rows.
    for head in ("linear", "prototype"):
        extra = _extra(absent, rows=rows, head=head)
        out, _ = task_finetune(algorithm, ctx, state, [], _message(**extra))
        task = out.extras["task"]
        torch.testing.assert_close(
            layout.rows(task, absent), torch.tensor([rows[c] for c in absent])
        )
        others = [c for c in range(10) if c not in absent]
        assert torch.equal(layout.rows(task, others), layout.rows(params[0], others))
    # Only the start of a task's fine-tuning takes the rows.
    later = {**state.extras, "task": params[1]}
    extra = _extra(absent, rows={}, first=False, adapt=None)
    out, _ = task_finetune(algorithm, ctx, state.evolve(extras=later), [], _message(**extra))
    assert torch.equal(out.extras["task"], params[1])


def test_shared_rows_from_sums_and_counts_hand_example():
    # d = 2; requests: cluster 1 lacks labels 3 and 5, cluster 2 lacks 3.
    requests = [(1, [3, 5]), (2, [3])]
    rows_total = np.array([2, 4, 6, 2, 0, 0, 0, 0, 1, 1, 1, 1], dtype=float)
    # rows: the mean of the contributing clients' rows; a label nobody had: no row.
    assert shared_rows(rows_total, requests, 2, "rows") == {
        1: {3: [1.0, 2.0, 3.0]},
        2: {3: [1, 1, 1]},
    }
    # prototypes: μ = Σ f(x) / count → [2μ ‖ −‖μ‖²].
    proto_total = np.array([2, 4, 0, 2, 0, 0, 0, 0, 3, 0, 0, 3], dtype=float)
    assert shared_rows(proto_total, requests, 2, "prototypes") == {
        1: {3: [2.0, 4.0, -5.0]},
        2: {3: [2.0, 0.0, -1.0]},
    }
    with pytest.raises(ValueError, match="expected 12 numbers, got 13"):
        shared_rows(np.zeros(13), requests, 2, "rows")


def test_a_holder_sends_sums_of_embeddings_under_the_receivers_model():
    ctxs, params = make_contexts(2)
    ctx, algorithm = ctxs[0], Algorithm(LocalSGDConfig())
    held = sorted(set(ctx.data.y_query.tolist()))
    task_labels, asked = held[:3], held[1:3]
    receiver = ctx.model.init_flat(7)  # another model: the embedding is the receiver's
    extra = {"requests": [asked], "labels": task_labels, "shots": 1, "task": 2}
    state = ClientState(0, params[0])
    out, metrics = task_head_rows(
        algorithm, ctx, state, [receiver.numpy()], _message(**extra, mode="prototypes")
    )
    layout = head_layout(ctx.model)
    d = layout.dim
    x, y = support_set(ctx, task_labels, 1, ctx.round_seed(2, TASK_SALT + 4))
    with torch.no_grad():
        f = _module(ctx.model, receiver)[:-1](x)
    sent = out.extras["head"].view(len(asked), d + 2)
    for piece, c in zip(sent, asked, strict=True):
        torch.testing.assert_close(piece[:d], f[y == c].sum(0))
        assert piece[d] == 0 and piece[d + 1] == int((y == c).sum()) == 1
    assert metrics["head_samples"] == len(asked)
    # rows: its own head row of each label it has a support sample of, counted once.
    out, _ = task_head_rows(algorithm, ctx, state, [], _message(**extra, mode="rows"))
    own = _module(ctx.model, params[0])[-1]
    sent = out.extras["head"].view(len(asked), d + 2)
    torch.testing.assert_close(sent[:, :d], own.weight[asked].detach())
    torch.testing.assert_close(sent[:, d], own.bias[asked].detach())
    assert sent[:, d + 1].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_head": "cosine"}, "task_head must be one of linear, prototype, got 'cosine'"),
        (
            {"head_sharing": "all"},
            "head_sharing must be one of none, rows, prototypes, got 'all'",
        ),
        (
            {"head_sharing": "rows", "task_start": "scratch"},
            "head_sharing rows shares rows of trained models: it needs task_start trained",
        ),
    ],
)
def test_bad_head_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TaskConfig(tasks=2, **kwargs)


class Published(Callback):
    """Every object clients published on every channel, read at the end (in-process)."""

    def on_start(self, runtime):
        self.runtime = runtime

    def on_run_end(self, history):
        self.objects = {name: dict(refs) for name, refs in self.runtime.state.channels.items()}


@pytest.mark.e2e
def test_a_run_shares_prototype_rows_as_sums_only(tmp_path):
    published = Published()
    summary = run(
        tmp_path,
        [published],
        algorithm="clfml",
        backend="local",
        partition="label-group",
        groups=3,
        group_overlap=0.2,
        clients=9,
        clusters="3",
        rounds=2,
        tasks=4,
        finetune_rounds=1,
        generator_rounds=1,
        episodes="labels",
        task_head="prototype",
        head_sharing="prototypes",
    )
    assert summary["status"] == "completed" and summary["tasks_case2"] > 0
    assert summary["task_accuracy"] is not None
    assert summary["task_accuracy_before_missing"] is not None  # where shared rows act
    d = 16  # the test model's hidden width: the embedding's size
    heads = published.objects["head"].values()
    assert heads  # the holders computed rows
    for obj in heads:  # sums and counts per (receiver, label), never a sample (64 pixels)
        arr = np.asarray(obj)
        assert arr.ndim == 1 and arr.size % (d + 2) == 0
        assert np.all(arr.reshape(-1, d + 2)[:, d] == 0)
