"""An S3-compatible server (moto) on a free loopback port, for tests of object-storage inputs and
archives. Started as a subprocess and stopped by its own PID, never by name: other test servers
may be running on the same machine.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ACCESS_KEY = "vidsift-test-key"
SECRET_KEY = "vidsift-test-secret"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_endpoint() -> str:
    """A loopback URL on which nothing listens (a port just bound and released): connection refused."""
    return f"http://127.0.0.1:{_free_port()}"


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    log_path: Path | None = None  # the server's request log (one line per request), when asked for
    buckets: set[str] = field(default_factory=set)

    @property
    def storage_options(self) -> dict[str, str]:
        """LanceDB / object_store option names (what `--storage-option` takes and lancedb.connect reads)."""
        return {"endpoint": self.endpoint, "allow_http": "true", "region": REGION,
                "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}

    @property
    def env(self) -> dict[str, str]:
        """The same configuration as environment variables, for subprocesses (or monkeypatching)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    @functools.cached_property
    def _client(self):
        import boto3  # moto depends on boto3; imported lazily so that importing this module is cheap

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it exists); returns ``s3://name``."""
        if name not in self.buckets:
            with contextlib.suppress(self._client.exceptions.BucketAlreadyOwnedByYou):
                self._client.create_bucket(Bucket=name)
            self.buckets.add(name)
        return f"s3://{name}"

    def put(self, uri: str, data: bytes | str | os.PathLike) -> str:
        """Upload bytes, or the bytes of a local file, to ``s3://bucket/key`` (bucket created on demand)."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        self.make_bucket(bucket)
        body = data if isinstance(data, bytes) else Path(data).read_bytes()
        self._client.put_object(Bucket=bucket, Key=key, Body=body)
        return uri

    def requests_logged(self) -> list[str]:
        """Request lines logged so far ("GET /bucket?list-type=2... HTTP/1.1"), to count calls."""
        text = self.log_path.read_text(errors="replace") if self.log_path else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # werkzeug colours 4xx/5xx lines
        return [line.split('"')[1] for line in text.splitlines() if line.count('"') >= 2]

    def delete(self, uri: str) -> None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        self._client.delete_object(Bucket=bucket, Key=key)

    @contextlib.contextmanager
    def refusing_unknown_credentials(self) -> Iterator[None]:
        """Inside the block the server checks signatures against its (empty) IAM user list, so every
        request is refused as a real S3 refuses a wrong key (403 InvalidAccessKeyId). moto accepts
        any key by default; this uses its documented /moto-api/reset-auth switch. Server-wide:
        only for tests that run one at a time against the session server."""
        self._reset_auth("0")
        try:
            yield
        finally:
            self._reset_auth("inf")

    def _reset_auth(self, count: str) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=count.encode(),
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            json.loads(response.read())


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


def _stop(process: subprocess.Popen, timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def s3_server(buckets: tuple[str, ...] = (), startup_timeout: float = 30.0,
              log_path: str | os.PathLike | None = None) -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on 127.0.0.1 and a free port, wait until it answers, create
    ``buckets``, and stop it (by PID: terminate, then kill) when the block ends. Retries once with
    another port if the chosen one was taken between choosing and binding."""
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}  # accept any key
    last_error = ""
    for _attempt in range(3):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if log_path:
            log.close()
        try:
            deadline = time.monotonic() + startup_timeout
            while process.poll() is None and time.monotonic() < deadline and not _answers(endpoint):
                time.sleep(0.1)
            if process.poll() is not None or not _answers(endpoint):
                last_error = f"moto server on {endpoint} exited with {process.poll()} or did not answer"
                continue
            server = S3Server(endpoint=endpoint, process=process, log_path=Path(log_path) if log_path else None)
            for name in buckets:
                server.make_bucket(name)
            yield server
            return
        finally:
            _stop(process)
    raise RuntimeError(last_error)
