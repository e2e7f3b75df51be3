"""Shared helpers of the container tests: the engine, the base image, the hostile images."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HOSTILE = Path(__file__).with_name("hostile")
MODES = ("good", "sleep", "memory", "fork", "network", "write_outside", "flood", "exit_code", "bad_outputs", "all_garbage", "snoop")


def require_engine():
    from iugc.sandbox import docker_engine
    from iugc.sandbox.exceptions import RetryableError

    try:
        return docker_engine.client()
    except RetryableError as exc:
        if os.environ.get("IUGC_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{exc}; IUGC_REQUIRE_DOCKER=1 makes this a failure")
        pytest.skip(f"no Docker engine: {exc}")


def build_hostile_images(engine) -> dict[str, str]:
    from iugc.sandbox.docker_engine import build_image
    from iugc.sandbox.images import build_base

    build_base(progress=False, engine=engine)
    tags = {}
    for mode in MODES:
        tags[mode] = f"iugc-test/hostile-{mode.replace('_', '-')}:latest"
        build_image(engine, HOSTILE, tags[mode], buildargs={"MODE": mode})
    tags["root"] = "iugc-test/hostile-root:latest"
    build_image(engine, HOSTILE, tags["root"], dockerfile="Dockerfile.root")
    return tags
