"""Errors of the container evaluation, named by what the caller does with them.

- ``SubmissionError``: the submission is at fault. Its message is safe to show the team
  (it never contains ground truth); ``reason`` is a stable code for records and tests.
- ``RetryableError``: the platform is at fault (engine down, disk full, no GPU); try again
  later or elsewhere. Never the team's failure: no result is recorded against it.
  ``HostLimitError`` is the case of a phase asking for more than the host has.
- ``CancelledError``: the worker was interrupted; the job may be re-queued.
"""
from __future__ import annotations

# Stable codes for SubmissionError.reason, also used as the result's "failure" field.
REASONS = (
    "image_rejected",      # root user, wrong platform, too large, unloadable archive
    "time_limit",          # ran past the phase's wall time
    "memory_limit",        # killed by the out-of-memory killer (exit 137)
    "exit_code",           # exited non-zero
    "output_limit",        # wrote more than the phase allows
    "invalid_outputs",     # exited 0 but no case had a valid output
)


class EvaluationError(Exception):
    """Base class of the errors below."""


class SubmissionError(EvaluationError):
    """The submission is at fault; the message is participant-safe."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {REASONS}")
        super().__init__(message)
        self.reason = reason


class RetryableError(EvaluationError):
    """The platform is at fault (no engine, engine error); the same job may succeed later."""


class HostLimitError(RetryableError):
    """The phase's limits ask for more than the engine's host has (CPUs, memory, a GPU).

    ``limit`` names the field of ``Limits`` (``cpus``, ``memory_mb``, ``gpu``); the job can
    run on a larger host, or here with that limit lowered.
    """

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit


class CancelledError(EvaluationError):
    """The worker was interrupted (SIGINT/SIGTERM); everything it started was removed."""


class KitError(EvaluationError):
    """A team's starter-kit request is wrong (folder not empty, unknown challenge, not a
    kit folder); the message says what and what to do. Nothing was written."""
