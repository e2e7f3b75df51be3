"""Errors of the container evaluation, named by what the caller does with them.

- ``SubmissionError``: the submission is at fault. Its message is safe to show the team
  (it never contains ground truth); ``reason`` is a stable code for records and tests.
- ``RetryableError``: the platform is at fault (engine down, disk full); try again later.
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


class CancelledError(EvaluationError):
    """The worker was interrupted (SIGINT/SIGTERM); everything it started was removed."""


class KitError(EvaluationError):
    """A team's starter-kit request is wrong (folder not empty, unknown challenge, not a
    kit folder); the message says what and what to do. Nothing was written."""
