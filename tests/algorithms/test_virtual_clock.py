"""The synchronous virtual clock: each round waits for its slowest engaged client,
and the clients compute exactly what they compute without it."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.fault import BASE

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.virtual_clock import VIRTUAL_TIME, SyncClock, local_steps
from dfml.clock import Speed
from dfml.experiment import prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.records import Callback
from dfml.runtime.loop import Runtime

#: Steps of 1 / 2 / 3 s for clients 0..2 and 0.5 s per neighbour vector fetched.
SPEEDS = {0: Speed(1.0, 0.5), 1: Speed(2.0, 0.5), 2: Speed(3.0, 0.5)}


class States(Callback):
    def on_start(self, runtime) -> None:
        self.runtime = runtime

    def on_run_end(self, history) -> None:
        self.states = self.runtime.federation.get_states()


def run(options: dict, rounds: int, clock: SyncClock | None):
    cfg, _ = build_config({**BASE, "clients": 3, **options, "rounds": rounds})
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    states = States()
    runtime = Runtime(
        algorithm_class(cfg.run.algorithm)(cfg.algorithm),
        fed,
        prepared.topology,
        rounds,
        callbacks=[states] if clock is None else [clock, states],
        seed=cfg.run.seed,
        clients_per_round=cfg.membership.clients_per_round,
    )
    return runtime.run(), states.states


def test_local_steps_are_epochs_times_batches():
    cfg, _ = build_config({"local_epochs": 2, "batch_size": 32})
    assert local_steps(cfg.algorithm, 70) == 2 * 3
    assert local_steps(cfg.algorithm, 64) == 2 * 2
    assert local_steps(object(), 10) == 1  # no epochs, no batches: one pass in one batch


def test_a_gossip_round_lasts_its_slowest_client_and_changes_no_bit():
    """DFedAvg on a ring of 3: every client trains 2 steps and fetches 2 vectors,
    so a round is max_i (2 s_i + 2 · 0.5) = 2 · 3 + 1 = 7 s."""
    steps = dict.fromkeys(range(3), 2)
    timed, timed_states = run({}, 3, SyncClock(SPEEDS, steps))
    plain, plain_states = run({}, 3, None)
    assert [r.mean(VIRTUAL_TIME) for r in timed] == [7.0, 14.0, 21.0]
    for c in range(3):
        assert torch.equal(timed_states[c].params, plain_states[c].params)
    for t, p in zip(timed, plain, strict=True):
        assert {
            c: {k: v for k, v in m.items() if k != VIRTUAL_TIME} for c, m in t.metrics.items()
        } == (p.metrics)


def test_a_server_round_lasts_its_slowest_trained_client_and_the_adopt_download():
    """FedAvg, 2 of 3 clients sampled per round: the trained ones compute and
    download the global model (1 vector); the other one only downloads it."""
    steps = dict.fromkeys(range(3), 1)
    history, _ = run({"algorithm": "fedavg", "clients_per_round": 2}, 2, SyncClock(SPEEDS, steps))
    expected, clock = [], 0.0
    for record in history:
        assert len(record.trained) == 2
        clock += max(SPEEDS[c].step_seconds + 0.5 for c in record.trained)
        expected.append(clock)
    assert [r.mean(VIRTUAL_TIME) for r in history] == pytest.approx(expected)
    assert not any(math.isnan(r.mean(VIRTUAL_TIME)) for r in history)
