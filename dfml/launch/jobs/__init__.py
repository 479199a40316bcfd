"""Run experiments on a Ray cluster through the Ray Jobs API.

One module per concern: :mod:`~dfml.launch.jobs.commands` (the
subcommands), :mod:`~dfml.launch.jobs.dashboard` (finding and probing the
cluster), :mod:`~dfml.launch.jobs.lifecycle` (submitting, states, logs),
:mod:`~dfml.launch.jobs.retrieval` (``fetch``) and
:mod:`~dfml.launch.jobs.entry` (what runs inside the job).

Commands (``--address http://HEAD:8265``, or ``RAY_API_SERVER_ADDRESS`` /
``RAY_ADDRESS`` set to that URL)::

    dfml submit CONFIG.yaml [--working-dir DIR] [--follow] [--flag value ...]
    dfml status JOB
    dfml logs JOB [--follow]
    dfml stop JOB [--timeout S]
    dfml fetch JOB OUT [--from URI]

``submit`` reads the YAML file and the flags the way ``dfml run`` does and
builds the configuration locally (a bad option fails here, exit 2, before
anything is sent). It uploads the working directory (the repository, without
``.venv``, ``runs``, ``.git``, data and caches) and starts the job
``python -m dfml.launch.jobs _run_job ID OPTIONS``: the options travel inside
the entry point as one JSON argument, so the config file needs not be inside
the working directory. The job runs the experiment on the cluster without a
progress bar (a bar redrawn with carriage returns is unreadable in a log
file); instead it prints one line per round (``round 3/10 acc=... loss=...``)
and, at the end, ``final_accuracy=...``. ``submit`` prints the job id on
stdout (``JOB=$(dfml submit exp.yaml)``); hints go to stderr.

Where the results go. A job's working directory is a package directory that
Ray shares between jobs with the same files and deletes when its cache is
full, so results are not written there. A relative ``--out`` (or none) puts
them in ``<Ray session dir>/dfml-jobs/<job id>/[<out>]`` on the node that runs
the job's driver (the head node: jobs are submitted without entry-point
resources); an absolute ``--out`` is used as given, e.g. a folder on storage
that the cluster and you share. The job prints
``dfml-job: results folder PATH on node NODE_ID`` in its log first thing.

How ``fetch`` brings them back. Chosen: a small *retrieval job* through the
same Jobs API. ``fetch`` reads the results line from the job's log, then
submits a job (a one-file working directory, needing only Python and Ray on
the cluster) that runs a Ray task pinned to the driver's node
(``NodeAffinitySchedulingStrategy(node, soft=False)``); the task packs the
folder as a ``tar.gz``, the retrieval job prints it base64-encoded between
markers with its SHA-256, and ``fetch`` decodes, checks and unpacks it into
OUT, then deletes the retrieval job. Why this way: it needs nothing but the
dashboard address that ``submit`` already uses; no Ray Client port
(``ray://``, which also wants the same Python version on both ends), no GCS
port and no shared file system. Limits: the folder passes through the
retrieval job's log (about 4/3 of its compressed size), which suits results
folders of up to a few hundred MB; results written on the head node last
until the cluster stops. For large results or clusters you tear down, give
the job an absolute ``--out`` on shared storage (or use ``--checkpoint-uri``)
and copy with ``dfml fetch JOB OUT --from URI`` (``s3://``, ``gs://``, or a
path visible here; copied with ``pyarrow.fs``, no cluster involved).

A missing, malformed or unreachable address is one line naming it, exit 2,
within :data:`CONNECT_TIMEOUT_S` seconds (the connection is checked in a
thread with a deadline before Ray's client, which has no timeout, is used).
An unknown job id is one line, exit 2.
"""
