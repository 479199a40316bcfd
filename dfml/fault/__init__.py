"""Fault tolerance after FMRec: replicas of meta-knowledge, detection, restore, chaos.

* :mod:`dfml.fault.config` — :class:`~dfml.fault.config.FaultConfig` (run flags).
* :mod:`dfml.fault.replica` — a client's state as a versioned, checksummed replica.
* :mod:`dfml.fault.dispatcher` — leaf sets (who holds whose replica) and the replica index.
* :mod:`dfml.fault.holder` — sentinels and replica holding (client actors, the store).
* :mod:`dfml.fault.retriever` — newest surviving replica first, checksum verified.
* :mod:`dfml.fault.manager` — push-style detection, dead vs. unavailable, replacement.
* :mod:`dfml.fault.federation` — the fault-tolerant ``Federation`` and the redo rule.
* :mod:`dfml.fault.chaos` — seeded kills: ``ray.kill``, SIGKILL, node crash.
* :mod:`dfml.fault.events` — one record per kill, detection, restore, loss, outage.
* :mod:`dfml.fault.report` — the summary keys and ``faults.parquet``.

This package's ``__init__`` imports nothing heavy: the replica store actor
loads it without torch.
"""
