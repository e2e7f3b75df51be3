"""The one way a command ends on SIGINT and SIGTERM: both raise KeyboardInterrupt in the
process that asked for it, so the code that is running cleans up as it would on Ctrl-C
(containers and their folders removed, staging folders aborted, pools terminated,
evaluations requeued). ``iugc`` installs it for every command (iugc/cli.py)."""
from __future__ import annotations

import os
import signal
import time

_INSTALLED: dict = {}  # the process that installed the handlers, and the handlers it had


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in this process; in a process forked from
    it (multiprocessing workers) they act as they did before, so ``Pool.terminate`` still
    ends a worker quietly."""
    if _INSTALLED.get("pid") == os.getpid():
        return  # installed already: keep the handlers from before ours
    _INSTALLED.update(pid=os.getpid(), handlers={s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)})
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    if os.getpid() != _INSTALLED["pid"]:  # a forked worker: the signal's action before ours
        signal.signal(signum, _INSTALLED["handlers"][signum])
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")


def pool_worker_signals() -> None:
    """For a forked pool worker's initializer: SIGTERM ends it through SystemExit (exit
    status 128 + 15) and SIGINT is ignored.

    It inherits handlers that turn both into KeyboardInterrupt, which is fine in the parent
    but not here. SIGTERM must end the worker, because ``Pool.terminate`` sends it. It must
    do so by an exception, not the default action: an idle worker waits for its next task
    holding the pool's queue lock, and only an exception unwinds that ``with lock:``. A
    worker killed outright keeps the lock forever, and the parent's terminate then waits
    on it (a SIGTERM to the process group hung ``iugc evaluate``). A per-case
    ``except Exception`` does not catch SystemExit, and multiprocessing prints no traceback
    for it. SIGINT (Ctrl-C reaches the whole process group) is the parent's to act on.

    The exit waits (up to :data:`SEND_GRACE` seconds, looking again every 10 ms) while the
    worker is writing a result to the pool's pipe: a worker that stops half-way through a
    message leaves the parent's result thread waiting for the rest forever, and the
    parent's terminate waits on that thread (a rare hang of ``iugc evaluate`` on Ctrl-C,
    about 1 in 100 runs, when a worker began a result after the parent's last read)."""
    _EXIT["deadline"] = None
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


SEND_GRACE = 2.0
"""Seconds a SIGTERMed pool worker may take to finish writing the message it is writing."""
_EXIT: dict = {"deadline": None}


def _exit_on_sigterm(signum, frame):
    now = time.monotonic()
    deadline = _EXIT["deadline"] = _EXIT["deadline"] or now + SEND_GRACE
    if now < deadline and _writing_to_a_pipe(frame):
        signal.signal(signal.SIGALRM, _exit_on_sigterm)  # look again in 10 ms
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        return
    raise SystemExit(128 + signal.SIGTERM)


def _writing_to_a_pipe(frame) -> bool:
    """Whether ``frame`` is inside a multiprocessing connection's send."""
    while frame is not None:
        code = frame.f_code
        if code.co_name in ("send", "send_bytes", "_send_bytes", "_send") and code.co_filename.endswith(
                os.path.join("multiprocessing", "connection.py")):
            return True
        frame = frame.f_back
    return False
