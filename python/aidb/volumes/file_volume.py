"""Volumes of the files below a local directory (file:///dir).

The server reads these files with its own OS rights, so what a volume may
open is bounded twice (docs/architecture.md, "Security model"):

- its root must lie inside a directory that a superuser listed in
  aidb.allowed_local_paths, compared after resolving symbolic links; checked
  each time the volume is opened, so tightening the setting takes effect;
- every file is opened by its resolved path, which must lie inside the
  root; after opening, the path of the open descriptor is checked again, so
  a link swapped in meanwhile cannot lead out either.

Symbolic links inside the root are followed only to regular files inside it;
links that lead out, and names that are not valid UTF-8 (keys are SQL text),
are left out of listings and named in `skipped`. Linked directories are not
descended into (no loops, no duplicate keys).
"""

import errno
import os
import pwd
import stat
from datetime import datetime, timezone

from .. import egress
from ..errors import AidbError, InvalidInput, INSUFFICIENT_PRIVILEGE, PIPELINE_PERMANENT, \
    RECORD_PERMANENT
from .base import DEFAULT_MAX_OBJECT_SIZE, READ_CHUNK, Volume, VolumeError, VolumeObject


def parse_allowed_roots(value):
    """The directories of the aidb.allowed_local_paths setting's value."""
    return [root.strip() for root in (value or "").split(",") if root.strip()]


class FileVolume(Volume):
    kind = "file"

    def __init__(self, root, options, allowed_roots, name="(unnamed)"):
        super().__init__(name, options.get("max_object_size", DEFAULT_MAX_OBJECT_SIZE))
        self.root = self._checked_root(root, allowed_roots)
        self.skipped = []           # (path, reason) left out of the last listing

    def _checked_root(self, root, allowed_roots):
        if not egress.path_allowed(root, ",".join(allowed_roots)):
            setting = egress.PATHS_SETTING
            shown = (f'"{",".join(allowed_roots)}"' if allowed_roots
                     else "empty: no directory is allowed")
            raise AidbError(f'volume "{self.name}": directory "{root}" is not allowed by {setting}',
                            sqlstate=INSUFFICIENT_PRIVILEGE, category=PIPELINE_PERMANENT,
                            detail=f"{setting} is {shown}.",
                            hint=f"A superuser can add the directory (or one above it) to {setting}: "
                                 f"ALTER SYSTEM SET {setting} = '/path/one,/path/two'; "
                                 "SELECT pg_reload_conf();")
        resolved = os.path.realpath(root)
        if not os.path.isdir(resolved):
            raise VolumeError(f'volume "{self.name}": directory "{root}" does not exist',
                              category=PIPELINE_PERMANENT,
                              hint="Create it (readable by the server's OS user "
                                   f"{_server_os_user()}), or fix the volume's URI.")
        return resolved

    # --- listing ---------------------------------------------------------------------

    def list(self):
        self.skipped = []
        try:
            objects = sorted(self._walk(), key=lambda o: o.key)
        except OSError as exc:
            raise VolumeError(f'volume "{self.name}": listing failed at "{exc.filename}": '
                              f"{exc.strerror}",
                              hint=f"Every directory below {self.root} must be readable by the "
                                   f"server's OS user {_server_os_user()}.") from None
        return iter(objects)

    def _walk(self):
        """Every object below the root, in no particular order."""
        pending = [""]
        while pending:
            prefix = pending.pop()
            with os.scandir(os.path.join(self.root, prefix)) as entries:
                for entry in entries:
                    key = prefix + entry.name
                    if not _is_utf8(key):
                        self.skipped.append((entry.path, "the name is not valid UTF-8"))
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(key + "/")
                    else:
                        found = self._object(entry.path, key)
                        if found is not None:
                            yield found

    def stat(self, key):
        path = self._path(key)
        try:
            return self._object(path, key)
        except OSError as exc:
            raise self._unreadable(key, exc) from None

    def _object(self, path, key):
        """The regular file at `path` as a VolumeObject; None when there is
        none, or when it is a link that leads out of the root."""
        resolved = self._resolve(path)
        if resolved is None:
            self.skipped.append((path, "a symbolic link that leads outside the volume"))
            return None
        try:
            info = os.stat(resolved)
        except (FileNotFoundError, NotADirectoryError):
            return None             # gone since the directory was read
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self.skipped.append((path, "a loop of symbolic links"))
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return VolumeObject(key, info.st_size, _utc(info.st_mtime_ns),
                            f"{info.st_size}-{info.st_mtime_ns}")

    # --- reading ---------------------------------------------------------------------

    def _chunks(self, key):
        path = self._path(key)
        resolved = self._resolve(path)
        if resolved is None:
            raise AidbError(f"{self.describe(key)} is a symbolic link that leads outside the "
                            "volume; not read", category=RECORD_PERMANENT,
                            sqlstate=INSUFFICIENT_PRIVILEGE)
        try:
            # O_NOFOLLOW: the path is resolved, so a link here was swapped in since.
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise self.missing(key) from None
        except OSError as exc:
            raise self._unreadable(key, exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self.missing(key)
            self._check_opened(fd, key)
            yield info.st_size
            while True:
                chunk = self._read_chunk(fd, key)
                if not chunk:
                    return
                yield chunk
        finally:
            os.close(fd)

    def _read_chunk(self, fd, key):
        try:
            return os.read(fd, READ_CHUNK)
        except OSError as exc:
            raise self._unreadable(key, exc) from None

    def _check_opened(self, fd, key):
        """What was opened lies inside the root (Linux: /proc names it)."""
        opened = f"/proc/self/fd/{fd}"
        if os.path.exists(opened) and not self._inside(os.path.realpath(opened)):
            raise AidbError(f"{self.describe(key)} was replaced by a link that leads outside "
                            "the volume while it was opened; not read",
                            category=RECORD_PERMANENT, sqlstate=INSUFFICIENT_PRIVILEGE)

    def _unreadable(self, key, exc):
        return AidbError(f"{self.describe(key)} cannot be read: {exc.strerror}",
                         category=RECORD_PERMANENT,
                         hint=f"The server reads files as OS user {_server_os_user()}.")

    # --- paths -----------------------------------------------------------------------

    def _path(self, key):
        """The path of `key` below the root; keys that could name anything
        else ("..", absolute, empty parts) are refused."""
        parts = key.split("/") if isinstance(key, str) else []
        if not parts or "\0" in key or any(part in ("", ".", "..") for part in parts):
            raise InvalidInput(f'volume "{self.name}": invalid object key {key!r}',
                               category=RECORD_PERMANENT,
                               hint='Keys are relative paths with "/" separators, without ".." '
                                    "or empty parts.")
        return os.path.join(self.root, *parts)

    def _resolve(self, path):
        """`path` with every link resolved, or None when that leads out of the root."""
        resolved = os.path.realpath(path)
        return resolved if self._inside(resolved) else None

    def _inside(self, resolved):
        return os.path.commonpath([self.root, resolved]) == self.root


def _utc(mtime_ns):
    seconds, nanoseconds = divmod(mtime_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=nanoseconds // 1000)


def _is_utf8(name):
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:      # os.scandir turned undecodable bytes into surrogates
        return False


def _server_os_user():
    return pwd.getpwuid(os.geteuid()).pw_name
