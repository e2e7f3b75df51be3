"""A submission that misbehaves in the way $HOSTILE_MODE names (tests/sandbox/test_container.py).

Each probe prints one line per attempt, "<probe> <target>: blocked|OPEN (<detail>)", so
the tests read what the sandbox allowed. "good" writes valid (all-background) outputs.
"""
import json
import os
import socket
import sys
import time
import zlib
import struct

import numpy as np

INPUT, OUTPUT = "/input", "/output"
PROBE_PORT = 47123  # the tests listen on this port on the host


def png(array):
    """A minimal grey 8-bit PNG encoder (the base image has Pillow too, but keep it explicit)."""
    h, w = array.shape
    raw = b"".join(b"\x00" + array[i].astype(np.uint8).tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def cases():
    return json.load(open(os.path.join(INPUT, "cases.json")))["cases"]


def good_outputs(skip=()):
    probs = {}
    for case in cases():
        if case["case_id"] in skip:
            continue
        with open(os.path.join(OUTPUT, case["case_id"] + ".png"), "wb") as fh:
            fh.write(png(np.zeros((case["height"], case["width"]), np.uint8)))
        probs[case["case_id"]] = {"p_standard_plane": 0.5}
    with open(os.path.join(OUTPUT, "predictions.json"), "w") as fh:
        json.dump(probs, fh)


def probe_network():
    try:
        socket.getaddrinfo("deb.debian.org", 80)
        print("network dns: OPEN", flush=True)
    except OSError as exc:
        print(f"network dns: blocked ({exc})", flush=True)
    gateway = os.environ.get("PROBE_GATEWAY", "172.17.0.1")
    for host, port in ((gateway, PROBE_PORT), ("1.1.1.1", 53), ("8.8.8.8", 443)):
        try:
            socket.create_connection((host, port), timeout=3).close()
            print(f"network {host}:{port}: OPEN", flush=True)
        except OSError as exc:
            print(f"network {host}:{port}: blocked ({exc})", flush=True)


def probe_writes():
    for path in ("/evil", "/etc/evil", "/input/evil", "/input/images/evil.png", "/app/evil", "/var/tmp/evil"):
        try:
            with open(path, "w") as fh:
                fh.write("x")
            print(f"write {path}: OPEN", flush=True)
        except OSError as exc:
            print(f"write {path}: blocked ({exc.strerror})", flush=True)


def is_label_map(path):
    """A PNG whose values are within 0/1/2 with both structures: what a truth mask looks like."""
    try:
        from PIL import Image

        values = np.unique(np.asarray(Image.open(path)))
    except Exception:
        return False
    return set(values.tolist()) <= {0, 1, 2} and {1, 2} <= set(values.tolist())


def snoop():
    found, looked = [], 0
    for root, dirs, files in os.walk("/", onerror=lambda e: None):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev")]
        for name in files:
            lower = name.lower()
            if lower.endswith((".png", ".mha", ".nii", ".nii.gz", ".nrrd")):
                looked += 1
                path = os.path.join(root, name)
                if lower.endswith(".png") and is_label_map(path) or not lower.endswith(".png"):
                    found.append(path)
    secrets = [k for k in os.environ if any(w in k.lower() for w in ("mask", "truth", "label", "gt"))]
    print(f"snoop: looked at {looked} image files, found {len(found)} label maps: {found[:5]}; env hints {secrets}", flush=True)


def main():
    mode = os.environ.get("HOSTILE_MODE", "good")
    if mode == "good":
        good_outputs()
    elif mode == "sleep":
        time.sleep(10**6)
    elif mode == "memory":
        hog = []
        while True:
            hog.append(bytearray(50 << 20))
    elif mode == "fork":
        children = 0
        failures = 0
        while children + failures < 100000:
            try:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
                children += 1
            except OSError:
                failures += 1
                if failures == 1:
                    print(f"fork: refused after {children} children", flush=True)
        time.sleep(600)
    elif mode == "network":
        probe_network()
        good_outputs()
    elif mode == "write_outside":
        probe_writes()
        good_outputs()
    elif mode == "flood":
        with open(os.path.join(OUTPUT, "junk.bin"), "wb") as fh:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
    elif mode == "exit_code":
        print("loading the model...", flush=True)
        print("boom: model file missing", file=sys.stderr, flush=True)
        sys.exit(3)
    elif mode == "bad_outputs":
        listing = cases()
        ids = [c["case_id"] for c in listing]
        good_outputs(skip=ids[:5])
        c0, c1, c2, c3 = listing[:4]
        with open(os.path.join(OUTPUT, c0["case_id"] + ".png"), "wb") as fh:        # wrong size
            fh.write(png(np.zeros((c0["height"] + 1, c0["width"]), np.uint8)))
        with open(os.path.join(OUTPUT, c1["case_id"] + ".png"), "wb") as fh:        # garbage bytes
            fh.write(os.urandom(2048))
        with open(os.path.join(OUTPUT, c2["case_id"] + ".png"), "wb") as fh:        # labels outside 0/1/2
            fh.write(png(np.full((c2["height"], c2["width"]), 7, np.uint8)))
        os.symlink(os.path.join(INPUT, c3["image"]), os.path.join(OUTPUT, c3["case_id"] + ".png"))  # a link
        # ids[4]: no output at all
        probs = json.load(open(os.path.join(OUTPUT, "predictions.json")))
        probs[ids[5]] = {"p_standard_plane": float("nan")}
        probs[ids[6]] = {"p_standard_plane": 1.5}
        probs["../../etc/passwd"] = {"p_standard_plane": 0.5}
        with open(os.path.join(OUTPUT, "predictions.json"), "w") as fh:
            fh.write(json.dumps(probs))  # NaN is written as the bare token NaN
        os.symlink("/etc/passwd", os.path.join(OUTPUT, "passwd"))
    elif mode == "all_garbage":
        for case in cases():
            with open(os.path.join(OUTPUT, case["case_id"] + ".png"), "wb") as fh:
                fh.write(b"not a png")
    elif mode == "snoop":
        snoop()
        good_outputs()
    else:
        sys.exit(f"unknown HOSTILE_MODE {mode!r}")


if __name__ == "__main__":
    main()
