"""Volumes of the objects under a prefix of an S3 bucket (s3://bucket/prefix),
on AWS or any S3-compatible server (MinIO, Ceph, moto: `endpoint_url`).

Requests are signed with the volume's credentials. A volume created without
credentials sends unsigned (anonymous) requests, which only public buckets
answer: the server's own AWS credentials (environment, instance role) are
never used on a user's behalf.

boto3 retries throttling and 5xx a few times itself; what still fails
becomes a VolumeError whose category says whether to retry later
(unreachable, throttled, 5xx) or block until fixed (access denied, no such
bucket). Messages name the volume and bucket, never the secret.
"""

import json

from ..errors import INSUFFICIENT_PRIVILEGE, PIPELINE_PERMANENT, PIPELINE_TEMPORARY, \
    UNDEFINED_OBJECT
from ..redact import redact, remember_secret
from .base import DEFAULT_MAX_OBJECT_SIZE, READ_CHUNK, Volume, VolumeError, VolumeObject

DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = 10        # seconds
READ_TIMEOUT = 60
MAX_ATTEMPTS = 3            # boto3's own retries of throttling, 5xx and dropped connections

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
           "InvalidSecurity", "403"}
_WRONG_REGION = {"PermanentRedirect", "AuthorizationHeaderMalformed",
                 "IllegalLocationConstraintException", "301"}
_BUSY = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "TooManyRequests",
         "ServiceUnavailable", "InternalError", "429"}

_clients = {}               # definition -> boto3 client: building one takes ~50 ms
_MAX_CLIENTS = 16


class S3Volume(Volume):
    kind = "s3"

    def __init__(self, bucket, prefix, options, credentials, name="(unnamed)"):
        super().__init__(name, options.get("max_object_size", DEFAULT_MAX_OBJECT_SIZE))
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = options.get("endpoint_url")
        self.signed = bool(credentials)
        for secret in ("secret_access_key", "session_token"):
            remember_secret(credentials.get(secret))
        self.client = _client(options, credentials)

    def list(self):
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix):]
                    if key and not key.endswith("/"):   # "folder" markers hold no content
                        yield _object(key, item["Size"], item["LastModified"], item["ETag"])
        except _boto_errors() as exc:
            raise self._error(exc, "list") from None

    def stat(self, key):
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except _boto_errors() as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, f"read {json.dumps(key)} in") from None
        return _object(key, head["ContentLength"], head["LastModified"], head["ETag"])

    def _chunks(self, key):
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except _boto_errors() as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise self.missing(key) from None
            raise self._error(exc, f"read {json.dumps(key)} in") from None
        body = response["Body"]
        try:
            yield response["ContentLength"]
            yield from body.iter_chunks(READ_CHUNK)
        except _boto_errors() as exc:
            raise self._error(exc, f"read {json.dumps(key)} in") from None
        finally:
            body.close()

    # --- errors ----------------------------------------------------------------------

    def _error(self, exc, action):
        """A VolumeError for a failed request, with the category that decides
        whether the pipeline retries later or blocks until fixed."""
        from botocore.exceptions import ClientError
        where = f'volume "{self.name}": '
        if not isinstance(exc, ClientError):
            return self._transport_error(exc, where, action)
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        said = _server_message(exc)
        if code in _DENIED or status == 403:
            return VolumeError(f'{where}access to bucket "{self.bucket}" was denied ({code})',
                               category=PIPELINE_PERMANENT, sqlstate=INSUFFICIENT_PRIVILEGE,
                               detail=said, hint=self._credentials_hint())
        if code in ("NoSuchBucket",) or (status == 404 and action == "list"):
            return VolumeError(f'{where}bucket "{self.bucket}" does not exist'
                               f"{self._at_endpoint()}",
                               category=PIPELINE_PERMANENT, sqlstate=UNDEFINED_OBJECT,
                               hint="Check the bucket in the volume's URI, and endpoint_url.")
        if code in _WRONG_REGION:
            return VolumeError(f'{where}bucket "{self.bucket}" is in another region ({code})',
                               category=PIPELINE_PERMANENT, detail=said,
                               hint='Recreate the volume with the bucket\'s "region" option.')
        temporary = code in _BUSY or status >= 500
        return VolumeError(f'{where}could not {action} bucket "{self.bucket}": '
                           f"S3 answered {status or ''} {code}".rstrip(),
                           category=PIPELINE_TEMPORARY if temporary else PIPELINE_PERMANENT,
                           detail=said)

    def _transport_error(self, exc, where, action):
        from botocore.exceptions import ChecksumError, ConnectionError, HTTPClientError, \
            IncompleteReadError
        if isinstance(exc, (ConnectionError, HTTPClientError, IncompleteReadError, ChecksumError)):
            return VolumeError(f"{where}could not {action} bucket \"{self.bucket}\": "
                               f"S3{self._at_endpoint()} is unreachable or broke off "
                               f"({type(exc).__name__})",
                               category=PIPELINE_TEMPORARY, detail=redact(exc))
        return VolumeError(f'{where}could not {action} bucket "{self.bucket}": {redact(exc)}',
                           category=PIPELINE_PERMANENT)

    def _credentials_hint(self):
        if not self.signed:
            return ("The volume has no credentials, so its requests are anonymous, which only "
                    "public buckets allow. Recreate it with access_key_id and "
                    "secret_access_key in its options.")
        return ("Check the volume's access_key_id and secret_access_key (and session_token), and "
                "that they may list and read the bucket; to replace them, recreate the volume.")

    def _at_endpoint(self):
        return f" at {self.endpoint_url}" if self.endpoint_url else ""


def _boto_errors():
    from botocore.exceptions import BotoCoreError, ClientError
    return (BotoCoreError, ClientError)


def _code(exc):
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _server_message(exc):
    """What the server said, briefly (a hostile endpoint could say a lot)."""
    message = exc.response.get("Error", {}).get("Message")
    return redact(message)[:300] if message else None   # cut after: never across a key


def _object(key, size, last_modified, etag):
    from datetime import timezone
    return VolumeObject(key, int(size), last_modified.astimezone(timezone.utc), etag.strip('"'))


def _client(options, credentials):
    """A boto3 S3 client for these settings, shared by the volumes that have them."""
    definition = json.dumps([options.get("endpoint_url"), options.get("region"),
                             options.get("force_path_style", False), credentials], sort_keys=True)
    client = _clients.get(definition)
    if client is None:
        if len(_clients) >= _MAX_CLIENTS:
            _clients.clear()
        client = _clients[definition] = _new_client(options, credentials)
    return client


def _new_client(options, credentials):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    config = Config(
        signature_version=None if credentials else UNSIGNED,
        s3={"addressing_style": "path" if options.get("force_path_style") else "auto"},
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
        # Checksums only where S3 requires them: many S3-compatible servers
        # know nothing of the newer ones.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required")
    session = boto3.session.Session(
        aws_access_key_id=credentials.get("access_key_id"),
        aws_secret_access_key=credentials.get("secret_access_key"),
        aws_session_token=credentials.get("session_token"),
        region_name=options.get("region", DEFAULT_REGION))
    return session.client("s3", endpoint_url=options.get("endpoint_url"), config=config)
