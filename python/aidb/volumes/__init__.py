"""Volumes: the files of a local directory (file:///dir) or the objects of an
S3 bucket (s3://bucket/prefix), as pipeline sources.

- parse_volume_uri: what a URI names, or a clear InvalidInput;
- validate_volume: checks a volume's options (declared in FILE_OPTIONS and
  S3_OPTIONS, checked by aidb.options) and splits the secrets off them
  (they are stored apart, readable only by the volume's owner);
- open_volume: a ready Volume (base.py) for a stored definition.

The S3 client (boto3) is imported only when an S3 volume is opened.
"""

import json
import os
import re
from urllib.parse import unquote, urlsplit

from ..errors import InvalidInput
from ..options import Option, check_options
from .base import DEFAULT_MAX_OBJECT_SIZE, MAX_MAX_OBJECT_SIZE

CREDENTIAL_KEYS = ("access_key_id", "secret_access_key", "session_token")
_MAX_OBJECT_SIZE = Option("max_object_size", "integer",
                          "Largest object read, in bytes; larger ones are recorded and skipped.",
                          default=DEFAULT_MAX_OBJECT_SIZE, minimum=1, maximum=MAX_MAX_OBJECT_SIZE)
FILE_OPTIONS = (_MAX_OBJECT_SIZE,)
S3_OPTIONS = (
    Option("endpoint_url", "url", "An S3-compatible server's URL (default: AWS)."),
    # The region becomes part of AWS's host name: nothing else may hide in it.
    Option("region", "string", "The bucket's region.",
           pattern=r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?",
           pattern_says='a region name such as "eu-west-1"'),
    Option("force_path_style", "boolean", "Address the bucket in the path, not the host name."),
    _MAX_OBJECT_SIZE,
    Option("access_key_id", "string", "S3 access key id (stored apart, owner only).", secret=True),
    Option("secret_access_key", "string", "S3 secret key (stored apart, owner only).", secret=True),
    Option("session_token", "string", "S3 session token (stored apart, owner only).", secret=True),
)

_EXAMPLES = "For example file:///srv/documents or s3://my-bucket/some/prefix."
_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}$")     # what boto3 accepts for a bucket name


def parse_volume_uri(uri, name=None):
    """('file', absolute path) or ('s3', bucket, prefix); a non-empty prefix
    ends with "/", so that keys are relative to that "folder"."""
    invalid = _invalid_for(name)
    if not isinstance(uri, str) or not uri.strip():
        raise invalid("the URI is empty", hint=_EXAMPLES)
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise invalid(f"invalid URI {json.dumps(uri)}", hint=_EXAMPLES) from None
    if "@" in parts.netloc:
        # Not shown: what precedes the @ may well be a password.
        raise invalid("the URI must not contain user info (user:password@)",
                      hint="Put S3 credentials in the options, never in the URI.")
    scheme = parts.scheme.lower()
    if scheme not in ("file", "s3"):
        raise invalid(f'unknown URI scheme "{parts.scheme}" in {json.dumps(uri)}',
                      hint="Volumes are file:// (a local directory) or s3:// (a bucket). " + _EXAMPLES)
    if parts.query or parts.fragment or "\0" in uri:
        raise invalid(f'the URI {json.dumps(uri)} must not contain "?", "#" or NUL')
    if scheme == "file":
        return ("file", _file_path(uri, parts, invalid))
    return ("s3", *_bucket_and_prefix(uri, parts, invalid))


def _file_path(uri, parts, invalid):
    if parts.netloc not in ("", "localhost"):
        raise invalid(f'file URI {json.dumps(uri)} names the host "{parts.netloc}"',
                      hint="Write an absolute path after file:// "
                           "(three slashes: file:///srv/documents).")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise invalid(f"file URI {json.dumps(uri)} has a relative path",
                      hint="Write an absolute path: file:///srv/documents.")
    _refuse_dot_dot(path, uri, invalid)
    return os.path.normpath(path)


def _bucket_and_prefix(uri, parts, invalid):
    bucket = parts.netloc
    if not bucket:
        raise invalid(f"S3 URI {json.dumps(uri)} names no bucket", hint="Write s3://bucket/prefix.")
    if not _BUCKET.match(bucket):
        raise invalid(f'invalid bucket name "{bucket}" in {json.dumps(uri)}',
                      hint="Bucket names are letters, digits, dots, hyphens and underscores; "
                           'an endpoint or port goes in the "endpoint_url" option.')
    prefix = parts.path.lstrip("/")
    _refuse_dot_dot(prefix, uri, invalid)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def _refuse_dot_dot(path, uri, invalid):
    if ".." in path.split("/"):
        raise invalid(f'the URI {json.dumps(uri)} contains ".."',
                      hint="Name the directory or prefix itself, without ..")


def validate_volume(name, uri, options):
    """(public options, credentials) of a volume about to be created: the
    options normalised, with the secrets moved out of them."""
    kind = parse_volume_uri(uri, name)[0]
    declared = FILE_OPTIONS if kind == "file" else S3_OPTIONS
    if kind == "file" and isinstance(options, dict) and set(options) & set(CREDENTIAL_KEYS):
        raise _invalid_for(name)("file volumes take no credentials",
                                 hint="access_key_id and secret_access_key are for s3:// volumes.")
    checked = check_options(f'volume "{name}"', options, declared, scope=f"for {kind} volumes",
                            keep_absent=False)
    credentials = {key: checked.pop(key) for key in CREDENTIAL_KEYS if key in checked}
    if credentials and not {"access_key_id", "secret_access_key"} <= set(credentials):
        raise _invalid_for(name)("access_key_id and secret_access_key go together",
                                 hint="Give both, or neither for a public bucket "
                                      "(anonymous requests).")
    return checked, credentials


def open_volume(uri, options, credentials, allowed_roots, name="(unnamed)"):
    """A ready Volume for a stored definition; `allowed_roots` are the
    directories of aidb.allowed_local_paths, checked again at each opening."""
    parsed = parse_volume_uri(uri, name)
    if parsed[0] == "file":
        from .file_volume import FileVolume
        return FileVolume(parsed[1], options, allowed_roots, name=name)
    from .s3_volume import S3Volume
    return S3Volume(parsed[1], parsed[2], options, credentials or {}, name=name)


def _invalid_for(name):
    prefix = f'volume "{name}": ' if name is not None else ""
    return lambda message, hint=None: InvalidInput(prefix + message, hint=hint)
