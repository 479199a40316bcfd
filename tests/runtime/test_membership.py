"""Schedules, membership plans and cohort sampling: pure functions, no Ray."""

from __future__ import annotations

import pickle

import networkx as nx
import pytest

from dfml.errors import ConfigError
from dfml.runtime.loop import run
from dfml.runtime.membership import (
    Event,
    MembershipConfig,
    join_sources,
    parse_schedule,
    plan_membership,
    sample_clients,
)


def test_parse_schedule_forms():
    assert parse_schedule("5:+10,12:-5") == [Event(5, True, 10), Event(12, False, 5)]
    assert parse_schedule(" 12 : -[3, 7] ,3:+1") == [
        Event(12, False, 2, (3, 7)),
        Event(3, True, 1),
    ]
    assert parse_schedule("") == [] and parse_schedule(None) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5:10", "cannot read"),
        ("5:+10;6:-1", "expected ','"),
        ("x:+1", "cannot read"),
        ("5:+[1,2]", "joining clients get new ids"),
        ("5:-[1,1]", "distinct ids"),
        ("5:+0", "a change of 0 clients"),
    ],
)
def test_bad_schedules_say_what_is_allowed(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_schedule(text)


def test_plan_turns_counts_into_ids_reproducibly():
    events = parse_schedule("5:+10,12:-5")
    plan = plan_membership(events, range(10), range(10, 20), rounds=20, seed=0)
    assert plan[5].join == list(range(10, 20)) and plan[5].leave == []
    assert len(plan[12].leave) == 5 and set(plan[12].leave) <= set(range(20))
    again = plan_membership(events, range(10), range(10, 20), rounds=20, seed=0)
    assert again[12].leave == plan[12].leave
    other = plan_membership(events, range(10), range(10, 20), rounds=20, seed=1)
    assert other[12].leave != plan[12].leave


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0:+1", "outside 1..19"),
        ("20:+1", "outside 1..19"),
        ("3:+11", "only 10 reserved data shares"),
        ("3:-9", "only 10 are live"),
        ("3:-[42]", "not live"),
        ("3:-[1],4:-[1]", "not live"),
    ],
)
def test_plan_rejects_impossible_schedules(schedule, message):
    with pytest.raises(ConfigError, match=message):
        plan_membership(parse_schedule(schedule), range(10), range(10, 20), rounds=20, seed=0)


def test_reserve_defaults_to_the_schedules_joins():
    assert MembershipConfig(schedule="5:+10,8:+2,12:-5").reserve == 12
    assert MembershipConfig(schedule="5:+1", reserve_clients=4).reserve == 4
    with pytest.raises(ConfigError, match="not both"):
        MembershipConfig(clients_per_round=3, participation=0.5)
    with pytest.raises(ConfigError, match="participation"):
        MembershipConfig(participation=0.0)


def test_sampling_is_seeded_and_sized():
    live = [0, 3, 5, 8, 13, 21]
    assert sample_clients(live, 0, 0, None, 1.0) == live
    a = sample_clients(live, 4, 7, 3, 1.0)
    assert len(a) == 3 and set(a) <= set(live) and a == sorted(a)
    assert a == sample_clients(live, 4, 7, 3, 1.0)
    rounds = {tuple(sample_clients(live, r, 7, 3, 1.0)) for r in range(10)}
    assert len(rounds) > 1  # a new cohort each round
    assert len(sample_clients(live, 0, 0, None, 0.5)) == 3
    assert sample_clients(live, 0, 0, 100, 1.0) == live


def test_a_client_error_names_the_client_phase_and_round():
    from dfml.actors.client_actor import ClientStepError
    from dfml.actors.inprocess import InProcessFederation
    from dfml.algorithms.base import LocalSGDConfig
    from dfml.algorithms.dfedavg import DFedAvg
    from dfml.data.config import DataConfig
    from dfml.experiment import ExperimentConfig, RunConfig, prepare
    from dfml.models.zoo import ModelConfig

    class Fails(DFedAvg):
        def client_step(self, ctx, state, neighbors, msg):
            if ctx.client_id == 2 and msg.round == 1:
                raise ValueError("boom")
            return super().client_step(ctx, state, neighbors, msg)

    cfg = ExperimentConfig(
        run=RunConfig(clients=3, rounds=3),
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="mlp", hidden=8),
        algorithm=LocalSGDConfig(local_epochs=1),
    )
    prep = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prep.splits, 0, cfg.resources)
    with pytest.raises(ClientStepError) as info:
        run(Fails(cfg.algorithm), fed, 3, topology=prep.topology)
    err = info.value
    assert (err.client_id, err.phase, err.round_index) == (2, "train", 1)
    assert "client 2 failed in phase train, client_step (round 1): ValueError: boom" in str(err)
    # Ray pickles it from the actor to the driver: it must survive the trip.
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.phase == "train"


def test_a_joiner_starts_from_its_nearest_holders() -> None:
    """Hand examples: the first BFS layer with a model, links either way, else the ring."""
    path = nx.path_graph(4)  # 0 - 1 - 2 - 3; 2 and 3 join
    assert join_sources(path, 3, holders={0, 1}, ids=range(4)) == [1]
    star = nx.Graph([(5, 1), (5, 2), (1, 0)])
    assert join_sources(star, 5, holders={0, 1, 2}, ids=[0, 1, 2, 5]) == [1, 2]
    pushes = nx.DiGraph([(4, 1), (0, 4), (2, 3)])  # 4 pushes to 1 and receives from 0
    assert join_sources(pushes, 4, holders={0, 1, 2, 3}, ids=range(5)) == [0, 1]
    # An epidemic matching that paired the two joiners 4 and 5: nobody in reach,
    # so the nearest holder on the ring 0..5: after 4 comes 5 (a joiner), before it 3.
    matching = nx.Graph([(0, 1), (2, 3), (4, 5)])
    assert join_sources(matching, 4, holders={0, 1, 2, 3}, ids=range(6)) == [3]
    assert join_sources(matching, 5, holders={0, 1, 2, 3}, ids=range(6)) == [0]
