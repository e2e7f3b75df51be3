"""The client side of API v1 used by ``iugc submit``: save an image, upload it as a
streamed multipart body with a progress bar, follow its status."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import requests

from iugc.common.text import quoted
from iugc.submissions.exceptions import ServiceError

CHUNK = 1 << 20


class ClientError(ServiceError):
    """The server answered with an error (its message) or could not be reached;
    ``retry_after``: the seconds a 429 said to wait (None otherwise)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _check(response: requests.Response) -> dict | list:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        wait = response.headers.get("Retry-After", "")
        raise ClientError(f"{response.status_code}: {body.get('error') or response.reason}",
                          retry_after=float(wait) if response.status_code == 429 and wait.isdigit() else None)
    return body


def save_image(reference: str, dest: Path, progress: bool = True) -> Path:
    """``docker save`` an image reference to ``dest`` (streamed)."""
    from tqdm import tqdm

    from iugc.sandbox import docker_engine
    from iugc.sandbox.exceptions import RetryableError

    try:
        engine = docker_engine.client()
        image = engine.images.get(reference)
    except RetryableError as exc:
        raise ClientError(str(exc)) from None
    except Exception as exc:  # docker.errors.ImageNotFound / APIError
        raise ClientError(f"image {reference!r} is not on the local engine ({exc})") from None
    with open(dest, "wb") as out, tqdm(desc="docker save", unit="B", unit_scale=True, disable=not progress) as bar:
        for chunk in image.save(chunk_size=CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
    return dest


class MultipartFile:
    """A ``multipart/form-data`` body with one file field, read from disk chunk by chunk.

    Its ``len`` lets requests send a Content-Length (not chunked) without reading it.
    """

    def __init__(self, path: Path, field: str = "image", progress: bool = True):
        self.path, self.progress = path, progress
        self.boundary = uuid.uuid4().hex
        self.head = (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{path.name}\"\r\n"
                     "Content-Type: application/x-tar\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = path.stat().st_size

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        from tqdm import tqdm

        yield self.head
        with open(self.path, "rb") as fh, tqdm(total=self.size, desc="upload", unit="B", unit_scale=True, disable=not self.progress) as bar:
            while chunk := fh.read(CHUNK):
                bar.update(len(chunk))
                yield chunk
        yield self.tail


class Client:
    def __init__(self, server: str, token: str, timeout: float = 60.0):
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"{quoted(server)} is not the address of a service; give its URL, e.g. "
                              "--server https://iugc.example.org (or set IUGC_SERVER)")
        self.server, self.timeout = server.rstrip("/"), timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kw) -> dict:
        try:
            return _check(self.session.request(method, f"{self.server}/api/v1{path}", timeout=self.timeout, **kw))
        except requests.ConnectionError:
            raise ClientError(f"cannot reach {self.server}: is `iugc serve` running there?") from None

    def check_phase(self, phase: str) -> None:
        """Refuse before anything is saved or sent when the service would refuse an upload
        to ``phase`` for want of a worker that can evaluate it (ClientError)."""
        for row in self._call("GET", "/phases"):
            if row["slug"] == phase and row.get("cannot_evaluate"):
                raise ClientError(row["cannot_evaluate"])

    def upload(self, phase: str, archive: Path, progress: bool = True) -> dict:
        body = MultipartFile(archive, progress=progress)
        return self._call("POST", f"/phases/{phase}/submissions", data=body, headers={"Content-Type": body.content_type})

    def status(self, submission_id: int) -> dict:
        return self._call("GET", f"/submissions/{submission_id}")

    def wait(self, submission_id: int, poll: float = 2.0, timeout: float | None = None) -> dict:
        """Follow a submission until it is done; a 429 (the token's calls are over their
        rate, say by another script with the same token) waits as long as it says, then
        follows on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = "queued"
        while True:
            pause = poll
            try:
                status = self.status(submission_id)
                if status["done"]:
                    return status
                last = status["status"]
            except ClientError as exc:
                if exc.retry_after is None:
                    raise
                pause = max(poll, exc.retry_after)
            if deadline is not None and time.monotonic() + pause > deadline:
                raise ClientError(f"submission {submission_id} is still {last} after {timeout:.0f} s")
            time.sleep(pause)


def default_server() -> str:
    return os.environ.get("IUGC_SERVER") or "http://127.0.0.1:8000"
