"""Running: the composition root (``run``), the training loop, configs and their ranges, checkpoints, run
directories (one writer, atomic files), logs, the evaluation protocol, bootstrap intervals, reports and the
``metarl`` command."""
