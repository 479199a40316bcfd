"""Fault tolerance after FMRec: replicas of meta-knowledge, detection, restore, chaos.

* :mod:`dfml.fault.config` — :class:`~dfml.fault.config.FaultConfig` (run flags).
* :mod:`dfml.fault.replica` — a client's state as a versioned, checksummed replica.
* :mod:`dfml.fault.pack` — a cohort's replicas as one packed object (one put).
* :mod:`dfml.fault.dispatcher` — leaf sets (who holds whose replica) and the replica index.
* :mod:`dfml.fault.holder` — sentinels and replica holding (client actors, the store).
* :mod:`dfml.fault.actor` — the client actor: atomic steps, replicate, restore, adopt.
* :mod:`dfml.fault.retriever` — newest surviving replica first, checksum verified.
* :mod:`dfml.fault.federation` — the fault-tolerant ``Federation``: wires the parts below.
* :mod:`dfml.fault.calls` — the redo rule: a step completes for every client, or raises.
* :mod:`dfml.fault.replicator` — replication requests and acknowledgements (driver side).
* :mod:`dfml.fault.restorer` — restore plans and restores (driver side).
* :mod:`dfml.fault.detector` — push-style detection, dead vs. unavailable, fencing.
* :mod:`dfml.fault.spares` — warm spares and the actor that replaces a dead one.
* :mod:`dfml.fault.store` — the replica store on the driver's node.
* :mod:`dfml.fault.directory` — published vectors and refs renamed by restores (pure).
* :mod:`dfml.fault.processes` — incarnations, handles, placement, live holders (pure).
* :mod:`dfml.fault.view` — what chaos and tests see of the client actors.
* :mod:`dfml.fault.chaos` — seeded kills (``ray.kill``, SIGKILL, node crash), a step observer.
* :mod:`dfml.fault.timeline` — the clock, the round being run, the events.
* :mod:`dfml.fault.events` — one record per kill, detection, restore, loss, outage.
* :mod:`dfml.fault.report` — the summary keys and ``faults.parquet``.
* :mod:`dfml.fault.durable` — the optional durable copy (pyarrow filesystems).
* :mod:`dfml.fault.errors` — :class:`~dfml.fault.errors.FaultToleranceError`.

This package's ``__init__`` imports nothing heavy: the replica store actor
loads it without torch.
"""
