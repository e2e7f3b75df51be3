"""A pool worker's SIGTERM (``iugc.common.signals.pool_worker_signals``): it ends the worker,
but never half-way through a message the worker is writing to its parent."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

from iugc.common.signals import SEND_GRACE, pool_worker_signals

MESSAGE = 4 * 2**20  # bytes: far more than a pipe holds, so the writer blocks in the middle


def _write_then_idle(writer):
    pool_worker_signals()
    writer.send_bytes(b"x" * MESSAGE)
    time.sleep(60)  # the SIGTERM ends it here, once the message is out


def _idle():
    pool_worker_signals()
    time.sleep(60)


def _fork():
    return multiprocessing.get_context("fork")


def test_a_sigterm_during_a_write_lets_the_message_finish_then_ends_the_worker():
    reader, writer = _fork().Pipe(duplex=False)
    worker = _fork().Process(target=_write_then_idle, args=(writer,))
    worker.start()
    writer.close()  # the worker holds the only writing end: a message cut short reads as EOF here
    time.sleep(0.5)  # the worker is blocked half-way: the pipe is full and nobody reads
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert worker.is_alive()  # it waits for its write
    began = time.monotonic()
    data = reader.recv_bytes()  # EOFError if it had stopped mid-message
    assert len(data) == MESSAGE
    worker.join(10)
    assert worker.exitcode == 128 + signal.SIGTERM and time.monotonic() - began < 5


def test_a_sigterm_outside_a_write_ends_the_worker_at_once():
    worker = _fork().Process(target=_idle)
    worker.start()
    time.sleep(0.3)
    began = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    worker.join(10)
    assert worker.exitcode == 128 + signal.SIGTERM and time.monotonic() - began < 1


def test_a_write_nobody_reads_does_not_keep_the_worker_past_the_grace():
    reader, writer = _fork().Pipe(duplex=False)
    worker = _fork().Process(target=_write_then_idle, args=(writer,))
    worker.start()
    writer.close()
    time.sleep(0.5)
    began = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    worker.join(SEND_GRACE + 5)
    assert worker.exitcode == 128 + signal.SIGTERM
    assert SEND_GRACE - 0.2 < time.monotonic() - began < SEND_GRACE + 2  # it waited for the write, then gave up
    reader.close()
