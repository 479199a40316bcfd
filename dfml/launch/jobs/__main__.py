"""``python -m dfml.launch.jobs _run_job ID OPTIONS``: the job's entry point."""

import sys

from dfml.launch.jobs.entry import main

sys.exit(main())
