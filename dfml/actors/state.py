"""What a client is: its replicable state and the data it never ships.

:class:`ClientState` is everything needed to resume a client elsewhere
(restoring from a replica is "new actor + load state"). :class:`ClientData`
is rebuilt inside an actor from the client's partition indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from dfml.data.dataset import ArrayDataset
from dfml.data.split import ClientSplit
from dfml.models.flat import FlatModel


@dataclass
class ClientState:
    """A client's meta-knowledge.

    Attributes:
        client_id: the client's index 0..N-1 (its node in the topology).
        params: the flat float32 parameter vector (what neighbours receive).
        round: the number of completed rounds.
        extras: algorithm-specific tensors (Meta-SGD rates, optimizer state,
            personal models, a CL-FML cluster id); replicated with ``params``.
        last_loss: the last training loss.
        labels: the labels the client holds (ℒ_i).
    """

    client_id: int
    params: torch.Tensor
    round: int = 0
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    last_loss: float = float("nan")
    labels: tuple[int, ...] = ()

    def evolve(self, **changes: Any) -> ClientState:
        return replace(self, **changes)

    def to_host(self) -> ClientState:
        """A CPU copy (for replication / checkpoints, independent of device)."""
        return replace(
            self,
            params=self.params.detach().cpu().clone(),
            extras={k: v.detach().cpu().clone() for k, v in self.extras.items()},
        )


class ClientData:
    """A client's local tensors on its device: D^M, D^Q and the test set.

    They are slices of two shared arrays, ``x`` and ``y``, in which the
    client's rows are consecutive — D^M, then D^Q, then the test set — so
    D^M ∪ D^Q (``x_train``, ``y_train``), which every local epoch reads, is
    one slice (concatenating per step cost 0.4 s a round at 5,000 clients per
    actor). An actor gathers its whole cohort's rows into one pair of arrays
    (:func:`cohort_data`), and a slice is made only when a step asks for it:
    at a million clients, a tensor per part per client (eight views, or
    eight small copies) cost several kB a client. Read-only: nothing writes
    a client's samples.
    """

    __slots__ = ("meta", "query", "start", "test", "x", "y")

    def __init__(
        self,
        x_meta: torch.Tensor,
        y_meta: torch.Tensor,
        x_query: torch.Tensor,
        y_query: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
    ) -> None:
        self._set(
            torch.cat([x_meta, x_query, x_test]),
            torch.cat([y_meta, y_query, y_test]),
            0,
            (len(y_meta), len(y_query), len(y_test)),
        )

    def _set(self, x: torch.Tensor, y: torch.Tensor, start: int, sizes: tuple[int, ...]) -> None:
        self.x, self.y, self.start = x, y, start
        self.meta, self.query, self.test = sizes

    @classmethod
    def rows(
        cls, x: torch.Tensor, y: torch.Tensor, start: int, sizes: tuple[int, int, int]
    ) -> ClientData:
        """The client whose D^M, D^Q and test rows are ``sizes`` consecutive
        rows of ``x``/``y`` from ``start`` (shared, not copied)."""
        data = cls.__new__(cls)
        data._set(x, y, start, sizes)
        return data

    def _part(self, t: torch.Tensor, offset: int, n: int) -> torch.Tensor:
        begin = self.start + offset
        return t[begin : begin + n]

    @property
    def x_meta(self) -> torch.Tensor:
        return self._part(self.x, 0, self.meta)

    @property
    def y_meta(self) -> torch.Tensor:
        return self._part(self.y, 0, self.meta)

    @property
    def x_query(self) -> torch.Tensor:
        return self._part(self.x, self.meta, self.query)

    @property
    def y_query(self) -> torch.Tensor:
        return self._part(self.y, self.meta, self.query)

    @property
    def x_train(self) -> torch.Tensor:
        return self._part(self.x, 0, self.meta + self.query)

    @property
    def y_train(self) -> torch.Tensor:
        return self._part(self.y, 0, self.meta + self.query)

    @property
    def x_test(self) -> torch.Tensor:
        return self._part(self.x, self.meta + self.query, self.test)

    @property
    def y_test(self) -> torch.Tensor:
        return self._part(self.y, self.meta + self.query, self.test)

    @property
    def num_train(self) -> int:
        return self.meta + self.query

    @classmethod
    def from_split(
        cls, dataset: ArrayDataset, split: ClientSplit, device: torch.device
    ) -> ClientData:
        return cohort_data(dataset, {0: split}, device)[0]


def cohort_data(
    dataset: ArrayDataset, splits: Mapping[int, ClientSplit], device: torch.device
) -> dict[int, ClientData]:
    """Every client's :class:`ClientData` from one gather of the cohort's rows.

    One fancy index of the dataset (each client's D^M, D^Q and test indices
    in turn, its labels through its own ``relabel``) and one transfer to the
    device, instead of six small copies per client.
    """
    order = list(splits)
    parts = [(s.meta_train, s.query, s.test) for s in (splits[c] for c in order)]
    index = np.concatenate([np.concatenate(p) for p in parts]) if parts else np.empty(0, np.int64)
    y = dataset.labels(index).astype(np.int64)
    out: dict[int, ClientData] = {}
    sizes = [(len(m), len(q), len(t)) for m, q, t in parts]
    starts = np.concatenate([[0], np.cumsum([sum(z) for z in sizes])]).tolist()
    for cid, begin, end in zip(order, starts, starts[1:], strict=False):
        if splits[cid].label_permutation is not None:
            y[begin:end] = splits[cid].relabel(y[begin:end])
    x_all = torch.from_numpy(dataset.features(index)).to(device)
    y_all = torch.from_numpy(y).to(device)
    for cid, size, begin in zip(order, sizes, starts, strict=False):
        out[cid] = ClientData.rows(x_all, y_all, begin, size)
    return out


@dataclass(slots=True)
class ClientContext:
    """What a step function may use besides the state: model, data, device, seed."""

    client_id: int
    model: FlatModel
    data: ClientData
    device: torch.device
    seed: int

    def round_seed(self, round_index: int, salt: int = 0) -> int:
        """A seed unique to (experiment seed, client, round, salt)."""
        return int(
            np.random.SeedSequence([self.seed, self.client_id, round_index, salt]).generate_state(
                1
            )[0]
        )
