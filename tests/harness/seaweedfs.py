"""SeaweedFS as the S3 server: it enforces SigV4, so tampered and expired links really fail."""

import contextlib
import http.client
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .ports import free_port
from .processes import ServerProcess, running, venv_bin

GRPC_OFFSET = 10000  # weed opens a gRPC port at +10000 beside each HTTP port
START_TIMEOUT = 30


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    log_path: Path
    region: str = "us-east-1"

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=5,
                retries={"max_attempts": 1},
            ),
        )

    def storage_options(self, **overrides) -> dict:
        """S3Storage OPTIONS for the `protected` store, as config/settings/base.py builds them."""
        return {
            "bucket_name": self.bucket,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "signature_version": "s3v4",
            "addressing_style": "path",
            "file_overwrite": False,
            "location": "protected",
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": 60,
            **overrides,
        }


def _answers_http(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
    finally:
        conn.close()
    return True


class SeaweedFS:
    """A started `weed server`; `ready()` waits for it once and returns its S3 side."""

    def __init__(self, server: ServerProcess, s3: S3Server) -> None:
        self.server = server
        self.s3 = s3
        self._ready = False

    def ready(self) -> S3Server:
        if not self._ready:
            self._wait_ready()
            self._ready = True
        return self.s3

    def _wait_ready(self) -> None:
        port = int(self.s3.endpoint_url.rsplit(":", 1)[1])
        self.server.wait_ready(
            lambda: _answers_http(port), timeout=START_TIMEOUT, what="the S3 port to answer"
        )
        client = self.s3.client()

        def bucket_created() -> bool:
            # The S3 port answers before the filer is ready; creating a bucket fails
            # until it is.
            try:
                client.create_bucket(Bucket=self.s3.bucket)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                    raise
            return True

        self.server.wait_ready(
            bucket_created, timeout=START_TIMEOUT, what="the bucket to be created"
        )

        def object_stored() -> bool:
            # Writes fail until the volume server has registered with the master. Its
            # first heartbeat often comes before the master's election, and the retry
            # follows 5 s later.
            client.put_object(Bucket=self.s3.bucket, Key="harness-probe", Body=b"ok")
            client.delete_object(Bucket=self.s3.bucket, Key="harness-probe")
            return True

        self.server.wait_ready(
            object_stored, timeout=START_TIMEOUT, what="a first object to be stored"
        )


@contextlib.contextmanager
def seaweedfs_started(workdir: Path, log_path: Path) -> Iterator[SeaweedFS]:
    """Start `weed server` without waiting for it; stop it on the way out."""
    data_dir = workdir / "data"
    # weed puts its unix sockets and glog files in the temp dir: keep them in ours.
    temp_dir = workdir / "tmp"
    data_dir.mkdir(parents=True)
    temp_dir.mkdir()
    access_key, secret_key = f"AK{secrets.token_hex(8).upper()}", secrets.token_hex(20)
    config_path = workdir / "s3.json"
    config_path.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lodestone-tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    s3_port, master_port, volume_port, filer_port = (
        free_port(also_free_at=GRPC_OFFSET) for _ in range(4)
    )
    argv = [
        venv_bin("weed"),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.config={config_path}",
        f"-master.port={master_port}",
        f"-volume.port={volume_port}",
        f"-filer.port={filer_port}",
        # Off: the extra listeners on fixed default ports, the phone-home, and the
        # 10 s grace period that would hold up teardown.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    server = ServerProcess(
        name="SeaweedFS",
        fixture="seaweedfs",
        argv=argv,
        log_path=log_path,
        env={**os.environ, "TMPDIR": str(temp_dir)},
        cwd=workdir,
        # On SIGTERM weed waits for its own gRPC streams to end, which they never do;
        # the data is thrown away anyway.
        stop_timeout=2,
    )
    s3 = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3_port}",
        access_key=access_key,
        secret_key=secret_key,
        bucket="lodestone-protected",
        log_path=log_path,
    )
    with running(server):
        yield SeaweedFS(server, s3)
