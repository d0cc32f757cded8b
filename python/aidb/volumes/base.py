"""What every volume offers: a complete listing in key order, the state of one
object, and its content, read in chunks under a size limit.

A pipeline's scan compares each listed object's fingerprint with what it saw
last time, and deletes the destination rows of objects missing from a
*complete* listing. So a listing that fails part-way must raise (VolumeError),
never end early: a partial listing taken for a complete one would delete
rows of objects that still exist.
"""

import json
from dataclasses import dataclass
from datetime import datetime

from ..errors import AidbError, PIPELINE_TEMPORARY, RECORD_PERMANENT

DEFAULT_MAX_OBJECT_SIZE = 64 * 1024 * 1024      # bytes; the "max_object_size" option
MAX_MAX_OBJECT_SIZE = 1024 * 1024 * 1024         # PostgreSQL's limit for one value
READ_CHUNK = 1024 * 1024


class VolumeError(AidbError):
    """The volume cannot be listed or read as a whole right now (unreachable,
    listing broke off). PipelinePermanent when retrying cannot help (access
    denied, no such bucket or directory)."""

    category = PIPELINE_TEMPORARY


class ObjectTooLarge(AidbError):
    """One object exceeds the volume's max_object_size: recorded and skipped."""

    category = RECORD_PERMANENT


class ObjectMissing(AidbError):
    """The object was listed but is gone now: its destination rows go too."""

    category = RECORD_PERMANENT


@dataclass(frozen=True)
class VolumeObject:
    key: str                    # relative to the volume's root or prefix, '/' separated
    size: int                   # bytes
    last_modified: datetime     # timezone-aware, UTC
    etag: str

    @property
    def fingerprint(self):
        """Changes whenever the object does (what a scan compares)."""
        return f"{self.etag}@{self.last_modified.isoformat()}"


class Volume:
    """A listable set of objects. Subclasses implement `list`, `stat` and
    `_chunks`; `read` enforces the size limit for all of them."""

    kind = "volume"

    def __init__(self, name, max_object_size):
        self.name = name
        self.max_object_size = max_object_size

    def list(self):
        """Every object, in key order (code point order, which is also S3's
        UTF-8 byte order); raises VolumeError rather than stop early."""
        raise NotImplementedError

    def stat(self, key):
        """The object `key` as it is now, or None when it is gone."""
        raise NotImplementedError

    def _chunks(self, key):
        """A generator: first the size as known before reading (or None), then
        the content in byte chunks. It opens what it reads itself, so that
        read() closing it always frees what it holds."""
        raise NotImplementedError

    def read(self, key):
        """The content of `key`, streamed in chunks, never more than
        max_object_size bytes (ObjectTooLarge); ObjectMissing when it is gone."""
        chunks = self._chunks(key)
        try:
            size = next(chunks)
            if size is not None and size > self.max_object_size:
                raise self.too_large(key, size)
            content = bytearray()
            for chunk in chunks:
                content += chunk
                if len(content) > self.max_object_size:   # it grew since it was listed
                    raise self.too_large(key, f"at least {len(content)}")
            return bytes(content)
        finally:
            chunks.close()

    def describe(self, key):
        return f'volume "{self.name}": object {json.dumps(key)}'

    def too_large(self, key, size):
        return ObjectTooLarge(f"{self.describe(key)} is too large ({size} bytes; the limit is "
                              f"{self.max_object_size} bytes)",
                              hint='Raise the volume\'s "max_object_size" option (recreate the '
                                   "volume), or keep larger objects out of it.")

    def missing(self, key):
        return ObjectMissing(f"{self.describe(key)} no longer exists")
