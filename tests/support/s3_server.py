"""An S3-compatible server on 127.0.0.1 for the volume tests: moto in server
mode, in its own process, that checks signatures and permissions like S3.

Run as a script it serves until terminated and writes its port to
--port-file. The `s3_server` session fixture starts it, creates an IAM user
allowed everything on S3 (its key is `S3Server.credentials`), then turns
authentication on: from then on a wrong secret or an unknown key is refused
with 403, as by AWS.

    from tests.support.s3_server import s3_server   # the fixture, in a test module
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request

import pytest

REGION = "us-east-1"
_ALLOW_S3 = json.dumps({"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


class S3Server:
    """Control handle of the running server."""

    def __init__(self, url):
        self.url = url
        self.credentials = None

    def client(self, credentials=None):
        """A boto3 S3 client for the tests' own setup (its key by default)."""
        import boto3
        creds = credentials or self.credentials
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=creds["access_key_id"],
                            aws_secret_access_key=creds["secret_access_key"])

    def create_user(self):
        """An IAM user that may do anything on S3; its key as volume credentials."""
        import boto3
        iam = boto3.client("iam", endpoint_url=self.url, region_name=REGION,
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="aidb-test")
        iam.put_user_policy(UserName="aidb-test", PolicyName="s3", PolicyDocument=_ALLOW_S3)
        key = iam.create_access_key(UserName="aidb-test")["AccessKey"]
        self.credentials = {"access_key_id": key["AccessKeyId"],
                            "secret_access_key": key["SecretAccessKey"]}

    def set_authentication(self, enabled):
        """Whether requests must be signed by a known key (moto's switch)."""
        count = b"0" if enabled else b"inf"
        request = urllib.request.Request(self.url + "/moto-api/reset-auth", data=count, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    @contextlib.contextmanager
    def anonymous_allowed(self):
        """Authentication off for the block: moto has no public buckets."""
        self.set_authentication(False)
        try:
            yield
        finally:
            self.set_authentication(True)


@pytest.fixture(scope="session")
def s3_server():
    from tests.support.polling import wait_for   # here: this file also runs as a script
    port_file = tempfile.mktemp(prefix="aidb-s3-server-")
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--port-file", port_file],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(),
                 timeout=60, message="the S3 server's port file")
        server = S3Server(f"http://127.0.0.1:{int(open(port_file).read())}")
        server.create_user()
        server.set_authentication(True)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(port_file)


def main():
    parser = argparse.ArgumentParser(description="moto's S3 server on 127.0.0.1")
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    with open(args.port_file + ".tmp", "w") as out:
        out.write(str(port))
    os.rename(args.port_file + ".tmp", args.port_file)      # never seen half-written
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
