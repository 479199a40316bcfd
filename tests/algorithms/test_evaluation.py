"""The personalized-FL evaluation protocol: formulas on hand examples, the
client-side metrics in-process, and the driver side (step + summary) in-process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.contexts import make_contexts

from dfml import programs
from dfml.algorithms.base import LocalSGDConfig, RunEnv, StepResult
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.evaluation import (
    EVALUATE_PERSONALIZED,
    EvalConfig,
    PersonalizedEvaluation,
    bytes_to_target,
    personalization_metrics,
    qoi,
    rounds_to_target,
    time_to_target,
    worst_fraction_mean,
)
from dfml.algorithms.sgd import evaluate, sgd_epochs
from dfml.errors import ConfigError
from dfml.records import RoundRecord
from dfml.steps import DriverState, Phase
from dfml.topology.config import TopologyConfig
from dfml.topology.service import TopologyService


def test_qoi_hand_example():
    pers = [0.80, 0.50, 0.60, 0.9]
    glob = [0.70, 0.60, 0.20, 0.9]
    local = [0.75, 0.40, 0.65, 0.3]
    np.testing.assert_allclose(qoi(pers, glob, local), [0.05, -0.10, -0.05, 0.0], atol=1e-12)


def test_worst_fraction_mean_hand_examples():
    assert worst_fraction_mean([0.9, 0.1, 0.5, 0.3, 0.7]) == pytest.approx(0.1)  # ⌈0.5⌉ = 1
    twenty = [0.05 * i for i in range(20)]  # 0.00, 0.05, ...
    assert worst_fraction_mean(twenty) == pytest.approx(0.025)  # mean of 0.00, 0.05
    eleven = [1.0] * 9 + [0.2, 0.4]
    assert worst_fraction_mean(eleven) == pytest.approx(0.3)  # ⌈1.1⌉ = 2
    assert worst_fraction_mean([0.3, 0.6, 0.9, 0.0], fraction=0.5) == pytest.approx(0.15)


def test_rounds_to_target():
    assert rounds_to_target([0.1, 0.5, 0.4, 0.7], 0.45) == 2
    assert rounds_to_target([0.1, 0.5, 0.4, 0.7], 0.7) == 4
    assert rounds_to_target([0.1, 0.5], 0.9) is None


def test_bytes_to_target_counts_the_rounds_up_to_the_first_that_reaches_it():
    acc, sent = [0.1, 0.5, 0.4, 0.7], [100, 20, 3, 4000]
    assert bytes_to_target(acc, sent, 0.45) == 120
    assert bytes_to_target(acc, sent, 0.7) == 4123
    assert bytes_to_target(acc, sent, 0.05) == 100
    assert bytes_to_target(acc, sent, 0.9) is None
    assert bytes_to_target([float("nan"), 0.5], [7, 8], 0.5) == 15  # an unscored round counts


def test_time_to_target_is_the_clock_after_the_first_round_that_reaches_it():
    acc, clock = [0.1, 0.5, 0.4, 0.7], [2.5, 5.0, 7.5, 9.0]
    assert time_to_target(acc, clock, 0.45) == 5.0
    assert time_to_target(acc, clock, 0.7) == 9.0
    assert time_to_target(acc, clock, 0.9) is None
    nan = float("nan")
    assert time_to_target(acc, [nan] * 4, 0.45) is None  # a run without a virtual clock


def test_a_resumed_run_counts_the_rounds_before_its_checkpoint():
    cb = PersonalizedEvaluation(EvalConfig(personalized_eval=False, target_accuracy=0.6), rounds=3)
    done = [
        RoundRecord(0, {0: {"accuracy": 0.2}}, 50, 0.0),
        RoundRecord(1, {0: {"accuracy": 0.5}}, 60, 0.0),
    ]
    cb.on_resume(done)
    cb.on_round_end(RoundRecord(2, {0: {"accuracy": 0.6}}, 70, 0.0))
    s = cb.summary()
    assert (s["rounds_to_target"], s["bytes_to_target"]) == (3, 180)
    assert s["time_to_target"] is None  # no virtual clock
    timed = PersonalizedEvaluation(EvalConfig(personalized_eval=False, target_accuracy=0.6), 3)
    timed.on_resume([RoundRecord(0, {0: {"accuracy": 0.2, "virtual_time": 4.0}}, 50, 0.0)])
    timed.on_round_end(RoundRecord(1, {0: {"accuracy": 0.6, "virtual_time": 9.5}}, 60, 0.0))
    assert timed.summary()["time_to_target"] == 9.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pers_steps": (0, -1)}, "pers_steps"),
        ({"pers_steps": (1, 1)}, "pers_steps"),
        ({"pers_steps": ()}, "pers_steps"),
        ({"target_accuracy": 0.0}, "target_accuracy"),
        ({"target_accuracy": 1.5}, "target_accuracy"),
        ({"local_only_epochs": -2}, "local_only_epochs"),
        ({"local_only_lr": 0.0}, "local_only_lr"),
    ],
)
def test_eval_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EvalConfig(**kwargs)


def test_eval_config_sorts_steps():
    assert EvalConfig(pers_steps=(5, 0, 1)).pers_steps == (0, 1, 5)


def test_personalization_metrics_match_direct_computation():
    ctxs, inits = make_contexts()
    ctx, algo = ctxs[0], DFedAvg(LocalSGDConfig(lr=0.2, batch_size=16))
    state = algo.init_state(ctx, inits[0])
    state, _ = algo.local_update(ctx, state, state.params)  # a "published" vector ≠ init
    other = torch.randn_like(state.params) * 0.1
    m = personalization_metrics(algo, ctx, state, other.numpy(), (0, 1, 5), 3, local_lr=0.3)

    x, y = ctx.data.x_test, ctx.data.y_test
    assert m["global_accuracy"] == evaluate(ctx.model, other, x, y)[1]
    assert m["pers0_accuracy"] == evaluate(ctx.model, state.params, x, y)[1]
    for k in (1, 5):
        adapted = algo.adapt(ctx, state, state.params, k, ctx.round_seed(state.round, 0x9E55))
        assert m[f"pers{k}_accuracy"] == evaluate(ctx.model, adapted, x, y)[1]
    # The local-only model: 3 epochs of SGD (lr 0.3, batch 32) from the common init on D^M ∪ D^Q.
    local, _ = sgd_epochs(
        ctx.model,
        ctx.model.init_flat(ctx.seed),
        ctx.data.x_train,
        ctx.data.y_train,
        lr=0.3,
        epochs=3,
        batch_size=32,
        seed=ctx.round_seed(0, 0x10CA1),
    )
    assert m["local_accuracy"] == evaluate(ctx.model, local, x, y)[1]
    best = max(m["global_accuracy"], m["local_accuracy"])
    assert m["qoi"] == pytest.approx(m["pers5_accuracy"] - best)
    assert personalization_metrics(algo, ctx, state, other.numpy(), (0,), 0).keys() == {
        "global_accuracy",
        "pers0_accuracy",
    }


def run_in_process(algo, ctxs, states, step):
    """Run ``step``'s program on in-process clients (arrays instead of refs)."""
    fn = programs.get(step.program).run
    out = {}
    for cid, msg in sorted(step.messages.items()):
        neighbors = [np.asarray(v) for v in msg.neighbors]
        states[cid], metrics = fn(algo, ctxs[cid], states[cid], neighbors, msg)
        out[cid] = StepResult({}, metrics)
    return out


def env_of(sizes):
    topology = TopologyService(TopologyConfig(topology="complete"), sizes, 0)
    return RunEnv(topology, dict(sizes), rounds=2, sampled=sorted(sizes))


def test_evaluation_step_runs_once_in_the_last_round_and_summarizes():
    ctxs, inits = make_contexts(n=3)
    algo = DFedAvg(LocalSGDConfig(local_epochs=1))
    states = {c.client_id: algo.init_state(c, inits[c.client_id]) for c in ctxs}
    glob = inits[0].numpy()
    ds = DriverState()
    ds.refs.update(dict.fromkeys(states, glob))  # server mode: one shared global object
    env = env_of({c: 10 for c in states})
    cb = PersonalizedEvaluation(EvalConfig(target_accuracy=0.5, local_only_epochs=1), rounds=2)
    cb.on_run_start(algo, None)
    acc = [{0: {"accuracy": 0.2}, 1: {"accuracy": 0.4}, 2: {"accuracy": 0.3}}]
    acc.append({0: {"accuracy": 0.6}, 1: {"accuracy": 0.5}, 2: {"accuracy": 0.7}})
    assert cb.next_step(ds, env) is None  # round 0 is not the last
    cb.on_round_end(RoundRecord(0, acc[0], 1000, 0.0))
    ds.next_round()
    ds.metrics = acc[1]
    step = cb.next_step(ds, env)
    assert step.phase == Phase.FINAL_EVALUATION and step.program == EVALUATE_PERSONALIZED
    assert step.read_only and not step.publish and step.participants == [0, 1, 2]
    cb.absorb(ds, step, run_in_process(algo, ctxs, states, step), env)
    ds.phases.append(step.phase)
    assert cb.next_step(ds, env) is None  # once
    record = RoundRecord(1, ds.metrics, 500, 0.0)
    cb.on_round_end(record)
    assert set(record.metrics[0]) >= {"accuracy", "pers5_accuracy", "qoi", "global_accuracy"}
    s = cb.summary()
    assert (s["rounds_to_target"], s["bytes_to_target"]) == (2, 1500)
    assert s["accuracy_worst10"] == pytest.approx(0.5)
    per_client = [record.metrics[c]["pers5_accuracy"] for c in range(3)]
    assert s["pers5_accuracy"] == pytest.approx(np.mean(per_client))
    assert s["pers5_accuracy_std"] == pytest.approx(np.std(per_client))
    assert s["pers5_accuracy_worst10"] == min(per_client)
    assert s["per_client_qoi"] == [record.metrics[c]["qoi"] for c in range(3)]
    # All clients hold the same global vector: global accuracy = Pers.0 here.
    assert s["global_accuracy"] == pytest.approx(s["pers0_accuracy"])


def test_callback_can_be_turned_off():
    cb = PersonalizedEvaluation(EvalConfig(personalized_eval=False), rounds=1)
    assert cb.next_step(DriverState(), env_of({0: 1, 1: 1})) is None
    cb.on_round_end(RoundRecord(0, {0: {"accuracy": 0.5}}, 0, 0.0))
    s = cb.summary()
    assert "pers5_accuracy" not in s and s["rounds_to_target"] is None
    assert s["bytes_to_target"] is None
