"""The runner's algorithm is the one the options ask for: plain, clustered, compressed."""

from __future__ import annotations

from dfml.algorithms.choco import ChocoSGD
from dfml.algorithms.clfml.label_clustering import LabelClustering
from dfml.algorithms.compressed import COMPRESSED, CompressedGossip
from dfml.algorithms.dfedavg import DFedAvg
from dfml.launch.options import build_config
from dfml.launch.services import build_algorithm


def built(**options):
    return build_algorithm(build_config(options)[0], None)  # no --dp-clip: nothing prepared


def test_each_option_set_builds_its_algorithm():
    assert type(built(algorithm="dfedavg")) is DFedAvg
    assert type(built(algorithm="dfedavg", compressor="none")) is DFedAvg
    naive = built(algorithm="dfedavg", compressor="randk", compression=0.2, vectorize=False)
    assert isinstance(naive, CompressedGossip) and isinstance(naive, DFedAvg)
    assert naive.gossip_channel == COMPRESSED and naive.config.compression == 0.2
    assert naive.vectorize is False
    choco = built(algorithm="choco-sgd", compressor="qsgd", levels=4)
    assert type(choco) is ChocoSGD and choco.config.build().method == "qsgd"
    both = built(algorithm="fedprox", cluster_by="labels", compressor="sign")
    assert isinstance(both, CompressedGossip) and isinstance(both, LabelClustering)
