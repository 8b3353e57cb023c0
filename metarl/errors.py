"""The toolkit's own errors: a problem with what the user gave or what a run met, as opposed to a bug.

Each is a ``ValueError``, so callers that catch ``ValueError`` keep working. The command line reports a
:class:`MetaRLError` as one line on stderr with exit code 2; any other exception is a bug and shows its
traceback.

    MetaRLError
    ├── ConfigError        a configuration that cannot be used (a field, a value, an agent that does not fit the family)
    ├── CheckpointError    a checkpoint that is missing, unreadable or does not fit the run
    ├── RunDirError        a run directory that cannot be used: busy, not a directory, not writable, damaged
    ├── NonFiniteError     a NaN or an infinity where only finite numbers make sense (a run that diverged)
    └── ClusterError       a Ray cluster that cannot be joined, has no room for the run's workers, or lost too many
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ClusterError", "ConfigError", "MetaRLError", "NonFiniteError", "RunDirError"]


class MetaRLError(ValueError):
    """What the user can fix (a config, a checkpoint, a run directory, a step size); the message names it."""


class ConfigError(MetaRLError):
    """A configuration that cannot be used; the message names the offending field or value."""


class CheckpointError(MetaRLError):
    """A checkpoint that is missing, unreadable or does not fit the run; the message names the path."""


class RunDirError(MetaRLError):
    """A run directory that cannot be used: busy, not a directory, not writable, damaged; the message names it."""


class NonFiniteError(MetaRLError):
    """A NaN or infinity where only finite numbers make sense; the message names where it was found."""


class ClusterError(MetaRLError):
    """A Ray cluster that cannot do what the run needs: it cannot be joined, has no room for a sampler worker, or
    lost workers more often than ``sampler.max_failures`` allows (:mod:`metarl.rl.distributed`)."""
