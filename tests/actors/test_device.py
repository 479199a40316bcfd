"""GPU-share enforcement without a GPU: a fake CUDA device.

``torch.cuda``'s memory calls and Ray's GPU ids are replaced by recorders,
so these tests see exactly what an actor asks of CUDA: the cap (right
fraction, right device, before anything is allocated), cache release after
every step, the per-actor report, and the out-of-memory message. The real
thing is ``tests/actors/test_cuda.py`` (skipped without CUDA).
"""

from __future__ import annotations

import pickle
import platform
from types import SimpleNamespace

import pytest
import torch

from dfml.actors import client_actor, device
from dfml.actors.client_actor import ClientActor, ClientStepError, CohortSpec, LocalStore
from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.algorithms.base import CLIENT_STEP, LocalSGDConfig, Message
from dfml.algorithms.dfedavg import DFedAvg
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import make_splits
from dfml.data.registry import load_dataset
from dfml.models.zoo import ModelConfig

GIB = 1024**3
TOTAL = 40 * GIB
CUDA0 = torch.device("cuda", 0)
OOM_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 40 GiB"


class FakeCuda:
    """Records what the code under test asks of ``torch.cuda``."""

    def __init__(self) -> None:
        self.fractions: list[tuple[float, int]] = []
        self.emptied = 0

    def set_per_process_memory_fraction(self, fraction: float, index: int) -> None:
        self.fractions.append((fraction, index))

    def empty_cache(self) -> None:
        self.emptied += 1


@pytest.fixture
def fake_cuda(monkeypatch) -> FakeCuda:
    """CUDA "available" with one 40 GiB device 0; Ray "assigned" GPU 3 to this worker."""
    fake = FakeCuda()
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        cuda, "set_per_process_memory_fraction", fake.set_per_process_memory_fraction
    )
    monkeypatch.setattr(cuda, "empty_cache", fake.empty_cache)
    monkeypatch.setattr(
        cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=TOTAL)
    )
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda i: 3 * GIB)
    monkeypatch.setattr(cuda, "memory_allocated", lambda i: 9 * GIB)
    monkeypatch.setattr(
        device, "ray", SimpleNamespace(is_initialized=lambda: True, get_gpu_ids=lambda: [3])
    )
    return fake


DATA = DataConfig(dataset="synthetic", synthetic_samples=200, synthetic_shape=(6,))


def spec(gpu_share: float, clients: int = 2) -> CohortSpec:
    splits = make_splits(load_dataset(DATA).y, clients, PartitionConfig(), 0)
    return CohortSpec(
        DATA, ModelConfig(model="mlp", hidden=4), dict(enumerate(splits)), 0, gpu_share=gpu_share
    )


class OutOfMemoryAt(DFedAvg):
    """DFedAvg whose step runs out of GPU memory for one client."""

    def __init__(self, client_id: int) -> None:
        super().__init__(LocalSGDConfig(local_epochs=1))
        self.client_id = client_id

    def client_step(self, ctx, state, neighbors, msg):
        if ctx.client_id == self.client_id:
            raise torch.cuda.OutOfMemoryError(OOM_TEXT)
        return super().client_step(ctx, state, neighbors, msg)


def cuda_actor(algorithm, gpu_share: float) -> ClientActor:
    """A real in-process actor, built on CPU (no real GPU), that then believes it runs on cuda:0."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(client_actor, "pick_device", lambda: torch.device("cpu"))
        actor = ClientActor(spec(gpu_share), algorithm, store=LocalStore)
    actor.device = CUDA0
    return actor


def step_all(actor: ClientActor, round_index: int = 3) -> dict:
    return actor.step(CLIENT_STEP, {c: Message(round=round_index) for c in actor.states})


# ----- the device module alone ----------------------------------------------
def test_pick_device_uses_cuda_when_ray_assigned_a_gpu(fake_cuda):
    assert device.pick_device().type == "cuda"


def test_fractional_share_caps_the_device(fake_cuda):
    device.apply_memory_share(0.25, CUDA0)
    assert fake_cuda.fractions == [(0.25, 0)]


@pytest.mark.parametrize("whole", [1.0, 2.0])
def test_whole_gpus_are_not_capped(fake_cuda, whole):
    device.apply_memory_share(whole, CUDA0)
    assert fake_cuda.fractions == []
    assert device.memory_report(CUDA0, whole)["memory_limit_bytes"] == TOTAL


def test_cpu_device_does_nothing(fake_cuda):
    cpu = torch.device("cpu")
    device.apply_memory_share(0.25, cpu)
    device.release_cached(cpu)
    assert fake_cuda.fractions == [] and fake_cuda.emptied == 0
    assert device.memory_report(cpu, 0.25) == {"device": "cpu", "gpu_ids": ["3"]}
    assert device.out_of_memory_message(torch.cuda.OutOfMemoryError(OOM_TEXT), 1, 0.25, cpu) is None


def test_memory_report_on_cuda(fake_cuda):
    assert device.memory_report(CUDA0, 0.25) == {
        "device": "cuda",
        "gpu_ids": ["3"],
        "gpu_index": 0,
        "memory_share": 0.25,
        "memory_limit_bytes": 10 * GIB,
        "peak_memory_bytes": 3 * GIB,
    }


def test_only_out_of_memory_errors_are_translated(fake_cuda):
    assert device.out_of_memory_message(ValueError("bad"), 1, 0.25, CUDA0) is None


# ----- wired into a real ClientActor ------------------------------------------
def test_actor_caps_its_memory_before_allocating_anything(fake_cuda, monkeypatch):
    class Capped(Exception):
        pass

    def cap_then_stop(fraction, index):
        fake_cuda.fractions.append((fraction, index))
        raise Capped  # stop here: nothing may reach the (fake) GPU before the cap

    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", cap_then_stop)
    with pytest.raises(Capped):
        ClientActor(spec(0.25), DFedAvg(LocalSGDConfig()), store=LocalStore)
    assert fake_cuda.fractions == [(0.25, 0)]


def test_cached_blocks_are_released_after_every_step(fake_cuda):
    actor = cuda_actor(DFedAvg(LocalSGDConfig(local_epochs=1)), 0.25)
    step_all(actor)
    assert fake_cuda.emptied == 1
    step_all(actor, 4)
    assert fake_cuda.emptied == 2


def test_out_of_memory_names_the_client_its_share_and_the_use(fake_cuda):
    actor = cuda_actor(OutOfMemoryAt(client_id=1), 0.25)
    with pytest.raises(ClientStepError) as caught:
        step_all(actor)
    err = caught.value
    assert err.client_id == 1 and err.round_index == 3
    expected = (
        "client 1 exceeded its GPU memory share 0.25 of cuda:0 (limit 10.0 GiB): "
        "tried to allocate 2.00 GiB with 9.0 GiB allocated; "
        "use a larger --num-gpus-per-actor or a smaller model/batch"
    )
    assert expected in str(err)
    assert expected in str(pickle.loads(pickle.dumps(err)))  # as the driver gets it from Ray
    assert fake_cuda.emptied == 1  # released even though the step failed


def test_actor_info_reports_its_share(fake_cuda):
    info = cuda_actor(DFedAvg(LocalSGDConfig()), 0.25).info()
    assert info["device"] == "cuda" and info["gpu_ids"] == ["3"]
    assert info["memory_share"] == 0.25 and info["memory_limit_bytes"] == 10 * GIB
    assert info["peak_memory_bytes"] == 3 * GIB
    assert device.device_summary([info]) == [
        {
            "clients": 2,
            "device": "cuda",
            "gpu_ids": ["3"],
            "gpu_index": 0,
            "memory_share": 0.25,
            "memory_limit_bytes": 10 * GIB,
            "peak_memory_bytes": 3 * GIB,
        }
    ]


def test_cpu_actor_is_neither_capped_nor_released_and_reports_cpu_only(fake_cuda, monkeypatch):
    monkeypatch.setattr(
        device, "ray", SimpleNamespace(is_initialized=lambda: False, get_gpu_ids=lambda: [])
    )
    actor = ClientActor(spec(0.25), DFedAvg(LocalSGDConfig(local_epochs=1)), store=LocalStore)
    step_all(actor)
    assert actor.device.type == "cpu"
    assert fake_cuda.fractions == [] and fake_cuda.emptied == 0
    assert device.device_summary([actor.info()]) == [{"clients": 2, "device": "cpu", "gpu_ids": []}]


def test_federation_hands_each_actor_its_gpu_share():
    resources = ResourceConfig(num_cpus_per_actor=0.5, num_gpus_per_actor=0.25)
    fed = Federation(DATA, ModelConfig(model="mlp", hidden=4), spec(0.0).splits, 0, resources)
    assert fed.spec([0]).gpu_share == 0.25


def test_a_step_hands_freed_heap_pages_back(monkeypatch):
    """After each step the host heap is trimmed (glibc malloc_trim), on CPU too."""
    if platform.libc_ver()[0] == "glibc":
        assert device._MALLOC_TRIM is not None
    calls = []
    monkeypatch.setattr(device, "_MALLOC_TRIM", calls.append)
    device.release_cached(torch.device("cpu"))
    assert calls == [0]
