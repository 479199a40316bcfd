"""The run itself: the step loop, membership over time, whole-run checkpoints."""
