"""Asynchronous gossip on the virtual clock (``--schedule-mode async``).

Schedule semantics, so tested on the in-process federation (the same loop
and client code as the Ray one, no actors): the order of events against a
hand-worked example, a 3-client run against a plain-PyTorch loop of the same
schedule, equal speeds against the synchronous run, and repeatability.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers.fault import BASE
from helpers.reference import PlainClients

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.asynchronous import SLOT, AsyncGossip, check_async
from dfml.algorithms.virtual_clock import VIRTUAL_TIME
from dfml.clock import ClockConfig, Speed, client_speeds
from dfml.errors import ConfigError
from dfml.experiment import prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.records import Callback
from dfml.runtime.loop import Runtime
from dfml.topology.mixing import mixing_matrix

#: Client i's update takes i + 1 virtual seconds: one step of 0.5 / 1.5 / 2.5 s
#: plus two neighbour vectors at 0.25 s each (3 clients on a ring: everyone).
HAND_SPEEDS = {0: Speed(0.5, 0.25), 1: Speed(1.5, 0.25), 2: Speed(2.5, 0.25)}
ONE_STEP = {0: 1, 1: 1, 2: 1}


class Trace(Callback):
    """Every step's (virtual time, participants) and the final client states."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, list[int]]] = []

    def on_start(self, runtime) -> None:
        self.runtime = runtime

    def on_step_end(self, step, seconds) -> None:
        slot = self.runtime.state.sources.get(SLOT)  # none in a synchronous run
        if step.phase == "train":
            self.steps.append((slot.clock if slot else None, step.participants))

    def on_run_end(self, history) -> None:
        self.states = self.runtime.federation.get_states()


def run(options: dict, rounds: int, schedule: Callback | None) -> tuple[list, Trace]:
    cfg, _ = build_config({**BASE, **options, "rounds": rounds})
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    algorithm = algorithm_class(cfg.run.algorithm)(cfg.algorithm)
    trace = Trace()
    callbacks = [trace] if schedule is None else [schedule, trace]
    runtime = Runtime(
        algorithm, fed, prepared.topology, rounds, callbacks=callbacks, seed=cfg.run.seed
    )
    return runtime.run(), trace


def test_events_run_in_virtual_time_order_with_ties_by_id():
    """Updates of 1, 2, 3 s end at (1: 0), (2: 0 1), (3: 0 2), (4: 0 1), (5: 0),
    (6: 0 1 2), (7: 0); a round is 3 updates, so rounds 1 and 2 split the
    ties at 4 and 6, and the clock after each round is 2, 4, 6, 7."""
    history, trace = run({"clients": 3}, 4, AsyncGossip(HAND_SPEEDS, ONE_STEP))
    assert trace.steps == [
        (1.0, [0]),
        (2.0, [0, 1]),
        (3.0, [0, 2]),
        (4.0, [0]),
        (4.0, [1]),
        (5.0, [0]),
        (6.0, [0]),
        (6.0, [1, 2]),
        (7.0, [0]),
    ]
    assert [r.mean(VIRTUAL_TIME) for r in history] == [2.0, 4.0, 6.0, 7.0]
    assert [sorted(r.trained) for r in history] == [[0, 1], [0, 2], [0, 1], [0, 1, 2]]
    # Client 1's update ending at 2 used client 0's vector of t = 0, which had
    # one newer version (t = 1) by then, and client 2's, which had none; client
    # 2's ending at 3 used versions 0 of both, by then 2 (client 0) and 1 behind.
    first = history[0].metrics
    assert (first[0]["staleness_mean"], first[0]["staleness_max"]) == (0.0, 0.0)
    assert (first[1]["staleness_mean"], first[1]["staleness_max"]) == (0.5, 1.0)
    second = history[1].metrics[2]
    assert (second["staleness_mean"], second["staleness_max"]) == (1.5, 2.0)
    assert {c: s.round for c, s in trace.states.items()} == {0: 7, 1: 3, 2: 2}


def test_three_async_clients_equal_a_plain_pytorch_loop_of_the_same_schedule():
    """The reference: integer virtual time; at each t the clients whose update
    ends then (in id order) mix what they took when they started and train;
    then they take their neighbours' newest vectors."""
    rounds, n = 4, 3
    history, trace = run({"clients": n}, rounds, AsyncGossip(HAND_SPEEDS, ONE_STEP))
    cfg, _ = build_config({**BASE, "clients": n, "rounds": rounds})
    prepared = prepare(cfg)
    ref = PlainClients(cfg, prepared)
    w = mixing_matrix(prepared.graph, cfg.topology.mixing, prepared.train_sizes)
    published = ref.vectors().astype(np.float64)
    taken = [published.copy() for _ in range(n)]
    start, version, done = [0] * n, [0] * n, 0
    for t in itertools.count(1):
        ended = []
        for i in range(n):
            if start[i] + i + 1 != t or done == rounds * n:
                continue
            mixed = w[i, i] * published[i] + sum(
                w[i, j] * taken[i][j] for j in range(n) if j != i and w[i, j] > 0
            )
            ref.set(i, mixed)
            ref.train(i, version[i])
            version[i] += 1
            published[i] = ref.vectors()[i]
            ended.append(i)
            done += 1
        for i in ended:
            taken[i], start[i] = published.copy(), t
        if done == rounds * n:
            break
    got = np.stack([trace.states[i].params.numpy() for i in range(n)])
    np.testing.assert_allclose(got, published, rtol=0, atol=2e-5)
    assert [trace.states[i].round for i in range(n)] == version
    last = history[-1].metrics
    np.testing.assert_allclose([last[i]["accuracy"] for i in range(n)], ref.accuracies())


def test_async_with_equal_speeds_is_the_synchronous_run():
    """Every update ends together, so every round is one step of all clients,
    which take what all published: DFedAvg, bit for bit."""
    n, rounds = 5, 3
    equal = dict.fromkeys(range(n), Speed(0.1, 0.0))
    steps = dict.fromkeys(range(n), 4)
    sync, sync_trace = run({"clients": n}, rounds, None)
    asynchronous, async_trace = run({"clients": n}, rounds, AsyncGossip(equal, steps))
    assert async_trace.steps == [(pytest.approx(0.4 * (r + 1)), list(range(n))) for r in range(3)]
    for c in range(n):
        assert torch.equal(sync_trace.states[c].params, async_trace.states[c].params)
    for s, a in zip(sync, asynchronous, strict=True):
        for c in range(n):
            extra = {VIRTUAL_TIME, "staleness_mean", "staleness_max"}
            assert {k: v for k, v in a.metrics[c].items() if k not in extra} == s.metrics[c]
            assert a.metrics[c]["staleness_max"] == 0.0
        assert a.bytes_sent == s.bytes_sent


def test_two_async_runs_with_the_same_seed_are_bit_identical():
    n, rounds = 6, 4
    cfg, _ = build_config({**BASE, "clients": n})
    speeds = client_speeds(ClockConfig(speeds="lognormal:1.0"), list(range(n)), cfg.run.seed)
    steps = dict.fromkeys(range(n), 3)
    first, a = run({"clients": n}, rounds, AsyncGossip(speeds, steps))
    second, b = run({"clients": n}, rounds, AsyncGossip(speeds, steps))
    assert a.steps == b.steps
    assert len({s.round for s in a.states.values()}) > 1  # the clients' speeds differ
    for c in range(n):
        assert torch.equal(a.states[c].params, b.states[c].params)
    assert [r.metrics for r in first] == [r.metrics for r in second]
    assert [r.bytes_sent for r in first] == [r.bytes_sent for r in second]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "fedavg"}, "algorithm 'fedavg' aggregates at a server"),
        ({"algorithm": "fedprox", "aggregation": "server"}, "'fedprox' aggregates at a server"),
        ({"algorithm": "choco-sgd"}, "'choco-sgd' must receive every message of every neighbour"),
        ({"algorithm": "cdfedavg"}, "'cdfedavg' runs phases of its own each round"),
        ({"algorithm": "mefl", "aggregation": "gossip"}, "'mefl' runs phases of its own"),
    ],
)
def test_algorithms_that_need_every_client_at_once_are_refused(options, message):
    cfg, _ = build_config(options)
    algorithm = algorithm_class(cfg.run.algorithm, cfg.run.cluster_by)(cfg.algorithm)
    with pytest.raises(ConfigError, match=message):
        check_async(algorithm)


@pytest.mark.parametrize(
    "options",
    [
        {"algorithm": "dfedavg"},
        {"algorithm": "fedprox", "aggregation": "gossip"},
        {"algorithm": "dfedavg", "compressor": "topk", "compression": 0.5},
    ],
)
def test_gossip_algorithms_run_async(options):
    check_async(algorithm_class(**_names(options))(build_config({**BASE, **options})[0].algorithm))


def _names(options: dict) -> dict:
    return {"name": options["algorithm"], "compressor": options.get("compressor", "none")}
