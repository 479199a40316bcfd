"""The generic client actor: hosts a cohort of logical clients.

A plain class (testable without Ray) plus one ``ray.remote`` wrapper. The
actor never knows which algorithm it runs: it is handed the algorithm's
client half (an :class:`~dfml.algorithms.base.Algorithm` holding only its
config) once and then asked, each step, to run one registered client
program (:mod:`dfml.programs`, by name) on the clients it hosts. Clients
join and leave a running actor.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from dfml import programs
from dfml.actors.device import (
    apply_memory_share,
    memory_report,
    out_of_memory_message,
    pick_device,
    release_cached,
)
from dfml.actors.heap import freeze_heap
from dfml.actors.state import ClientContext, ClientState, cohort_data
from dfml.channels import Row, fetch, row_runs, widened
from dfml.data.config import DataConfig
from dfml.data.registry import load_dataset
from dfml.data.split import ClientSplit
from dfml.models.zoo import ModelConfig, build_model
from dfml.steps import PARAMS, MessageTable, Publish, ResultTable, StepResult, join_results

log = logging.getLogger(__name__)

#: Most clients per vectorised call and per packed object. It bounds an
#: actor's step temporaries (the stacked, mixed and updated vectors, the
#: stacked copy it publishes) at this many vectors each, whatever the cohort
#: size: at N = 100,000 on two actors (50,000 clients each) whole-cohort
#: copies took ~10 GB per actor.
CHUNK = 4096

#: Most bytes of vectors per chunk (:func:`chunk_clients`). Under glibc's
#: largest mmap threshold (32 MiB), a chunk's matrices come from the heap and
#: are reused round after round; a larger matrix is a fresh mapping each
#: time, and its page faults cost more than the arithmetic: 10,000 MLP
#: clients (36 KB vectors) took 2.5 s a round in chunks of 1,024 (37 MB) and
#: 2.0 s in chunks of 448 (16 MB).
CHUNK_BYTES = 16 * 2**20


def chunk_clients(vector_bytes: int) -> int:
    """Clients per chunk for vectors of ``vector_bytes``: at most :data:`CHUNK`
    and :data:`CHUNK_BYTES` of vectors, at least one."""
    return max(1, min(CHUNK, CHUNK_BYTES // max(1, vector_bytes)))


def _alike(
    order: list[int], channels: Mapping[int, Mapping[str, Any]]
) -> list[tuple[str, list[int]]]:
    """(channel, clients of ``order``) groups whose values of that channel are
    arrays of one dtype and shape: only alike arrays stack into one packed
    object (under secure aggregation a cohort may publish masked ring
    elements beside plain models; label sets differ in length; an
    :class:`~dfml.channels.Encoded` value is not an array and travels alone)."""
    groups: dict[tuple[str, str, tuple[int, ...]], list[int]] = {}
    for cid in order:
        for name, value in channels[cid].items():
            if isinstance(value, np.ndarray):
                groups.setdefault((name, str(value.dtype), value.shape), []).append(cid)
    return [(name, ids) for (name, _, _), ids in groups.items()]


def stacked(values: list[np.ndarray]) -> np.ndarray:
    """``values`` as one [n, …] array: a read-only view when they are
    consecutive rows of one tensor storage (a batched step's clients, whose
    vectors are rows of one cohort matrix: no copy before the object store
    takes its own), else ``np.stack``. The view outlives the call (an
    in-process store keeps it), so the rows must share the storage that
    ``first`` keeps alive, not only lie back to back."""
    storage = _storage(values[0])
    if storage is not None and all(_storage(v) == storage for v in values):
        runs = row_runs(values, max_runs=1)
        if runs is not None:
            return runs[0][2]
    return np.stack(values)


def _storage(value: np.ndarray) -> int | None:
    """The address of the tensor storage a ``Tensor.numpy()`` array views, or
    ``None`` for an array that is not a tensor's."""
    base = value.base
    return base.untyped_storage().data_ptr() if isinstance(base, torch.Tensor) else None


def chunks(ids: list[int], size: int) -> list[list[int]]:
    """``ids`` cut into consecutive runs of at most ``size``."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


@dataclass(frozen=True)
class CohortSpec:
    """Everything an actor needs to build its clients (indices, not data).

    Attributes:
        data: the dataset the clients' splits index into.
        model: the model every hosted client trains.
        splits: client id → its data share (indices).
        seed: the run's seed (initial model, mini-batch order).
        num_threads: torch CPU threads of the actor.
        gpu_share: the GPU fraction Ray reserved for the actor
            (``--num-gpus-per-actor``); on CUDA, a fraction below 1 caps the
            actor's GPU memory at that share of the device.
        pack_params: publish each channel of one step's clients (its
            vectors of one dtype and shape) as packed objects of up to
            :func:`chunk_clients` vectors each (:mod:`dfml.channels`) instead of one
            object per client and channel.
        publish_dtype: the dtype the ``params`` channel travels in
            (:class:`~dfml.actors.config.ResourceConfig`).
        dataset: the driver's dataset as an object ref, which the actor
            maps from the object store (``None``: it loads ``data`` itself).
        programs: the modules that registered client programs in the driver
            (:func:`dfml.programs.modules`); the actor imports them, so a step
            may name any program the driver knows.
    """

    data: DataConfig
    model: ModelConfig
    splits: Mapping[int, ClientSplit]
    seed: int
    num_threads: int = 1
    gpu_share: float = 0.0
    pack_params: bool = False
    publish_dtype: str = "float32"
    programs: tuple[str, ...] = ()
    dataset: Any = None


class RayStore:
    """Parameters travel through Ray's object store (the normal case)."""

    put = staticmethod(ray.put)

    @staticmethod
    def get(refs: list[Any]) -> list[Any]:
        return ray.get(refs)


class LocalStore:
    """In-process "store" for the single-process runner: refs are the arrays."""

    @staticmethod
    def put(value: Any) -> Any:
        """A read-only view of an array (what Ray's zero-copy ``get`` hands a
        reader), a copy of anything else. No copy of an array: a client's
        published tensors are never changed in place (a step makes new ones),
        and a million clients' copies cost 2.7 GB even for a 650-parameter
        model."""
        if isinstance(value, np.ndarray):
            view = value.view()
            view.flags.writeable = False
            return view
        return value.copy()

    @staticmethod
    def get(refs: list[Any]) -> list[Any]:
        return list(refs)


class ClientStepError(RuntimeError):
    """A client's program raised: says which client, program, round and phase.

    The actor knows the program and round; the driver adds the step's
    phase (:meth:`in_phase`) when the error reaches it.
    """

    def __init__(
        self,
        client_id: int,
        program: str,
        round_index: int,
        error: BaseException | str,
        phase: str | None = None,
    ) -> None:
        self.client_id, self.program, self.round_index, self.phase = (
            client_id,
            program,
            round_index,
            phase,
        )
        self.detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        where = f"phase {phase}, {program}" if phase else program
        super().__init__(
            f"client {client_id} failed in {where} (round {round_index}): {self.detail}"
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Rebuilt from its fields, so it crosses process boundaries (Ray pickles it)."""
        return (
            type(self),
            (self.client_id, self.program, self.round_index, self.detail, self.phase),
        )

    def in_phase(self, phase: str) -> ClientStepError:
        """The same error, naming the step's phase."""
        return ClientStepError(self.client_id, self.program, self.round_index, self.detail, phase)


class ClientActor:
    """Holds client states and data; runs client programs on them."""

    def __init__(self, spec: CohortSpec, algorithm: Any, store: Any = RayStore) -> None:
        torch.set_num_threads(max(1, spec.num_threads))
        programs.load(spec.programs)
        self.spec = spec
        self.store = store
        self.device = pick_device()
        apply_memory_share(spec.gpu_share, self.device)  # before anything lands on the GPU
        self.algorithm = algorithm
        self.contexts: dict[int, ClientContext] = {}
        self.states: dict[int, ClientState] = {}
        dataset = self._dataset()
        self.model = build_model(spec.model, dataset.input_shape, dataset.num_classes).to(
            self.device
        )
        self.model.train(True)
        self.init_params = self.model.init_flat(spec.seed).to(self.device)
        self._build(dataset, spec.splits)
        # The clients are built: their index arrays (~1.7 kB a client) are not
        # needed again, nor the dataset's ref, which would keep the driver's
        # copy in the object store for as long as this actor lives (2.6 GB at
        # a million clients); a join hands its own (:meth:`add_clients`).
        self.spec = dataclasses.replace(spec, splits={}, dataset=None)
        if store is RayStore:  # an actor process of its own, living as long as its clients
            freeze_heap()

    def _dataset(self, given: Any = None) -> Any:
        """The pooled dataset: mapped read-only from the object store where the
        driver put it (no copy of its own) — ``given`` (the dataset itself:
        Ray resolves a ref passed as a call's argument) or the spec's ref —
        else loaded (cached per process)."""
        if given is not None:
            return given
        if self.spec.dataset is not None:
            return ray.get(self.spec.dataset)
        return load_dataset(self.spec.data)

    def _build(self, dataset: Any, splits: Mapping[int, ClientSplit]) -> None:
        """Contexts and initial states of ``splits``' clients; their samples are
        gathered in one go (:func:`~dfml.actors.state.cohort_data`).

        Then the process's cached datasets are dropped: the clients hold their
        own rows, and a whole dataset kept per actor (and in the driver, for
        the in-process federation) was the largest cost at a million clients
        (2.6 GB per copy at 10 samples of 64 floats each). A later join loads
        it again.
        """
        data = cohort_data(dataset, dict(sorted(splits.items())), self.device)
        load_dataset.cache_clear()
        for cid in sorted(splits):
            ctx = ClientContext(cid, self.model, data[cid], self.device, self.spec.seed)
            self.contexts[cid] = ctx
            self.states[cid] = self.algorithm.init_state(ctx, self.init_params.clone())

    # ----- membership ---------------------------------------------------
    def add_clients(
        self,
        splits: Mapping[int, ClientSplit],
        starts: Mapping[int, Any],
        dataset: Any = None,
    ) -> dict[int, Any]:
        """Host joining clients; each starts from Σ_j w_j x_j of its new neighbours.

        ``starts``: client → a message whose ``neighbors``/``weights`` name
        those vectors (``self_weight`` 0), mixed by the algorithm's own
        :meth:`mix`; a client with no entry starts from the common initial
        model. ``dataset``: the driver's dataset, mapped from the object
        store (``None``: the actor loads it). Returns each new client's
        :class:`StepResult` (its channels).
        """
        self._build(self._dataset(dataset), splits)
        wanted = [ref for cid in sorted(starts) for ref in starts[cid].neighbors]
        fetched = iter(fetch(self.store.get, wanted) if wanted else [])
        for cid in sorted(starts):
            msg = starts[cid]
            vectors = [next(fetched) for _ in msg.neighbors]
            state = self.states[cid]
            self.states[cid] = state.evolve(params=self.algorithm.mix(state, vectors, msg))
        return self._results(splits)

    def remove_clients(self, client_ids: list[int]) -> list[int]:
        """Drop departed clients' states and data."""
        for cid in client_ids:
            self.states.pop(cid, None)
            self.contexts.pop(cid, None)
        return sorted(self.states)

    # ----- steps --------------------------------------------------------
    def _results(
        self,
        client_ids: Iterable[int],
        metrics: Mapping[int, Mapping[str, float]] | None = None,
        publish: Publish = True,
    ) -> dict[int, StepResult]:
        """Each client's :class:`StepResult`: its metrics (none by default)
        and the channels ``publish`` names (all, none or the listed ones)
        put in the store — each channel's alike vectors of each
        chunk of them (:func:`chunk_clients`) as one packed object when the spec says so (a
        :class:`~dfml.channels.Row` each) — with each channel value's size
        in bytes (an encoded value's travelling bytes)."""
        order = sorted(client_ids)
        metrics = metrics or {}
        if not publish:
            return {cid: StepResult({}, dict(metrics.get(cid, {}))) for cid in order}
        only = None if publish is True else set(publish)
        channels = {cid: self._channels(cid, only) for cid in order}
        rows: dict[tuple[int, str], Row] = {}
        if self.spec.pack_params and self.store is RayStore and len(order) > 1:
            for name, alike in _alike(order, channels):
                for part in chunks(alike, self._chunk()):
                    block = stacked([channels[cid][name] for cid in part])
                    packed = self.store.put(self._travelling(name, block))
                    rows.update({(cid, name): Row(packed, i) for i, cid in enumerate(part)})
        out = {}
        for cid in order:
            refs = {
                name: rows[cid, name]
                if (cid, name) in rows
                else self.store.put(self._travelling(name, value))
                for name, value in channels[cid].items()
            }
            sizes = {
                name: int(value.nbytes) // (2 if self._halved(name, value) else 1)
                for name, value in channels[cid].items()
            }
            out[cid] = StepResult(refs, dict(metrics.get(cid, {})), sizes)
        return out

    def _halved(self, name: str, value: Any) -> bool:
        """Whether ``value`` of channel ``name`` travels as float16 (``publish_dtype``)."""
        return (
            self.spec.publish_dtype == "float16"
            and name == PARAMS
            and isinstance(value, np.ndarray)
            and value.dtype == np.float32
        )

    def _travelling(self, name: str, value: Any) -> Any:
        """``value`` (one vector or a packed block) in the dtype it travels in."""
        return value.astype(np.float16) if self._halved(name, value) else value

    def _channels(self, cid: int, only: set[str] | None = None) -> dict[str, Any]:
        """The algorithm's channels of client ``cid``, plus every state extra a
        registered program publishes (:attr:`~dfml.programs.Program.channels`);
        with ``only``, those of them it names."""
        state = self.states[cid]
        out = self.algorithm.publish(self.contexts[cid], state)
        for name in programs.channels():
            if name in state.extras:
                out[name] = state.extras[name].detach().cpu().numpy()
        if only is None:
            return out
        return {name: value for name, value in out.items() if name in only}

    def publish_all(self) -> dict[int, Any]:
        """Every hosted client's :class:`StepResult` with freshly published channels."""
        return self._results(self.states)

    def step(
        self,
        program: str,
        messages: Mapping[int, Any],
        publish: Publish = True,
        *,
        tabulate: bool = False,
    ) -> Mapping[int, Any]:
        """Run the registered ``program`` for each messaged client, in client order.

        All neighbour vectors of the cohort are fetched with one ``get``: one
        round trip per actor and step instead of one per client. Where the
        program offers a batched form for this algorithm and model
        (:meth:`~dfml.programs.Program.vectorized`, ``--vectorize``),
        the cohort runs as one vectorised computation per chunk (:func:`chunk_clients`) of
        clients — also a cohort of one,
        so a client's bits never depend on how many share its actor (a redo
        after a failure may run fewer); if that raises, the clients run one
        by one, so an error names its client. An error in a client's code is re-raised as
        :class:`ClientStepError` naming the client, the program and the
        round (and, for a CUDA out-of-memory error, the client's GPU share
        and what it tried to use). Cached CUDA blocks are released after the
        step, however it ends.

        Neighbour vectors published in float16 are widened chunk by chunk.
        With ``tabulate``, each chunk's results are packed into a
        :class:`~dfml.steps.ResultTable` as they come and the answer is one
        table where every chunk's results are alike (:meth:`step_columns`);
        otherwise a dict.
        """
        prog = programs.get(program)
        order = sorted(messages)
        raw = self._neighbors(order, messages)
        parts: list[Mapping[int, Any]] = []
        # A batched step leaves each client's vector a row of one cohort
        # matrix; if some hosted clients sit this step out, the rows are
        # copied out, or a row kept by a client that trains rarely would keep
        # its whole matrix alive (rounds of them under partial participation).
        detach = len(order) < len(self.states)
        try:
            for part in chunks(order, self._chunk()):
                neighbors = {cid: widened(raw[cid]) for cid in part}
                done = self._step_batched(prog, part, messages, neighbors)
                if detach:
                    done = {cid: (_own_rows(state), m) for cid, (state, m) in done.items()}
                metrics_of = {}
                for cid in part:
                    msg = messages[cid]
                    if cid in done:
                        state, metrics = done[cid]
                    else:
                        try:
                            state, metrics = prog.run(
                                self.algorithm,
                                self.contexts[cid],
                                self.states[cid],
                                neighbors[cid],
                                msg,
                            )
                        except Exception as err:
                            oom = out_of_memory_message(err, cid, self.spec.gpu_share, self.device)
                            raise ClientStepError(cid, program, msg.round, oom or err) from err
                    self.states[cid] = state
                    metrics_of[cid] = metrics
                results = self._results(part, metrics_of, publish)
                parts.append((ResultTable.pack(results) or results) if tabulate else results)
            return join_results(parts)
        finally:
            release_cached(self.device)

    def step_columns(
        self, program: str, messages: Mapping[int, Any], publish: Publish = True
    ) -> Mapping[int, Any]:
        """:meth:`step`, answered as one :class:`~dfml.steps.ResultTable` where
        the clients' results are alike (the driver then unpickles a few
        arrays, not a result per client); otherwise as :meth:`step` answers."""
        return self.step(program, messages, publish, tabulate=True)

    def _neighbors(self, order: list[int], messages: Mapping[int, Any]) -> dict[int, list[Any]]:
        """Each client's neighbour vectors, fetched with one ``get``; a
        :class:`~dfml.steps.MessageTable`'s handles are read from its columns,
        without a message per client."""
        if isinstance(messages, MessageTable):
            handles = messages.handles()
            fetched = fetch(self.store.get, handles, widen=False) if handles else []
            bounds = messages.offsets.tolist()
            return {
                cid: fetched[bounds[i] : bounds[i + 1]]
                for i, cid in enumerate(messages.ids.tolist())
            }
        wanted = [ref for cid in order for ref in messages[cid].neighbors]
        fetched = iter(fetch(self.store.get, wanted, widen=False) if wanted else [])
        return {cid: [next(fetched) for _ in messages[cid].neighbors] for cid in order}

    def _step_batched(
        self,
        program: programs.Program,
        order: list[int],
        messages: Mapping[int, Any],
        neighbors: Mapping[int, list[Any]],
    ) -> dict[int, tuple[ClientState, Any]]:
        """The clients' (state, metrics) from the batched ``program``; empty
        when there is none or it raised (the caller then runs every client
        on its own)."""
        batched = program.vectorized(self.algorithm, self.model)
        if batched is None or not order:
            return {}
        try:
            results = batched(
                [self.contexts[c] for c in order],
                [self.states[c] for c in order],
                [neighbors[c] for c in order],
                [messages[c] for c in order],
            )
        except Exception as err:
            log.warning(
                "batched %s of %d clients failed (%s: %s); running them one by one",
                program.name,
                len(order),
                type(err).__name__,
                err,
            )
            return {}
        return dict(zip(order, results, strict=True))

    def _chunk(self) -> int:
        return chunk_clients(self.init_params.nbytes)

    def get_state(self, client_id: int) -> ClientState:
        return self.states[client_id].to_host()

    def get_states(self, client_ids: list[int]) -> dict[int, ClientState]:
        return {cid: self.states[cid].to_host() for cid in client_ids}

    def set_state(self, state: ClientState) -> None:
        self.states[state.client_id] = state.evolve(
            params=state.params.to(self.device),
            extras={k: v.to(self.device) for k, v in state.extras.items()},
        )

    def set_states(self, states: Mapping[int, ClientState]) -> dict[int, Any]:
        """Load checkpointed states (resume) and publish them."""
        for state in states.values():
            self.set_state(state)
        return self._results(states)

    def info(self) -> dict[str, Any]:
        """Where this actor runs and what it hosts; on CUDA, its GPU share, limit and peak memory."""
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            **memory_report(self.device, self.spec.gpu_share),
            "clients": sorted(self.states),
            "train_sizes": {cid: c.data.num_train for cid, c in self.contexts.items()},
        }


def _own_rows(state: ClientState) -> ClientState:
    """``state`` with its vector and extras in their own memory where they are
    views into a larger tensor (a row of a cohort matrix)."""
    params = state.params.clone() if state.params._base is not None else state.params
    extras = {k: v.clone() if v._base is not None else v for k, v in state.extras.items()}
    return state.evolve(params=params, extras=extras)


RemoteClientActor = ray.remote(ClientActor)
