"""A task's chains fused into waves give the same bits as one job per step.

The task service runs one round of every chain that is due in one step
(:meth:`~dfml.algorithms.clfml.service.TaskService._waves`). The reference
here serves the same tasks on the same trained system with every job in a
step of its own, in the order the chains ran one after another before they
were fused (generator rounds, head rows, adaptation, fine-tuning rounds, the
own-label score, then the ablation's rounds). Every figure of every task and
every scored prediction must be equal, not close: no job reads what another
job of its wave writes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers.clfml import SCENARIO
from helpers.contexts import make_contexts
from helpers.fault import BASE

from dfml.actors.state import ClientState
from dfml.algorithms.base import Algorithm, LocalSGDConfig, Message
from dfml.algorithms.clfml.augment import ConditionalVAE
from dfml.algorithms.clfml.service import Job, TaskService
from dfml.algorithms.clfml.state import SLOT
from dfml.algorithms.clfml.task_client import TASK_SALT, train_generator
from dfml.experiment import Experiment, prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.launch.services import build_task_service, task_service


class OneJobPerStep(TaskService):
    """The same service with no fusion: one job per step, chains one after another."""

    def _waves(self, augment: bool, sharing: bool) -> tuple[list[list[Job]], int]:
        waves, _ = super()._waves(augment, sharing)
        jobs = [job for wave in waves for job in wave]
        rank = {"generator": 0, "head": 1, "adapt": 2, "own": 4}
        order = sorted(
            jobs,
            key=lambda j: (
                5 if j[1] else rank.get(j[0], 3),  # the ablation last
                j[2],
            ),
        )
        start = next(i for i, job in enumerate(order) if job[0] == "adapt")
        return [[job] for job in order], start


def _unfused(service: TaskService) -> OneJobPerStep:
    """``service``'s twin with one job per step (same config, requester and labels)."""
    twin = OneJobPerStep.__new__(OneJobPerStep)
    twin.__dict__.update(
        {**service.__dict__, "tasks": [], "records": [], "predictions": [], "_queue": []}
    )
    return twin


@pytest.mark.parametrize(
    "head",
    [
        {},
        {"task_head": "prototype", "head_sharing": "prototypes", "episodes": "labels"},
    ],
    ids=["linear", "prototype-shared"],
)
def test_fused_task_rounds_equal_one_job_per_step(head):
    options = {**BASE, **SCENARIO, "tasks": 0, "backend": "local", **head}
    cfg, _ = build_config(options)
    prep = prepare(cfg)
    algorithm = algorithm_class("clfml")(cfg.algorithm)
    with Experiment(cfg, algorithm, prepared=prep) as exp:
        exp.run()
        fused = task_service(exp)
        unfused = _unfused(build_task_service(cfg, prep, cfg.run.rounds)).bind(exp.runtime)
        info = exp.runtime.state.sources[SLOT]
        held = {k: set(v) for k, v in info.cluster_labels.items()}
        inside = sorted(held[0])[:2]  # Case I
        across = next(  # Case II: labels no single cluster holds, so generators run
            [a, b]
            for a, b in itertools.combinations(info.universe, 2)
            if not any({a, b} <= h for h in held.values())
        )
        meta = dict(exp.runtime.published())
        steps = []
        for labels in (inside, across):
            before = len(exp.runtime.history)
            results = [service.submit(labels) for service in (fused, unfused)]
            assert len(exp.runtime.history) == before  # serving counts no round
            a, b = ({**r.__dict__, "seconds": 0.0} for r in results)
            assert a == b
            steps.append(results)
        assert fused.predictions == unfused.predictions
        assert results[0].case == 2 and results[0].accuracy_no_augmentation is not None
        # The meta-models were never published again: a task round publishes
        # only the channels its jobs write.
        assert exp.runtime.published() == meta


def test_a_generator_round_is_mixing_then_one_epoch_of_torch_adam():
    """train_generator's own Adam against torch.optim.Adam, bit for bit, over two rounds."""
    ctxs, params = make_contexts(2)
    ctx, algorithm, universe = ctxs[0], Algorithm(LocalSGDConfig()), list(range(10))
    labels = sorted(set(ctx.data.y_train.tolist()))[:3]
    dim = int(np.prod(ctx.data.x_train.shape[1:]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TASK_SALT)
        vae = ConditionalVAE(dim, len(universe))
    mask = torch.isin(ctx.data.y_train, torch.tensor(labels))
    x = ctx.data.x_train[mask].flatten(1).clamp(0.0, 1.0)
    y = ctx.data.y_train[mask]  # universe = 0..9: a label is its own index
    assert len(y) > 32  # more than one Adam step per round

    def reference(vector: torch.Tensor, rnd: int) -> torch.Tensor:
        param = vector.clone().requires_grad_(True)
        opt = torch.optim.Adam([param], lr=1e-2)
        gen = torch.Generator().manual_seed(ctx.round_seed(rnd, TASK_SALT))
        order = np.random.default_rng(ctx.round_seed(rnd, TASK_SALT + 1)).permutation(len(y))
        for start in range(0, len(y), 32):
            b = torch.from_numpy(order[start : start + 32])
            opt.zero_grad()
            vae.loss(x[b], y[b], gen, params=param).backward()
            opt.step()
        return param.detach()

    state = ClientState(0, params[0], round=3)
    extra = {"labels": labels, "universe": universe, "first": True}
    state, _ = train_generator(algorithm, ctx, state, [], Message(3, (), extra=extra))
    first = reference(vae.flat(), 3)
    assert torch.equal(state.extras["generator"], first)
    other = np.full(first.shape, 0.01, dtype=np.float32)
    msg = Message(4, (None,), (0.25,), 0.75, {**extra, "first": False})
    state, _ = train_generator(algorithm, ctx, state.evolve(round=4), [other], msg)
    mixed = torch.from_numpy(np.float32(0.75) * first.numpy() + np.float32(0.25) * other)
    assert torch.equal(state.extras["generator"], reference(mixed, 4))
