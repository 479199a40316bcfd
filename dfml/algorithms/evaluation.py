"""The evaluation protocol for personalized FL, shared by every algorithm.

Once, at the end of a run (a read-only step of phase ``final-evaluation``
in the last round, after the algorithm's own steps, so its columns land in
that round's metrics), each client i measures on its own test set:

* ``global_accuracy`` — the global model x̄. In server mode x̄ is the server's
  model; in gossip mode it is the consensus x̄ = Σ_k (n_k / n) x_k of all
  published vectors (the quantity decentralized SGD converges to).
* ``pers{k}_accuracy`` — the client's published vector x_i after k local
  fine-tune steps on its support set D^M (:meth:`Algorithm.adapt`; k from
  ``pers_steps``, default 0, 1, 5: "Pers.0", "Pers.1", "Pers.5").
* ``local_accuracy`` — the local-only model: the common initialisation
  trained only on the client's training data D^M ∪ D^Q with plain SGD
  (``local_only_lr``, batch size 32) for the passes over its data that the
  federated run made, ``rounds × local_epochs`` epochs (``local_epochs`` of
  the algorithm, 2 if it has none; or ``local_only_epochs``). It does not
  depend on the algorithm's other knobs, so within one comparison every
  algorithm's QoI is measured against the same local-only models.
* ``qoi`` — MEFL's Quantum of Improvement (after Divi et al.),
  QoI_i = acc_pers,i − max(acc_global,i, acc_local,i), with acc_pers the
  Pers.K accuracy for the largest K in ``pers_steps``. Negative: personalizing
  did not beat the better of the global and the local-only model.

Vectors are scored with :meth:`Algorithm.evaluate_client` (``params`` given:
exactly that vector), so an algorithm whose vector has its own layout can
override scoring. The summary adds fairness over clients (std and the mean
of the worst 10 % of clients) of the final ``accuracy`` and of Pers.K, and the
number of rounds and of model bytes sent until the mean ``accuracy`` first
reached ``target_accuracy`` (``rounds_to_target``, ``bytes_to_target``, and
with a virtual clock, :mod:`dfml.algorithms.virtual_clock`, the virtual
seconds ``time_to_target``). The
extra cost is a few local epochs per client, once; ``personalized_eval:
false`` turns it off.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dfml.algorithms.aggregate import data_size_weights
from dfml.algorithms.base import LocalSGDConfig, Message, Metrics, RunEnv
from dfml.algorithms.sgd import evaluate, sgd_epochs
from dfml.algorithms.virtual_clock import VIRTUAL_TIME
from dfml.errors import ConfigError
from dfml.programs import Program, register
from dfml.records import Callback, RoundRecord
from dfml.steps import DriverState, Phase, Step, StepSource

if TYPE_CHECKING:
    from dfml.actors.state import ClientContext, ClientState
    from dfml.algorithms.base import Algorithm

log = logging.getLogger(__name__)

PERS_SALT = 0x9E55
LOCAL_SALT = 0x10CA1

#: The program of the final-evaluation step (:func:`evaluate_personalized`).
EVALUATE_PERSONALIZED = "evaluate_personalized"


@dataclass(frozen=True)
class EvalConfig:
    """Knobs of evaluation: how often rounds are scored, and the end-of-run
    personalization protocol.

    Attributes:
        eval_every: score the clients every k-th round (rounds k−1, 2k−1, …)
            and always the last one; the rounds between have no accuracy
            (NaN in metrics.parquet) and skip the evaluation's cost.
        personalized_eval: run the Pers.k / QoI protocol after the last round.
        pers_steps: the fine-tune step counts k reported as ``pers{k}_accuracy``.
        local_only_epochs: epochs of the local-only baseline; ``None`` means the
            federated run's budget, rounds × local_epochs; 0 skips it (no QoI).
        local_only_lr: SGD step size of the local-only baseline.
        target_accuracy: report the first round whose mean accuracy reaches it,
            the bytes sent until then and, with client speeds or
            --schedule-mode async, the virtual seconds (time_to_target).
    """

    eval_every: int = 1
    personalized_eval: bool = True
    pers_steps: tuple[int, ...] = (0, 1, 5)
    local_only_epochs: int | None = None
    local_only_lr: float = LocalSGDConfig.lr
    target_accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        steps = self.pers_steps
        if not steps or any(k < 0 for k in steps) or len(set(steps)) != len(steps):
            raise ConfigError(f"pers_steps must be distinct integers >= 0, got {list(steps)}")
        object.__setattr__(self, "pers_steps", tuple(sorted(steps)))
        if self.local_only_epochs is not None and self.local_only_epochs < 0:
            raise ConfigError(f"local_only_epochs must be >= 0, got {self.local_only_epochs}")
        if not (self.local_only_lr > 0 and math.isfinite(self.local_only_lr)):
            raise ConfigError(f"local_only_lr must be a positive number, got {self.local_only_lr}")
        t = self.target_accuracy
        if t is not None and not 0.0 < t <= 1.0:
            raise ConfigError(f"target_accuracy must be in (0, 1], got {t}")


# ----- pure metric functions ---------------------------------------------
def qoi(pers: Sequence[float], global_: Sequence[float], local: Sequence[float]) -> np.ndarray:
    """QoI_i = pers_i − max(global_i, local_i), per client."""
    return np.asarray(pers, float) - np.maximum(
        np.asarray(global_, float), np.asarray(local, float)
    )


def worst_fraction_mean(values: Sequence[float], fraction: float = 0.1) -> float:
    """Mean of the ⌈fraction·n⌉ smallest values (at least one)."""
    v = np.sort(np.asarray(values, float))
    if len(v) == 0:
        return float("nan")
    return float(v[: max(1, math.ceil(fraction * len(v) - 1e-9))].mean())


def rounds_to_target(mean_accuracy: Sequence[float], target: float) -> int | None:
    """1-based index of the first round with mean accuracy ≥ target, else None."""
    for r, acc in enumerate(mean_accuracy):
        if acc >= target:
            return r + 1
    return None


def bytes_to_target(
    mean_accuracy: Sequence[float], bytes_sent: Sequence[int], target: float
) -> int | None:
    """Model bytes sent in the rounds up to and including the first whose mean
    accuracy is ≥ target (what reaching it cost), else None."""
    rounds = rounds_to_target(mean_accuracy, target)
    return None if rounds is None else int(sum(bytes_sent[:rounds]))


def time_to_target(
    mean_accuracy: Sequence[float], virtual_time: Sequence[float], target: float
) -> float | None:
    """The virtual clock (seconds) at the end of the first round whose mean
    accuracy is ≥ target, else None (also for a run without a virtual clock)."""
    rounds = rounds_to_target(mean_accuracy, target)
    if rounds is None or math.isnan(virtual_time[rounds - 1]):
        return None
    return float(virtual_time[rounds - 1])


# ----- client side (runs in the actors) ------------------------------------
def personalization_metrics(
    algorithm: Algorithm,
    ctx: ClientContext,
    state: ClientState,
    global_vector: np.ndarray,
    steps: Sequence[int],
    local_epochs: int,
    local_lr: float = LocalSGDConfig.lr,
) -> Metrics:
    """One client's global / Pers.k / local-only accuracies and QoI (read-only)."""

    def score(params: torch.Tensor) -> float:
        return float(algorithm.evaluate_client(ctx, state, params)["accuracy"])

    x_bar = torch.tensor(np.asarray(global_vector), device=ctx.device)
    out: Metrics = {"global_accuracy": score(x_bar)}
    seed = ctx.round_seed(state.round, PERS_SALT)
    for k in steps:
        out[f"pers{k}_accuracy"] = score(algorithm.adapt(ctx, state, state.params, k, seed))
    if local_epochs > 0:
        local, _ = sgd_epochs(
            ctx.model,
            ctx.model.init_flat(ctx.seed).to(ctx.device),
            ctx.data.x_train,
            ctx.data.y_train,
            lr=local_lr,
            epochs=local_epochs,
            batch_size=LocalSGDConfig.batch_size,
            seed=ctx.round_seed(0, LOCAL_SALT),
        )
        out["local_accuracy"] = evaluate(ctx.model, local, ctx.data.x_test, ctx.data.y_test)[1]
        pers = out[f"pers{max(steps)}_accuracy"]
        out["qoi"] = float(qoi([pers], [out["global_accuracy"]], [out["local_accuracy"]])[0])
    return out


def evaluate_personalized(
    algorithm: Algorithm,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """The read-only end-of-run program; the global vector is ``neighbors[0]``."""
    return state, personalization_metrics(algorithm, ctx, state, neighbors[0], **msg.extra)


register(Program(EVALUATE_PERSONALIZED, evaluate_personalized))


# ----- driver side -----------------------------------------------------------
class PersonalizedEvaluation(Callback, StepSource):
    """Plans the protocol's step in the last round and summarizes it.

    It is a step source for the loop (:meth:`next_step`, :meth:`absorb`),
    like an algorithm's driver half, and a callback for the summary.
    """

    def __init__(self, cfg: EvalConfig, rounds: int) -> None:
        self.cfg, self.rounds = cfg, rounds
        self.local_epochs = LocalSGDConfig.local_epochs
        self.mean_accuracy: list[float] = []
        self.bytes_sent: list[int] = []
        self.virtual_time: list[float] = []
        self.final: dict[int, Metrics] = {}
        self.last_accuracy: list[float] = []
        self.seconds = 0.0

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        self.local_epochs = int(getattr(algorithm.config, "local_epochs", self.local_epochs))

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        """The evaluation step, once, in the last round."""
        done = Phase.FINAL_EVALUATION in state.phases
        if not self.cfg.personalized_eval or state.round != self.rounds - 1 or done:
            return None
        epochs = self.cfg.local_only_epochs
        if epochs is None:
            epochs = (state.round + 1) * self.local_epochs
        msg = Message(
            round=state.round + 1,
            neighbors=(global_ref(state, env),),
            weights=(1.0,),
            self_weight=0.0,
            extra={
                "steps": self.cfg.pers_steps,
                "local_epochs": epochs,
                "local_lr": self.cfg.local_only_lr,
            },
        )
        return Step(
            Phase.FINAL_EVALUATION,
            EVALUATE_PERSONALIZED,
            state.round,
            dict.fromkeys(env.live(), msg),
            publish=False,
            read_only=True,
        )

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, Any], env: RunEnv
    ) -> None:
        state.merge_metrics(results)
        self.final = {cid: dict(res.metrics) for cid, res in results.items()}
        log.info("personalized evaluation of %d clients done", len(results))

    def on_resume(self, history: Sequence[RoundRecord]) -> None:
        """A resumed run: the rounds before the checkpoint count towards the target."""
        self.mean_accuracy = [r.mean("accuracy") for r in history]
        self.bytes_sent = [r.bytes_sent for r in history]
        self.virtual_time = [r.mean(VIRTUAL_TIME) for r in history]

    def on_round_end(self, record: RoundRecord) -> None:
        self.mean_accuracy.append(record.mean("accuracy"))
        self.bytes_sent.append(record.bytes_sent)
        self.virtual_time.append(record.mean(VIRTUAL_TIME))
        self.last_accuracy = [
            float(record.metrics[c].get("accuracy", np.nan)) for c in sorted(record.metrics)
        ]
        self.seconds = record.phase_seconds.get(Phase.FINAL_EVALUATION, self.seconds)

    def summary(self) -> dict[str, Any]:
        target = self.cfg.target_accuracy
        out: dict[str, Any] = {
            "accuracy_worst10": worst_fraction_mean(self.last_accuracy)
            if self.last_accuracy
            else None,
            "target_accuracy": target,
            "rounds_to_target": None
            if target is None
            else rounds_to_target(self.mean_accuracy, target),
            "bytes_to_target": None
            if target is None
            else bytes_to_target(self.mean_accuracy, self.bytes_sent, target),
            "time_to_target": None
            if target is None
            else time_to_target(self.mean_accuracy, self.virtual_time, target),
        }
        if not self.final:
            return out
        ids = sorted(self.final)
        keys = sorted({k for m in self.final.values() for k in m})
        for key in keys:
            out[key] = float(np.mean([self.final[c][key] for c in ids]))
        pers_key = f"pers{max(self.cfg.pers_steps)}_accuracy"
        pers = [self.final[c][pers_key] for c in ids]
        out[f"{pers_key}_std"] = float(np.std(pers))
        out[f"{pers_key}_worst10"] = worst_fraction_mean(pers)
        out[f"per_client_{pers_key}"] = pers
        if "qoi" in keys:
            q = [self.final[c]["qoi"] for c in ids]
            out["per_client_qoi"] = q
            out["qoi_positive_fraction"] = float(np.mean(np.asarray(q) > 0))
        out["personalized_eval_seconds"] = self.seconds
        return out


def global_ref(state: DriverState, env: RunEnv) -> Any:
    """The server model, or the data-size weighted consensus of all live clients."""
    from dfml.algorithms.server import average

    refs = state.refs
    ids = env.live()
    if all(refs[c] is refs[ids[0]] for c in ids):
        return refs[ids[0]]
    sizes = [env.sizes[c] for c in ids]
    return average([float(w) for w in data_size_weights(sizes)], [refs[c] for c in ids])
