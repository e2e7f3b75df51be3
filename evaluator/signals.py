"""The one way a command ends on SIGINT and SIGTERM: both raise KeyboardInterrupt in the
process that asked for it, so the code that is running cleans up as it would on Ctrl-C
(containers and their folders removed, staging folders aborted, pools terminated,
evaluations requeued). ``iugc`` installs it for every command (iugc/cli.py)."""
from __future__ import annotations

import os
import signal

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
    """For a forked pool worker's initializer: SIGTERM kills it (as ``Pool.terminate``
    expects) and SIGINT is ignored. It inherits handlers that turn both into an exception,
    which a per-case ``except`` would swallow (terminate then waited forever); and Ctrl-C
    reaches the whole process group, where the parent alone acts on it, so the workers
    print no traceback of their own."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
