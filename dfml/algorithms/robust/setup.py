"""From the ``robustness`` section and the experiment to a run's :class:`Robustness`.

Everything here runs before any actor starts, so what the rules cannot
serve is one :class:`ConfigError` line: an attacker fraction that makes no
attacker, ALIE where an attacker sees no honest vector (server mode), and
Krum on a neighbourhood (or cohort) too small for the attackers it assumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dfml.algorithms.robust.attacks import alie_z, attacker_count, attacker_ids
from dfml.algorithms.robust.config import RobustConfig
from dfml.algorithms.robust.settings import Robustness
from dfml.errors import ConfigError


def build_robustness(
    section: RobustConfig,
    seed: int,
    clients: Sequence[int],
    num_classes: int,
    sets: Mapping[int, int],
    centralized: bool,
) -> Robustness:
    """The run's settings: attackers drawn from ``seed`` among the initial ``clients``.

    ``sets``: each client's number of inputs to the rule — 1 + its degree
    when gossiping, the trained cohort in server mode — checked against
    Krum's n > 2f + 2 and m <= n − f.
    """
    f = section.byzantine
    count = attacker_count(f, len(clients))
    if f > 0 and count == 0:
        raise ConfigError(
            f"--byzantine {f} of {len(clients)} clients makes no attacker; "
            f"allowed: 0, or at least 1/{len(clients)} = {1 / len(clients):.3g}"
        )
    if section.attack == "alie" and count and centralized:
        raise ConfigError(
            "--attack alie needs the honest vectors an attacker receives, but in server mode "
            "it receives only the global model; allowed: sign-flip, gaussian, label-flip"
        )
    settings = Robustness(
        rule=section.robust_aggregation,
        attackers=frozenset(attacker_ids(seed, clients, f)),
        attack=section.attack,
        attack_scale=section.attack_scale,
        byzantine=f,
        trim_fraction=section.trim_fraction,
        krum_byzantine=section.krum_byzantine,
        krum_select=section.krum_select,
        clip_radius=section.clip_radius,
        alie_z=alie_z(len(clients), count) if count else 0.0,
        num_classes=num_classes,
    )
    if settings.rule == "krum":
        check_krum(settings, sets)
    return settings


def check_krum(settings: Robustness, sets: Mapping[int, int]) -> None:
    """Every set Krum aggregates needs n > 2f + 2 and multi-Krum's m <= n − f."""
    for client, n in sorted(sets.items()):
        f, m = settings.krum_f(n), settings.krum_select
        if n <= 2 * f + 2:
            raise ConfigError(
                f"--robust-aggregation krum: client {client} aggregates n = {n} vectors, "
                f"assuming f = {f} attackers, but Krum needs n > 2f + 2; allowed: a denser "
                "topology (--degree), fewer attackers or a smaller --krum-byzantine"
            )
        if m > n - f:
            raise ConfigError(
                f"--krum-select {m}: client {client} aggregates n = {n} vectors with "
                f"f = {f}, so multi-Krum can select at most n - f = {n - f}"
            )
