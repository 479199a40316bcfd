"""Secure aggregation in process (``--backend local``): a secure run ends where the
plain one does, and nothing a client publishes is its vector. No Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfml.algorithms.secure.aggregation import Plan, inbox
from dfml.algorithms.secure.masks import decode
from dfml.launch.options import LaunchConfig, build_config
from dfml.launch.runner import execute
from dfml.records import Callback
from dfml.steps import PARAMS, Phase

TINY = {
    "dataset": "digits",
    "clients": 5,
    "rounds": 3,
    "seed": 2,
    "model": "mlp",
    "hidden": 16,
    "local_epochs": 1,
    "personalized_eval": False,
    "backend": "local",
}


class Published(Callback):
    """After every train step: each trained client's raw vector and what it published."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, np.ndarray, dict[str, np.ndarray]]] = []

    def on_start(self, runtime) -> None:
        self.runtime = runtime

    def on_step_end(self, step, seconds) -> None:
        if step.phase != Phase.TRAIN:
            return
        fed, channels = self.runtime.federation, self.runtime.state.channels
        self.states = fed.get_states()
        # what a restore of these states would publish (the actor's own publishing)
        self.republished = {cid: fed.local._channels(cid) for cid in step.participants}
        for cid, state in fed.get_states(step.participants).items():
            objects = {name: per[cid] for name, per in channels.items() if cid in per}
            self.seen.append((cid, state.params.numpy().copy(), objects))


def run(tmp_path, name: str, callbacks=(), **options) -> dict:
    out = tmp_path / name
    cfg, _ = build_config({**TINY, **options})
    execute(cfg, LaunchConfig(out=str(out), progress=False, dashboard=False), callbacks=callbacks)
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize(
    ("algorithm", "options", "mode"),
    [("fedavg", {}, "server"), ("dfedavg", {"topology": "k-regular", "degree": 2}, "gossip")],
)
def test_secure_run_ends_with_the_plain_runs_accuracy(tmp_path, algorithm, options, mode):
    plain = run(tmp_path, "plain", algorithm=algorithm, **options)
    masked = run(tmp_path, "masked", algorithm=algorithm, secure_aggregation=True, **options)
    assert masked["secure_aggregation"] == mode
    assert masked["final_accuracy"] == pytest.approx(plain["final_accuracy"], abs=1e-6)
    np.testing.assert_allclose(
        masked["per_client_accuracy"], plain["per_client_accuracy"], rtol=0, atol=1e-6
    )
    # a ring element is 8 bytes for a float32's 4: server mode doubles the uploads
    # (the model comes back plain), gossip every message
    factor = 1.5 if mode == "server" else 2.0
    assert masked["bytes_sent"] == factor * plain["bytes_sent"]


def test_server_mode_publishes_only_masked_vectors_and_republishes_the_same(tmp_path):
    seen = Published()
    run(tmp_path, "masked", [seen], algorithm="fedavg", secure_aggregation=True)
    assert len(seen.seen) == 3 * 5
    for _, raw, objects in seen.seen:
        published = objects[PARAMS]
        assert published.dtype == np.uint64 and not np.array_equal(published.view(np.int64), raw)
        assert np.abs(decode(published) - raw / 5).min() > 1e-3  # no coordinate shows through
    # a replica of the state after the last train step re-publishes exactly what was sent
    # (what the fault layer's restore does), and holds the plan that masks it
    cid, _, objects = seen.seen[-1]
    state = seen.states[cid]
    assert Plan.of(state) is not None
    np.testing.assert_array_equal(seen.republished[cid][PARAMS], objects[PARAMS])


def test_gossip_mode_publishes_one_masked_object_per_receiver_and_no_vector(tmp_path):
    seen = Published()
    run(
        tmp_path,
        "masked",
        [seen],
        algorithm="dfedavg",
        secure_aggregation=True,
        topology="complete",
    )
    for cid, raw, objects in seen.seen:
        assert objects[PARAMS].size == 0
        receivers = [name for name in objects if name.startswith("secure:")]
        assert sorted(receivers) == sorted(inbox(i) for i in range(5) if i != cid)
        for name in receivers:
            assert np.abs(decode(objects[name]) - raw / 5).min() > 1e-3
    # the train step dropped the plan: nothing stale is masked again with old masks
    assert all(Plan.of(s) is None for s in seen.states.values())
