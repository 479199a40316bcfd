"""ε and σ against Opacus's own functions, and each algorithm's declared noised steps
against the steps its local training actually takes."""

from __future__ import annotations

import math

import pytest
from helpers.contexts import make_contexts

from dfml.actors.state import ClientState
from dfml.algorithms.privacy.accounting import (
    DataSizes,
    Usage,
    epsilon,
    meta_usage,
    run_noise,
    sgd_usage,
)
from dfml.algorithms.privacy.dpsgd import DPSGD
from dfml.errors import ConfigError
from dfml.launch.registry import ALGORITHMS

_CTXS, _INITS = make_contexts(12)
CTX, INIT = _CTXS[0], _INITS[0]


def test_sgd_usage_by_hand():
    # 70 samples in batches of 32 for 2 epochs: batches of 32, 32, 6 twice.
    assert sgd_usage(70, 32, 2) == Usage(32 / 70, 6)
    assert sgd_usage(20, 32, 3) == Usage(1.0, 3)  # one batch holds the whole set
    assert meta_usage([100, 40], 20, 7) == Usage(0.5, 7)  # the larger rate of the two sets


def test_epsilon_is_the_rdp_accountant_stepped_step_by_step():
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(60):
        accountant.step(noise_multiplier=1.1, sample_rate=0.25)
    assert epsilon(1.1, 0.25, 60, 1e-5) == accountant.get_epsilon(1e-5)
    assert epsilon(1.1, 0.25, 0, 1e-5) == 0.0 and epsilon(0.0, 0.25, 5, 1e-5) == math.inf


def test_derived_noise_is_opacus_get_noise_multiplier_of_the_neediest_client():
    from opacus.accountants.utils import get_noise_multiplier

    """σ for the run's steps (rounds × steps per round) and each client's sampling rate;
    with it nobody exceeds the target and the neediest client meets it."""
    usages = [sgd_usage(n, 32, 2) for n in (40, 300)]
    dominated = sgd_usage(48, 32, 2)  # the rate of n = 40 is higher at the same steps
    assert dominated.steps == usages[0].steps and dominated.sample_rate < usages[0].sample_rate
    sigma = run_noise(2.0, 1e-5, [*usages, usages[0], dominated], rounds=10)
    eps = [epsilon(sigma, u.sample_rate, 10 * u.steps, 1e-5) for u in usages]
    assert max(eps) <= 2.0 * 1.01 and max(eps) == pytest.approx(2.0, rel=0.01)
    needs = [
        get_noise_multiplier(
            target_epsilon=2.0,
            target_delta=1e-5,
            sample_rate=u.sample_rate,
            steps=10 * u.steps,
            accountant="rdp",
        )
        for u in usages
    ]
    assert sigma == max(needs)
    assert epsilon(sigma, dominated.sample_rate, 10 * dominated.steps, 1e-5) < max(eps)


#: (algorithm, config overrides) that train privately.
PRIVATE = [
    ("dfedavg", {}),
    ("dfedavg", {"train_split": "meta"}),
    ("fedprox", {"mu": 0.1}),
    ("fedavg-ft", {}),
    ("gfml", {}),  # fomaml
    ("gfml", {"meta_learner": "reptile"}),
    ("gfml", {"meta_learner": "sgd"}),
    ("reptile", {}),
    ("fedmeta-maml", {"first_order": True, "inner_steps": 2}),
    ("perfedavg", {"first_order": True}),
]


@pytest.mark.parametrize(("name", "knobs"), PRIVATE)
def test_declared_noised_steps_are_the_steps_local_training_takes(name, knobs):
    cls = ALGORITHMS[name]
    algorithm = cls(cls.Config(**knobs, batch_size=16), privacy=DPSGD(1.0, 0.5))
    counter = algorithm.privacy.start(0)
    algorithm.privatizer = lambda ctx, state: counter  # count what the client really takes
    algorithm.local_update(CTX, ClientState(0, INIT), INIT)
    declared = algorithm.private_usage(DataSizes(len(CTX.data.y_meta), len(CTX.data.y_query)))
    assert counter.steps == declared.steps > 0


#: (algorithm, config overrides, the reason named) that cannot train privately.
REFUSED = [
    ("pfedme", {}, "its own local update"),
    ("ditto", {}, "its own local update"),
    ("fedmeta-maml", {}, "--first-order true"),
    ("perfedavg", {}, "--first-order true"),
    ("fedmeta-metasgd", {}, "not a sum of per-sample gradients"),
    ("mefl", {}, "not a sum of per-sample gradients"),
    ("afml", {}, "not a sum of per-sample gradients"),
    ("gfml", {"meta_learner": "maml"}, "fomaml, reptile or sgd"),
    ("gfml", {"episodes": "labels"}, "--episodes batch"),
]


@pytest.mark.parametrize(("name", "knobs", "reason"), REFUSED)
def test_algorithms_that_do_not_train_with_per_sample_sgd_are_refused(name, knobs, reason):
    cls = ALGORITHMS[name]
    with pytest.raises(ConfigError, match=reason):
        cls(cls.Config(**knobs)).private_usage(DataSizes(50, 10))
    with pytest.raises(ConfigError, match=reason):  # also when built with DP from Python
        cls(cls.Config(**knobs), privacy=DPSGD(1.0, 1.0))
