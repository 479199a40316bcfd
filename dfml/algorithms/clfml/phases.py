"""The names CL-FML and its task service give their steps: phases and client programs.

They live with the package, not in the core: the core knows only its own
phases (:class:`dfml.steps.Phase`) and finds programs by name in
:mod:`dfml.programs`, where :mod:`~dfml.algorithms.clfml.label_clustering` and
:mod:`~dfml.algorithms.clfml.task_client` register theirs.
"""

from __future__ import annotations

import enum

from dfml import steps


class Phase(enum.StrEnum):
    """The label clustering's phases (a round ends with the core's ``train``) and the task service's."""

    TRAIN = steps.Phase.TRAIN.value
    DISSEMINATE = "disseminate"
    CONVERGECAST = "convergecast"
    CLUSTER = "cluster"
    BROADCAST = "broadcast"
    TASK = "task"


# The label clustering's client programs (:mod:`~dfml.algorithms.clfml.label_clustering`).
DISSEMINATE_LABELS = "disseminate_labels"
CONVERGECAST = "convergecast_labels"
CLUSTER_AT_LEADER = "cluster_at_leader"
RECEIVE_CLUSTERS = "receive_clusters"

# The task service's client program (:mod:`~dfml.algorithms.clfml.task_client`):
# one round of every chain of a task that is due.
TASK_ROUND = "task_round"
