"""The small CL-FML system the Ray and serving tests train: 9 clients in three
overlapping label groups, K = 3 clusters, 2 rounds, three actors."""

from __future__ import annotations

from typing import Any

SCENARIO: dict[str, Any] = {
    "algorithm": "clfml",
    "partition": "label-group",
    "groups": 3,
    "group_overlap": 0.2,
    "clients": 9,
    "clusters": "3",
    "rounds": 2,
    "topology": "small-world",
    "degree": 2,
    "tasks": 4,
    "finetune_rounds": 2,
    "generator_rounds": 2,
    "clients_per_actor": 3,  # three actors: neighbours within an actor and across actors
}
