"""The three federations implement the loop's protocol, and the loop needs nothing more."""

from __future__ import annotations

from typing import Any

from helpers.fault import BASE

from dfml.actors.federation import Federation
from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.dfedavg import DFedAvg
from dfml.experiment import prepare
from dfml.fault.config import FaultConfig
from dfml.fault.federation import FaultTolerantFederation
from dfml.launch.options import build_config
from dfml.runtime.federation import FederationProtocol
from dfml.runtime.loop import Runtime

MEMBERS = [
    name for name in dir(FederationProtocol) if not name.startswith("_") and name != "roster"
] + ["roster", "splits"]


class OnlyTheProtocol:
    """Forwards the protocol's members to a federation and refuses every other one."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name: str) -> Any:
        if name not in MEMBERS:
            raise AssertionError(f"the loop used {name!r}, which FederationProtocol lacks")
        return getattr(self._inner, name)


def test_every_federation_implements_the_protocol():
    cfg, _ = build_config(dict(BASE))
    prepared = prepare(cfg)
    args = (cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    for fed in (
        Federation(*args),
        InProcessFederation(*args),
        FaultTolerantFederation(*args, FaultConfig(recovery=True)),
    ):
        assert isinstance(fed, FederationProtocol), type(fed).__name__
    assert not isinstance(object(), FederationProtocol)


def test_the_loop_uses_only_the_protocol():
    cfg, _ = build_config({**BASE, "rounds": 2})
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    history = Runtime(DFedAvg(cfg.algorithm), OnlyTheProtocol(fed), prepared.topology, 2).run()
    assert [r.round for r in history] == [0, 1] and sorted(history[-1].metrics) == [0, 1, 2, 3]
