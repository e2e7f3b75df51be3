"""Per-token request counters for API v1: fixed windows that start at a token's first
call (as Flask-Limiter's fixed-window strategy counts), so ``5 per minute`` lets 5 calls
through, refuses the 6th and frees up a minute after the 1st.

With Redis (a deployment's broker) the counters are Flask-Limiter's, in Redis, shared
by every process. Without it they are :class:`WindowCounters`, in this process's memory:
the ``limits`` package's memory storage expires its keys from a timer thread it starts
anew every 10 ms while calls come in, which costs an API call more than its own work.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowStats:
    reset_time: float
    """When the current window ends (seconds since the epoch)."""
    remaining: int


class WindowCounters:
    """Fixed-window counters in memory, with the two calls of ``limits``' strategies that
    API v1 uses (:meth:`hit`, :meth:`get_window_stats`); ``item`` is a ``limits`` rate.

    >>> from limits import parse
    >>> counters, rate = WindowCounters(), parse("2 per minute")
    >>> [counters.hit(rate, "token-a") for _ in range(3)], counters.hit(rate, "token-b")
    ([True, True, False], True)
    """

    def __init__(self, clock=time.time, size: int = 100_000):
        self._clock, self._size = clock, size
        self._windows: dict[tuple, list] = {}  # key -> [window end, calls counted]
        self._lock = threading.Lock()

    def hit(self, item, *identifiers: str) -> bool:
        """Count one call; False (not counted) when the window has ``item.amount`` already."""
        key, now = (item.key_for(*identifiers),), self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or window[0] <= now:
                if len(self._windows) >= self._size:
                    self._drop_ended(now)
                window = self._windows[key] = [now + item.get_expiry(), 0]
            if window[1] >= item.amount:
                return False
            window[1] += 1
            return True

    def get_window_stats(self, item, *identifiers: str) -> WindowStats:
        now = self._clock()
        with self._lock:
            window = self._windows.get((item.key_for(*identifiers),))
        if window is None or window[0] <= now:
            return WindowStats(now, item.amount)
        return WindowStats(window[0], item.amount - window[1])

    def _drop_ended(self, now: float) -> None:
        for key in [k for k, (end, _) in self._windows.items() if end <= now]:
            del self._windows[key]
