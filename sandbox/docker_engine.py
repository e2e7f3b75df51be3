"""Every call to the Docker engine goes through this module.

Containers are created only by :func:`run_container`, which applies the hardened
defaults: no network, read-only root filesystem, all capabilities dropped,
no-new-privileges, an init process, pids/memory/CPU limits with swap equal to memory,
a size-limited tmpfs ``/tmp``, ``/input`` read-only, a capped log. The image's own
non-root user runs the code (images running as root are rejected before this).
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from iugc.sandbox.exceptions import HostLimitError, RetryableError, SubmissionError

RUNNER_LABEL = "org.iugc.runner"
OWNER_LABEL = "org.iugc.owner"          # "<hostname>:<pid>" of the worker that started it
LOG_MAX_SIZE = "1m"                     # the engine keeps at most this much log per container


@dataclass(frozen=True)
class Limits:
    """Per-phase limits of one evaluation (see ``phases[].limits`` in a challenge file)."""

    time_limit_seconds: float = 300.0
    memory_mb: int = 4096
    cpus: float = 2.0
    pids_limit: int = 256
    output_limit_mb: float = 50.0
    image_size_limit_mb: float = 10000.0
    tmp_mb: int = 256
    gpu: bool = False

    def __post_init__(self):
        for name in ("time_limit_seconds", "memory_mb", "cpus", "pids_limit", "output_limit_mb", "image_size_limit_mb", "tmp_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"limit {name} must be > 0, got {getattr(self, name)!r}")

    @classmethod
    def from_phase(cls, phase) -> "Limits":
        """Limits of a challenge phase (``ChallengeDefinition.phases[i]``)."""
        lim = phase.limits
        return cls(
            time_limit_seconds=lim.time_limit_seconds, memory_mb=lim.memory_mb, cpus=lim.cpus,
            pids_limit=lim.pids_limit, output_limit_mb=lim.output_limit_mb,
            image_size_limit_mb=lim.image_size_limit_mb, gpu=lim.gpu,
        )


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(tag: str) -> bool:
    """Whether the worker named by an ``OWNER_LABEL`` value still runs (on this host)."""
    host, _, pid = tag.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's worker: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def client():
    """A client of the local engine, or RetryableError saying how to get one."""
    import docker
    from docker.errors import DockerException

    try:
        engine = docker.from_env(timeout=120)
        engine.ping()
    except DockerException as exc:
        raise RetryableError(
            f"no Docker engine reachable ({exc.__class__.__name__}); start one (as root: "
            "`dockerd &`), or evaluate the trusted baseline with --runner local"
        ) from None
    return engine


def engine_available() -> bool:
    try:
        client()
    except RetryableError:
        return False
    return True


@dataclass(frozen=True)
class Host:
    """What the engine's host can give one container."""

    cpus: int
    memory_mb: int
    gpu: bool


# The engine starts a GPU container through NVIDIA's runtime or its hook; without
# either, a GPU request fails at start with "could not select device driver".
GPU_HOOK = "nvidia-container-runtime-hook"


def host_resources(engine) -> Host:
    """CPUs, memory and GPU support of the engine's host (one ``docker info`` call)."""
    from docker.errors import DockerException

    try:
        info = engine.info()
    except DockerException as exc:
        raise RetryableError(f"the engine did not answer `docker info`: {exc}") from None
    runtimes = info.get("Runtimes") or {}
    gpu = "nvidia" in runtimes or shutil.which(GPU_HOOK) is not None
    return Host(cpus=int(info.get("NCPU") or 0), memory_mb=int((info.get("MemTotal") or 0) // 2**20), gpu=gpu)


def shortfall(limits: Limits, host: Host) -> list[tuple[str, str, str]]:
    """What ``host`` cannot give an evaluation under ``limits``: one ``(limit, needs, has)``
    per limit it falls short of (the field of ``Limits``, then words); empty when it can.

    >>> shortfall(Limits(cpus=4, memory_mb=4096), Host(cpus=2, memory_mb=8192, gpu=False))
    [('cpus', '4 CPUs', '2')]
    """
    short = []
    if limits.gpu and not host.gpu:
        short.append(("gpu", "a GPU", f"none usable (no `nvidia` runtime, no {GPU_HOOK})"))
    if limits.cpus > host.cpus:
        short.append(("cpus", f"{limits.cpus:g} CPUs", f"{host.cpus:g}"))
    if limits.memory_mb > host.memory_mb:
        short.append(("memory_mb", f"{limits.memory_mb} MB of memory", f"{host.memory_mb} MB"))
    return short


def check_host(limits: Limits, host: Host, phase: str = "the phase") -> None:
    """Refuse limits the host cannot give, before anything runs (HostLimitError, naming the
    first limit of :func:`shortfall`).

    >>> check_host(Limits(cpus=2), Host(cpus=2, memory_mb=8192, gpu=False))
    >>> check_host(Limits(cpus=4), Host(cpus=2, memory_mb=8192, gpu=False), "final-test")
    Traceback (most recent call last):
    ...
    iugc.sandbox.exceptions.HostLimitError: final-test asks for 4 CPUs but the engine's host has 2
    """
    for limit, needs, has in shortfall(limits, host)[:1]:
        raise HostLimitError(limit, f"{phase} asks for {needs} but the engine's host has {has}")


# Start failures that are the image's own (its entrypoint cannot be executed); any other
# start or create failure is the platform's (no GPU driver, cgroups, disk, the engine).
_IMAGE_START_FAULTS = ("exec:", "executable file not found", "exec format error", "no command specified")


def _image_fault(explanation: str) -> bool:
    text = explanation.lower()
    return any(marker in text for marker in _IMAGE_START_FAULTS)


def container_config(
    image: str,
    limits: Limits,
    *,
    input_dir: Path,
    output_dir: Path,
    name: str,
    labels: dict[str, str] | None = None,
) -> dict:
    """Keyword arguments of ``containers.create`` for one hardened evaluation run."""
    from docker.types import DeviceRequest, LogConfig

    memory = f"{int(limits.memory_mb)}m"
    config = {
        "image": image,
        "name": name,
        "hostname": "submission",
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "init": True,
        "pids_limit": int(limits.pids_limit),
        "mem_limit": memory,
        "memswap_limit": memory,          # swap equal to memory: no swapping past the limit
        "nano_cpus": int(limits.cpus * 1e9),
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={int(limits.tmp_mb)}m"},
        "volumes": {
            str(input_dir): {"bind": "/input", "mode": "ro"},
            str(output_dir): {"bind": "/output", "mode": "rw"},
        },
        "environment": {"IUGC_INPUT": "/input", "IUGC_OUTPUT": "/output", "IUGC_CPUS": f"{limits.cpus:g}", "HOME": "/tmp"},
        "log_config": LogConfig(type="json-file", config={"max-size": LOG_MAX_SIZE, "max-file": "1"}),
        "labels": {RUNNER_LABEL: "1", OWNER_LABEL: owner_tag(), **(labels or {})},
    }
    if limits.gpu:
        config["device_requests"] = [DeviceRequest(count=1, capabilities=[["gpu"]])]
    return config


def run_container(engine, config: dict):
    """Create and start a container from :func:`container_config`'s arguments."""
    from docker.errors import APIError

    try:
        container = engine.containers.create(**config)
    except APIError as exc:
        explanation = str(exc.explanation or exc)
        if _image_fault(explanation):
            raise SubmissionError("image_rejected", f"image rejected: the engine cannot create a container from it ({explanation})") from None
        raise RetryableError(f"the engine could not create the container: {explanation}") from None
    try:
        container.start()
    except APIError as exc:
        remove_container(engine, container.id)
        explanation = str(exc.explanation or exc)
        if _image_fault(explanation):
            raise SubmissionError("exit_code", f"the container could not start: {explanation}") from None
        raise RetryableError(f"the engine could not start the container: {explanation}") from None
    return container


def wait_container(container, timeout: float) -> int | None:
    """The exit code, or None when it still runs after ``timeout`` seconds.

    A connection lost before the timeout is the engine's failure (RetryableError), not
    a submission running too long."""
    import requests

    began = time.monotonic()
    try:
        return int(container.wait(timeout=timeout)["StatusCode"])
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
        waited = time.monotonic() - began
        if waited < 0.95 * timeout:
            raise RetryableError(f"lost the connection to the engine after {waited:.0f} s while the container ran: {exc}") from None
        return None


def kill_container(container) -> None:
    from docker.errors import APIError, NotFound

    try:
        container.kill()
    except (NotFound, APIError):
        pass  # already gone or already stopped


def container_state(container) -> dict:
    from docker.errors import DockerException

    try:
        container.reload()
    except DockerException as exc:
        raise RetryableError(f"the engine lost the container's state: {exc}") from None
    return container.attrs["State"]


def container_logs(container, *, stdout: bool = True, stderr: bool = True, max_bytes: int = 8192) -> str:
    """The tail of the container's log, at most ``max_bytes`` (decoded leniently)."""
    from docker.errors import DockerException

    try:
        raw = container.logs(stdout=stdout, stderr=stderr, tail=400)
    except DockerException as exc:
        raise RetryableError(f"the engine could not return the container's log: {exc}") from None
    return raw[-max_bytes:].decode("utf-8", errors="replace")


def remove_container(engine, container_id: str, wait_seconds: float = 60.0) -> None:
    """Force-remove a container and its anonymous volumes; on return it is gone.

    Absent is fine. When another worker is removing it already (two workers
    cleaning up the same crashed one; the engine answers 409), wait for that
    removal to finish rather than fail. Any other engine error, or a removal
    still running after ``wait_seconds``, raises RetryableError.
    """
    from docker.errors import APIError, NotFound

    try:
        engine.api.remove_container(container_id, force=True, v=True)
        return
    except NotFound:
        return
    except APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc.explanation):
            raise RetryableError(f"the engine could not remove container {container_id[:12]}: {exc.explanation or exc}") from None
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            engine.api.inspect_container(container_id)
        except NotFound:
            return
        time.sleep(0.1)
    raise RetryableError(f"container {container_id[:12]} was still being removed after {wait_seconds:g} s; check `docker ps -a`")


def stale_containers(engine) -> list[str]:
    """Ids of runner containers whose worker no longer runs (left by a crash).

    One list call and no per-container inspect: other workers create and
    remove their containers meanwhile, and inspecting one that just went away
    raised ``NotFound`` and crashed this worker's start-up.
    """
    listed = engine.api.containers(all=True, filters={"label": RUNNER_LABEL})
    return [c["Id"] for c in listed if not owner_alive((c.get("Labels") or {}).get(OWNER_LABEL, ""))]


def inspect_image(engine, reference: str) -> dict:
    from docker.errors import ImageNotFound

    try:
        return engine.api.inspect_image(reference)
    except ImageNotFound:
        raise SubmissionError("image_rejected", f"image {reference!r} is not on the engine; load or build it first") from None


def image_ids(engine) -> set[str]:
    """Ids of every image on the engine, from one list call (no per-image
    inspect, which fails on an image another worker removes meanwhile)."""
    return {image["Id"] for image in engine.api.images(all=True)}


def load_image(engine, archive: Path) -> list[str]:
    """``docker load`` an archive; returns the ids of the images it loaded."""
    from docker.errors import APIError

    try:
        with open(archive, "rb") as fh:
            images = engine.images.load(fh)
    except APIError as exc:
        raise SubmissionError("image_rejected", f"the engine could not load the archive: {exc.explanation or exc}") from None
    return [image.id for image in images]


def remove_image(engine, reference: str) -> None:
    from docker.errors import APIError, ImageNotFound

    try:
        engine.api.remove_image(reference, force=True)
    except (ImageNotFound, APIError):
        pass


def import_rootfs(engine, tar_path: Path, repository: str, tag: str, changes: list[str]) -> str:
    """``docker import`` a root filesystem tarball; returns the new image id."""
    from docker.errors import APIError

    try:
        engine.api.import_image_from_file(str(tar_path), repository=repository, tag=tag, changes=changes)
    except APIError as exc:
        raise RetryableError(f"docker import of {tar_path.name} failed: {exc.explanation or exc}") from None
    return inspect_image(engine, f"{repository}:{tag}")["Id"]


def build_image(engine, context: Path, tag: str, *, dockerfile: str = "Dockerfile", buildargs: dict | None = None,
                network: str = "none") -> str:
    """Build ``context``/``dockerfile``; returns the image id.

    ``network`` is the build's network: "none" (the default: offline builds) or
    "default" (a team's build that installs packages from an index).
    """
    from docker.errors import BuildError

    if network not in ("none", "default"):
        raise ValueError(f"network must be 'none' or 'default', got {network!r}")
    try:
        image, _ = engine.images.build(path=str(context), tag=tag, dockerfile=dockerfile, buildargs=buildargs or {},
                                       network_mode=network, rm=True, forcerm=True)
    except BuildError as exc:
        lines = [str(chunk.get("stream") or chunk.get("error") or "").strip() for chunk in exc.build_log]
        tail = "\n".join(line for line in lines if line)[-2000:]
        raise RetryableError(f"building {tag} failed: {exc.msg}\n{tail}") from None
    return image.id


def image_labels(engine, reference: str) -> dict[str, str] | None:
    """The image's labels, or None when the image does not exist."""
    from docker.errors import ImageNotFound

    try:
        return engine.api.inspect_image(reference)["Config"].get("Labels") or {}
    except ImageNotFound:
        return None


# The kernel's own peak of a container's memory (page cache included), where this host
# can read its cgroup: v1 with the cgroupfs or systemd driver, v2 (kernel 5.19+).
CGROUP_MEMORY_PEAK = (
    "/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes",
    "/sys/fs/cgroup/memory/system.slice/docker-{id}.scope/memory.max_usage_in_bytes",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.peak",
    "/sys/fs/cgroup/docker/{id}/memory.peak",
)


def memory_peak_file(container_id: str) -> Path | None:
    """The cgroup file holding a running container's memory peak, or None when this
    host cannot see it (a remote engine, another layout, the container stopped)."""
    for pattern in CGROUP_MEMORY_PEAK:
        path = Path(pattern.format(id=container_id))
        if path.is_file():
            return path
    return None


def memory_usage_bytes(engine, container_id: str, peak_file: Path | None = None) -> int | None:
    """A running container's memory in bytes: the kernel's peak so far from ``peak_file``
    (:func:`memory_peak_file`, read in microseconds), else the engine's statistics (its
    peak where it reports one, else the use now; a call takes up to a second). None
    once the container stopped."""
    import requests
    from docker.errors import APIError, NotFound

    if peak_file is not None:
        try:
            return int(peak_file.read_text())
        except (OSError, ValueError):
            return None
    try:
        stats = engine.api.stats(container_id, stream=False, one_shot=True)
    except (NotFound, APIError, requests.exceptions.RequestException):
        return None
    memory = stats.get("memory_stats") or {}
    value = memory.get("max_usage") or memory.get("usage")
    return int(value) if value else None


def save_image(engine, reference: str, path: Path) -> None:
    """``docker save`` one image to ``path`` (written beside it, then renamed into place)."""
    from docker.errors import APIError, ImageNotFound

    path = Path(path)
    try:
        image = engine.images.get(reference)
    except ImageNotFound:
        raise RetryableError(f"image {reference!r} is not on the engine; build or load it first") from None
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in image.save(named=reference):
                fh.write(chunk)
        os.replace(partial, path)
    except APIError as exc:
        raise RetryableError(f"the engine could not save {reference!r}: {exc.explanation or exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
