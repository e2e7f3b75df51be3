"""What the running workers can evaluate, and what follows from it.

Each worker, embedded or Celery, writes at start what its engine's host gives one
evaluation (CPUs, memory, a usable GPU: ``iugc.sandbox.docker_engine.Host``), moves its
``seen_at`` with each heartbeat and removes its row when it stops. A worker not seen for
``LIVE_SECONDS`` (the queue's heartbeat timeout) is not *live*.

- Routing: a worker claims only the evaluations whose limits it can give (:func:`fits`, a
  condition of ``queue``'s claims), so no evaluation fails for want of a GPU.
- Uploads: while workers are live and none of them can run a phase, an upload to it is
  refused before anything is stored (:func:`cannot_run`), unless the phase queues such
  uploads anyway (``Phase.queue_without_worker``, for workers that start on demand). While
  no worker is live at all (the workers restarting) uploads are accepted and wait.
- Waiting: a queued evaluation no live worker can run says what it waits for
  (:func:`waiting_for`: "waiting for a worker with a GPU"); it is never failed for that.
"""
from __future__ import annotations

import datetime as dt
import os

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from iugc.sandbox.docker_engine import Host, Limits, shortfall
from iugc.submissions.db import transaction
from iugc.submissions.models import Phase, Worker, utcnow

LIVE_SECONDS = 60.0
"""A worker silent this long is not live, and the reaper takes back its evaluations."""
ANYTHING = Host(cpus=2**20, memory_mb=2**30, gpu=True)
"""The capacity of an evaluation that runs no image (the no-op one, a test's stand-in)."""
FORGET_AFTER = dt.timedelta(days=1)
"""A worker that has not been seen for this long (it was killed) is removed at the next start."""


def this_host() -> Host:
    """What this machine's Docker engine gives one evaluation; without an answering engine,
    the machine's own CPUs and memory and no GPU (its evaluations then fail as platform
    faults and are retried, as before)."""
    from iugc.sandbox import docker_engine
    from iugc.sandbox.exceptions import RetryableError

    try:
        return docker_engine.host_resources(docker_engine.client())
    except RetryableError:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        return Host(cpus=os.cpu_count() or 1, memory_mb=int(memory), gpu=False)


def _row(worker_id: str, host: Host, now: dt.datetime) -> Worker:
    return Worker(id=worker_id, host=worker_id.split(":")[0], cpus=host.cpus, memory_mb=host.memory_mb, gpu=host.gpu,
                  started_at=now, seen_at=now)


def register(sessions: sessionmaker[Session], worker_id: str, host: Host) -> None:
    """Record a starting worker's capacity (and forget workers unseen for a day)."""
    now = utcnow()
    with transaction(sessions) as session:
        session.execute(delete(Worker).where(Worker.seen_at < now - FORGET_AFTER))
        session.merge(_row(worker_id, host, now))


def seen(sessions: sessionmaker[Session], worker_id: str, host: Host) -> None:
    """A worker's heartbeat: move its ``seen_at`` (writing its row again if it was removed)."""
    now = utcnow()
    with transaction(sessions) as session:
        if session.execute(update(Worker).where(Worker.id == worker_id).values(seen_at=now).returning(Worker.id)).first() is None:
            session.add(_row(worker_id, host, now))


def leave(sessions: sessionmaker[Session], worker_id: str) -> None:
    """A worker stops: it no longer counts as able to run anything."""
    with transaction(sessions) as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))


def live(session: Session, timeout_seconds: float = LIVE_SECONDS, now: dt.datetime | None = None) -> list[Worker]:
    """The workers seen within ``timeout_seconds``, oldest first."""
    since = (now or utcnow()) - dt.timedelta(seconds=timeout_seconds)
    return list(session.execute(select(Worker).where(Worker.seen_at >= since).order_by(Worker.started_at, Worker.id)).scalars())


def _limits(limits: dict) -> Limits:
    return Limits(cpus=float(limits.get("cpus", 1)), memory_mb=int(limits.get("memory_mb", 64)), gpu=bool(limits.get("gpu")))


def _host(worker: Worker) -> Host:
    return Host(cpus=worker.cpus, memory_mb=worker.memory_mb, gpu=worker.gpu)


def missing(limits: dict, workers: list[Worker]) -> list[str] | None:
    """What the best-equipped of the live ``workers`` lacks to run an evaluation under
    ``limits`` (a phase's), in words ("a GPU", "4 CPUs"); None when one of them can run it
    or there is none (nothing is known: see :func:`waiting_for`)."""
    needs = [[words for _, words, _ in shortfall(_limits(limits), _host(w))] for w in workers]
    return None if not needs or any(not n for n in needs) else min(needs, key=len)


def cannot_run(phase: Phase, workers: list[Worker]) -> str | None:
    """Why an upload to ``phase`` would not be evaluated by the live ``workers``, for the
    team (one sentence naming what is missing, never a host), or None: one of them can run
    it, none is live at all (they are restarting), or the phase queues such uploads anyway."""
    lacks = None if phase.queue_without_worker else missing(phase.limits, workers)
    if lacks is None:
        return None
    return (f"phase {phase.slug} needs a worker with {' and '.join(lacks)} to evaluate a submission, and none is running "
            "now, so an upload would not be evaluated: try again later or write to the organizers")


def waiting_for(limits: dict | None, workers: list[Worker]) -> str:
    """What a queued evaluation waits for, given the live ``workers``: "its turn", "a
    worker to start" (none is live) or "a worker with a GPU" (what none of them has)."""
    if not workers:
        return "a worker to start"
    lacks = missing(limits or {}, workers)
    return "its turn" if lacks is None else f"a worker with {' and '.join(lacks)}"


def unrunnable(phases: list[Phase], workers: list[Worker]) -> list[tuple[Phase, list[str]]]:
    """The ``phases`` none of the live ``workers`` can run, each with what is missing (queue page)."""
    return [(p, lacks) for p in phases if (lacks := missing(p.limits, workers)) is not None]


def within(limits: dict, host: Host) -> dict:
    """``limits`` (a phase's) lowered to what ``host`` gives one evaluation: no GPU where
    it has none, at most its CPUs and memory (``make demo`` on a laptop)."""
    return {**limits, "gpu": bool(limits.get("gpu")) and host.gpu, "cpus": min(limits.get("cpus", 1), host.cpus),
            "memory_mb": min(limits.get("memory_mb", 64), host.memory_mb)}


def fits(limits, host: Host | None) -> list:
    """SQL conditions that a JSON ``limits`` expression asks for no more than ``host``
    gives (no conditions for None: anything)."""
    if host is None:
        return []
    conditions = [func.coalesce(limits["cpus"].as_float(), 0.0) <= host.cpus,
                  func.coalesce(limits["memory_mb"].as_float(), 0.0) <= host.memory_mb]
    if not host.gpu:
        conditions.append(limits["gpu"].as_boolean().is_not(True))
    return conditions
