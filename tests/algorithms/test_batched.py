"""Batched local SGD (``--vectorize``): one vmap call per step equals the per-client loop.

Equal up to float rounding, not bit for bit: the batched matrix products and
the masked batch mean sum in another order than one client's step does, so
every comparison here has a tolerance (1e-5), far below what a wrong batch,
a wrong mini-batch order or an unfrozen client would change.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers.fault import metrics, run
from torch.nn.utils.rnn import pad_sequence

from dfml import programs
from dfml.actors import client_actor
from dfml.actors.client_actor import ClientActor, ClientStepError, CohortSpec, LocalStore
from dfml.algorithms import batched
from dfml.algorithms.base import CLIENT_STEP, EVALUATE, Algorithm, LocalSGDConfig, Message
from dfml.algorithms.batched import batched_evaluate, batched_sgd_epochs, vectorizable
from dfml.algorithms.dfedavg import DFedAvg
from dfml.algorithms.ditto import Ditto, DittoConfig
from dfml.algorithms.fedavg import FedAvg
from dfml.algorithms.fedavg_ft import FedAvgFT, FedAvgFTConfig
from dfml.algorithms.fedprox import FedProx, FedProxConfig
from dfml.algorithms.server import ADOPT_GLOBAL
from dfml.algorithms.sgd import evaluate, sgd_epochs
from dfml.channels import get_value
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import make_splits
from dfml.data.registry import load_dataset
from dfml.models.flat import FlatModel
from dfml.models.zoo import ModelConfig, build_model

TOL = 1e-5
#: Ragged clients: several full batches and a short one, one short batch only,
#: exactly one batch, a single sample, and no samples at all.
SIZES = [37, 5, 8, 1, 0, 20]
DATA = DataConfig(dataset="synthetic", synthetic_samples=240, synthetic_shape=(6,))


def mlp(inputs: int = 6) -> FlatModel:
    return build_model(ModelConfig(model="mlp", hidden=(16, 16)), (inputs,), 4)


def ragged_clients(model: FlatModel, sizes: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, 6, generator=g) for n in sizes]
    ys = [torch.randint(0, 4, (n,), generator=g) for n in sizes]
    start = model.init_flat(seed)
    thetas = start + 0.1 * torch.randn(len(sizes), start.numel(), generator=g)
    return thetas, xs, ys


def per_client(model, thetas, xs, ys, **knobs):
    seeds = knobs.pop("seeds")
    out = [
        sgd_epochs(model, thetas[c], xs[c], ys[c], seed=seeds[c], **knobs) for c in range(len(xs))
    ]
    return torch.stack([t for t, _ in out]), [loss for _, loss in out]


def assert_losses_close(got: torch.Tensor, want: list[float]) -> None:
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=TOL, atol=TOL, equal_nan=True)


def linear(inputs: int = 6) -> FlatModel:
    return build_model(ModelConfig(model="linear"), (inputs,), 4)


@pytest.mark.parametrize("make", [mlp, linear])
@pytest.mark.parametrize("epochs", [1, 3])
def test_batched_sgd_equals_the_per_client_loop(epochs, make):
    model = make()
    assert vectorizable(model)
    thetas, xs, ys = ragged_clients(model, SIZES)
    knobs = dict(lr=0.5, epochs=epochs, batch_size=8, seeds=[11, 12, 13, 14, 15, 16])
    want, want_loss = per_client(model, thetas, xs, ys, **dict(knobs))
    start = thetas.clone()
    got, got_loss = batched_sgd_epochs(model, thetas, xs, ys, **knobs)
    assert torch.equal(thetas, start)  # the input is not changed in place
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)
    assert_losses_close(got_loss, want_loss)
    # The client without samples keeps its vector and reports NaN, as sgd_epochs does.
    assert torch.equal(got[4], thetas[4]) and math.isnan(float(got_loss[4]))
    # Every other client moved (a frozen or skipped client would not have).
    assert all(not torch.equal(got[c], thetas[c]) for c in (0, 1, 2, 3, 5))


def test_each_client_keeps_its_own_minibatch_order():
    """Swapping two clients' seeds changes exactly their results: the order is per client."""
    model = mlp()
    thetas, xs, ys = ragged_clients(model, [24, 24, 24])
    knobs = dict(lr=0.5, epochs=1, batch_size=8)
    a, _ = batched_sgd_epochs(model, thetas, xs, ys, seeds=[1, 2, 3], **knobs)
    b, _ = batched_sgd_epochs(model, thetas, xs, ys, seeds=[2, 1, 3], **knobs)
    assert (a[0] - b[0]).abs().max() > 100 * TOL
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=TOL)
    one, _ = sgd_epochs(model, thetas[0], xs[0], ys[0], seed=2, **knobs)
    torch.testing.assert_close(b[0], one, rtol=TOL, atol=TOL)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, NaN equal to NaN."""
    return a.numpy().tobytes() == b.numpy().tobytes()


def test_a_clients_bits_do_not_depend_on_who_shares_its_call(monkeypatch):
    """Alone, in the whole cohort, with one other client, or one client per
    block: the same bits (what the fault layer's redo on another actor needs)."""
    model = mlp()
    thetas, xs, ys = ragged_clients(model, SIZES)
    knobs = dict(lr=0.5, epochs=2, batch_size=8)
    seeds = list(range(len(SIZES)))
    whole = batched_sgd_epochs(model, thetas, xs, ys, seeds=seeds, **knobs)
    scores = batched_evaluate(model, thetas, xs, ys)
    for group in ([c] for c in range(len(SIZES))), [[1, 0], [4, 3], [2, 5]]:
        for ids in group:
            part = batched_sgd_epochs(
                model,
                thetas[ids],
                [xs[c] for c in ids],
                [ys[c] for c in ids],
                seeds=[seeds[c] for c in ids],
                **knobs,
            )
            part_scores = batched_evaluate(
                model, thetas[ids], [xs[c] for c in ids], [ys[c] for c in ids]
            )
            for got, want in [
                *zip(part, whole, strict=True),
                *zip(part_scores, scores, strict=True),
            ]:
                assert same(got, want[ids])
    monkeypatch.setattr(batched, "BLOCK_BYTES", 1)  # one client per block
    assert len(batched.blocks(thetas, xs)) == len(SIZES)
    split = batched_sgd_epochs(model, thetas, xs, ys, seeds=seeds, **knobs)
    assert all(same(a, b) for a, b in zip(split, whole, strict=True))
    split_scores = batched_evaluate(model, thetas, xs, ys)
    assert all(same(a, b) for a, b in zip(split_scores, scores, strict=True))


@pytest.mark.parametrize("bias", [True, False])
def test_the_hand_written_mlp_gradient_equals_autograds(bias):
    """``_mlp_gradient`` (the MLPs' reverse pass by hand) against autograd through
    the vmapped model: a client that does not step gets a zero gradient."""
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(6, 5, bias=bias),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 5),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 4, bias=bias),
    )
    model = FlatModel(net)
    g = torch.Generator().manual_seed(0)
    theta = model.init_flat(0) + 0.3 * torch.randn(3, model.size, generator=g)
    x, y = torch.randn(3, 8, 2, 3, generator=g), torch.randint(0, 4, (3, 8), generator=g)
    valid = torch.rand(3, 8, generator=g) > 0.3
    active = torch.tensor([True, False, True])
    got = batched._mlp_gradient(model)(theta, x, y, valid, active)
    want = batched._plain_gradient(model)(theta, x, y, valid, active)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    assert got[0][1].abs().sum() == 0 and want[0][0].abs().sum() > 0


@pytest.mark.parametrize(
    "net",
    [
        torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(6, 4)),  # ReLU before any Linear
        torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU()),  # not ending in a Linear
        torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(6, 4))),  # nested
        torch.nn.Linear(6, 4),  # not a Sequential
    ],
)
def test_only_a_flat_mlp_gets_the_hand_written_gradient(net):
    assert batched._mlp_gradient(FlatModel(net)) is None


def test_batched_evaluate_equals_evaluate():
    model = mlp()
    thetas, xs, ys = ragged_clients(model, SIZES, seed=3)
    loss, acc = batched_evaluate(model, thetas, xs, ys)
    want = [evaluate(model, thetas[c], xs[c], ys[c]) for c in range(len(SIZES))]
    assert_losses_close(loss, [w[0] for w in want])
    assert_losses_close(acc, [w[1] for w in want])
    assert math.isnan(float(loss[4])) and math.isnan(float(acc[4]))


# ----- which algorithms batch ------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "program", "batches"),
    [
        (DFedAvg(LocalSGDConfig()), CLIENT_STEP, True),
        (DFedAvg(LocalSGDConfig(), vectorize=False), CLIENT_STEP, False),
        (DFedAvg(LocalSGDConfig()), EVALUATE, False),
        (FedAvg(LocalSGDConfig()), CLIENT_STEP, True),
        (FedAvg(LocalSGDConfig()), ADOPT_GLOBAL, True),
        (FedProx(FedProxConfig(mu=0.0)), CLIENT_STEP, True),
        (FedProx(FedProxConfig(mu=0.1)), CLIENT_STEP, False),  # a regularizer
        (Ditto(DittoConfig()), CLIENT_STEP, False),  # its own local_update
        # Fine-tuned evaluation: training batches (server mode scores in adopt), adopt not.
        (FedAvgFT(FedAvgFTConfig()), CLIENT_STEP, True),
        (FedAvgFT(FedAvgFTConfig()), ADOPT_GLOBAL, False),
        (FedAvgFT(FedAvgFTConfig(aggregation="gossip")), CLIENT_STEP, False),
    ],
)
def test_a_program_batches_only_where_the_step_is_plain_sgd(algorithm, program, batches):
    assert (programs.get(program).vectorized(algorithm, mlp()) is not None) == batches


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (ModelConfig(model="cnn", dropout=0.5), (1, 28, 28)),
        (ModelConfig(model="resnet-lite"), (3, 16, 16)),
    ],
)
def test_a_model_with_dropout_or_convolutions_runs_per_client(model, shape):
    flat = build_model(model, shape, 10)
    assert DFedAvg(LocalSGDConfig()).vectorized_client_step(flat) is None


# ----- inside an actor -------------------------------------------------------
def cohort(clients: int = 4) -> CohortSpec:
    splits = make_splits(load_dataset(DATA).y, clients, PartitionConfig(), 0)
    return CohortSpec(DATA, ModelConfig(model="mlp", hidden=(8,)), dict(enumerate(splits)), 0)


def ring_round(actor: ClientActor, round_index: int) -> dict:
    """One gossip round on a ring: each client mixes its two neighbours' last vectors."""
    n = len(actor.states)
    vectors = {c: s.params.numpy().copy() for c, s in actor.states.items()}
    messages = {
        c: Message(
            round=round_index,
            neighbors=(vectors[(c - 1) % n], vectors[(c + 1) % n]),
            weights=(0.25, 0.25),
            self_weight=0.5,
        )
        for c in range(n)
    }
    return actor.step(CLIENT_STEP, messages)


def test_an_actor_steps_its_cohort_batched_and_equal_to_one_by_one(monkeypatch):
    calls = []
    real = Algorithm.batched_client_step

    def spy(self, ctxs, *rest):
        calls.append(len(ctxs))
        return real(self, ctxs, *rest)

    monkeypatch.setattr(Algorithm, "batched_client_step", spy)
    cfg = LocalSGDConfig(local_epochs=2, lr=0.3, batch_size=8)
    on = ClientActor(cohort(), DFedAvg(cfg), store=LocalStore)
    off = ClientActor(cohort(), DFedAvg(cfg, vectorize=False), store=LocalStore)
    for r in range(3):
        got, want = ring_round(on, r), ring_round(off, r)
        for c in range(4):
            for key in ("train_loss", "test_loss", "accuracy"):
                assert got[c].metrics[key] == pytest.approx(want[c].metrics[key], abs=TOL)
    assert calls == [4, 4, 4]
    for c in range(4):
        torch.testing.assert_close(on.states[c].params, off.states[c].params, rtol=TOL, atol=TOL)
        assert on.states[c].round == off.states[c].round == 3


@pytest.mark.parametrize("vectorize", [True, False])
def test_float16_publishing_rounds_only_what_neighbours_mix(vectorize):
    """``publish_dtype float16``: the published vectors are the states rounded to
    float16 (half the bytes); a round mixing them equals a float32 actor's round
    on neighbour vectors rounded by hand, bit for bit; the states stay float32."""
    cfg = LocalSGDConfig(local_epochs=1, lr=0.3, batch_size=8)
    half = ClientActor(
        replace(cohort(), publish_dtype="float16"), DFedAvg(cfg, vectorize=vectorize), LocalStore
    )
    full = ClientActor(cohort(), DFedAvg(cfg, vectorize=vectorize), store=LocalStore)
    published = half.publish_all()
    size = half.init_params.numel()
    for c, result in published.items():
        value = result.refs["params"]
        assert value.dtype == np.float16 and result.sizes["params"] == 2 * size
        assert value.tolist() == half.states[c].params.numpy().astype(np.float16).tolist()
    messages = {
        c: Message(
            round=0,
            neighbors=(
                published[(c - 1) % 4].refs["params"],
                published[(c + 1) % 4].refs["params"],
            ),
            weights=(0.25, 0.25),
            self_weight=0.5,
        )
        for c in range(4)
    }
    by_hand = {
        c: replace(m, neighbors=tuple(np.asarray(v, dtype=np.float32) for v in m.neighbors))
        for c, m in messages.items()
    }
    half.step(CLIENT_STEP, messages)
    full.step(CLIENT_STEP, by_hand)
    for c in range(4):
        assert half.states[c].params.dtype == torch.float32
        assert same(half.states[c].params, full.states[c].params)


def test_rows_stay_views_only_when_every_hosted_client_steps():
    """A batched step leaves each vector a row of the cohort's matrix; when
    some hosted clients sit out, the stepped clients' rows are copied out (a
    row kept by a client that trains rarely would pin its whole matrix)."""
    cfg = LocalSGDConfig(local_epochs=1, lr=0.3, batch_size=8)
    actor = ClientActor(cohort(), DFedAvg(cfg), store=LocalStore)
    ring_round(actor, 0)
    bases = {actor.states[c].params._base for c in range(4)}
    assert len(bases) == 1 and None not in bases  # one shared matrix
    partial = {c: Message(round=1, self_weight=1.0) for c in (0, 1)}
    actor.step(CLIENT_STEP, partial)
    assert all(actor.states[c].params._base is None for c in (0, 1))
    assert actor.states[2].params._base is not None  # untouched: still the old rows


def test_a_cohort_runs_and_publishes_in_chunks_with_the_same_bits(monkeypatch, ray_session):
    """CHUNK bounds an actor's temporaries: clients 0-2 and 3 run (and are
    packed) apart, and every client's bits are those of one whole-cohort call."""
    cfg = LocalSGDConfig(local_epochs=2, lr=0.3, batch_size=8)
    whole = ClientActor(cohort(), DFedAvg(cfg), store=LocalStore)
    want = [ring_round(whole, r) for r in range(2)][-1]
    monkeypatch.setattr(client_actor, "CHUNK", 3)
    calls = []
    real = Algorithm.batched_client_step
    monkeypatch.setattr(
        Algorithm,
        "batched_client_step",
        lambda self, ctxs, *rest: calls.append(len(ctxs)) or real(self, ctxs, *rest),
    )
    chunked = ClientActor(cohort(), DFedAvg(cfg), store=LocalStore)
    got = [ring_round(chunked, r) for r in range(2)][-1]
    assert calls == [3, 1, 3, 1]
    assert {c: r.metrics for c, r in got.items()} == {c: r.metrics for c, r in want.items()}
    for c in range(4):
        assert torch.equal(chunked.states[c].params, whole.states[c].params)
    packed = ClientActor(replace(cohort(), pack_params=True), DFedAvg(cfg))  # Ray's store
    rows = {c: r.ref for c, r in packed.publish_all().items()}
    assert [rows[c].index for c in range(4)] == [0, 1, 2, 0]
    assert rows[0].ref == rows[2].ref != rows[3].ref
    for c in range(4):
        np.testing.assert_array_equal(get_value(rows[c]), packed.states[c].params.numpy())


class BatchFails(DFedAvg):
    """DFedAvg whose batched step always raises, and whose client ``bad`` fails too."""

    def __init__(self, bad: int | None) -> None:
        super().__init__(LocalSGDConfig(local_epochs=1))
        self.bad = bad

    def vectorized_client_step(self, model):
        def fail(*_):
            raise RuntimeError("batched step failed")

        return fail

    def client_step(self, ctx, state, neighbors, msg):
        if ctx.client_id == self.bad:
            raise ValueError("bad client")
        return super().client_step(ctx, state, neighbors, msg)


def test_a_failing_batched_step_falls_back_to_one_by_one(caplog):
    actor = ClientActor(cohort(), BatchFails(bad=None), store=LocalStore)
    one_by_one = DFedAvg(LocalSGDConfig(local_epochs=1), vectorize=False)
    plain = ClientActor(cohort(), one_by_one, store=LocalStore)
    got = actor.step(CLIENT_STEP, {c: Message(round=0) for c in range(4)})
    want = plain.step(CLIENT_STEP, {c: Message(round=0) for c in range(4)})
    assert "running them one by one" in caplog.text
    # Both ran client by client: the same bits.
    assert {c: r.metrics for c, r in got.items()} == {c: r.metrics for c, r in want.items()}


def test_the_fallback_names_the_failing_client():
    actor = ClientActor(cohort(), BatchFails(bad=2), store=LocalStore)
    before = {c: s.params.clone() for c, s in actor.states.items()}
    with pytest.raises(ClientStepError, match="client 2 failed in client_step"):
        actor.step(CLIENT_STEP, {c: Message(round=0) for c in range(4)})
    assert torch.equal(actor.states[3].params, before[3])  # nothing after it ran


# ----- a whole run ------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["dfedavg", "fedavg"])
def test_a_run_with_and_without_vectorize_gives_the_same_metrics(tmp_path, algorithm):
    """4 clients in one cohort, 3 rounds; close, not bitwise (float rounding). In
    process: the cohort is the in-process actor's; a Ray actor's cohort is tested above."""
    on = run(tmp_path / "on", algorithm=algorithm, backend="local", vectorize=True)
    off = run(tmp_path / "off", algorithm=algorithm, backend="local", vectorize=False)
    a, b = metrics(tmp_path / "on"), metrics(tmp_path / "off")
    assert a.num_rows == b.num_rows == 12
    assert a.column("client").to_pylist() == b.column("client").to_pylist()
    for key in ("train_loss", "test_loss", "accuracy"):
        np.testing.assert_allclose(
            a.column(key).to_numpy(), b.column(key).to_numpy(), rtol=TOL, atol=TOL
        )
    # ...and the flag reached the actors: the batched sums round differently.
    assert not a.column("train_loss").equals(b.column("train_loss"))
    assert on["final_accuracy"] == pytest.approx(off["final_accuracy"], abs=TOL)


def test_pad_clients_gathers_row_slices_of_one_tensor_as_pad_sequence_would():
    """Clients whose samples are slices of one cohort array (empty ones too) are
    padded by one gather, equal to ``pad_sequence``; other inputs take that path."""
    x, y = torch.randn(30, 2, 3), torch.randint(0, 5, (30,))
    spans = [(0, 5), (5, 0), (7, 8), (20, 1), (21, 9)]
    xs, ys = [x[a : a + n] for a, n in spans], [y[a : a + n] for a, n in spans]
    assert batched._gather_rows(xs, ys) is not None
    got = batched.pad_clients(xs, ys)
    want = pad_sequence(xs, batch_first=True), pad_sequence(ys, batch_first=True)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    loose = [t.clone() for t in xs]
    assert batched._gather_rows(loose, ys) is None
    assert torch.equal(batched.pad_clients(loose, ys)[0], want[0])
    flat = torch.randn(60)  # slices of a view: their base's rows are not samples
    rows = [flat.view(30, 2)[0:3], flat.view(30, 2)[3:5]]
    assert batched._gather_rows(rows, [y[0:3], y[3:5]]) is None
    assert torch.equal(
        batched.pad_clients(rows, [y[0:3], y[3:5]])[0], pad_sequence(rows, batch_first=True)
    )
    empty = batched.pad_clients([x[3:3], x[9:9]], [y[3:3], y[9:9]])
    assert empty[0].shape == (2, 1, 2, 3) and not empty[0].any() and not empty[1].any()
