"""Volumes against real parts: aidb.create_volume / list_volume / delete_volume
and the aidb.volumes view, for local directories (the server reading files as
its own OS user) and for S3 buckets on moto's S3 server on 127.0.0.1, which
checks signatures like AWS (tests/support/s3_server.py).

Reading objects has no SQL function of its own (pipelines do it): the tests
read through the engine's open_named_volume() with a small PL/Python helper
installed in the test database, so reads happen in the server too.
"""

import hashlib
import json
import os
import shutil
import tempfile
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgcluster import free_port
from tests.support.common import error_text, scratch_database, sql_error, wait_for
from tests.support.s3_server import s3_server  # noqa: F401  (the fixture)

PATHS_SETTING = "aidb.allowed_local_paths"
SMALL_LIMIT = 1000          # bytes: the max_object_size of the size-limit tests

# What the volume helpers raise, as "<category> <class>: <message>".
HELPERS = """
CREATE FUNCTION read_object(volume text, object_key text) RETURNS bytea
    LANGUAGE plpython3u AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
from aidb.errors import AidbError
from aidb.volumes.store import open_named_volume
try:
    return open_named_volume(GD["aidb"].db, volume).read(object_key)
except AidbError as exc:
    plpy.error(f"{exc.category} {type(exc).__name__}: {exc.message}", sqlstate=exc.sqlstate,
               **({"hint": exc.hint} if exc.hint else {}))
$$;
CREATE FUNCTION object_fingerprint(volume text, object_key text) RETURNS text
    LANGUAGE plpython3u AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
from aidb.volumes.store import open_named_volume
found = open_named_volume(GD["aidb"].db, volume).stat(object_key)
return found and found.fingerprint
$$;
"""


# ---------------------------------------------------------------- helpers

def create_volume(conn, name, uri, options=None):
    conn.execute("SELECT aidb.create_volume(%s, %s, %s)", (name, uri, Jsonb(options or {})))


def listing(conn, name):
    return conn.execute("SELECT key, size, last_modified, etag FROM aidb.list_volume(%s)",
                        (name,)).fetchall()


def read_object(conn, volume, key):
    return conn.execute("SELECT read_object(%s, %s)", (volume, key)).fetchone()[0]


def fingerprint(conn, volume, key):
    return conn.execute("SELECT object_fingerprint(%s, %s)", (volume, key)).fetchone()[0]


def registry(conn):
    """Everything stored about volumes, to prove a failed call changed nothing."""
    return conn.execute(
        "SELECT v.name, v.uri, v.options, v.owner::text, c.credentials "
        "FROM aidb.volume_registry v LEFT JOIN aidb.volume_credentials c ON c.volume = v.name "
        "ORDER BY v.name").fetchall()


def set_allowed_paths(cluster, conn, value):
    """Set the superuser-only setting server-wide, and wait until this backend sees it."""
    if value is None:
        cluster.psql(f"ALTER SYSTEM RESET {PATHS_SETTING}")
    else:
        cluster.psql(f"ALTER SYSTEM SET {PATHS_SETTING} = '{value}'")
    cluster.psql("SELECT pg_reload_conf()")
    wait_for(lambda: conn.execute("SELECT aidb._allowed_local_paths()").fetchone()[0] == (value or ""),
             message=f"{PATHS_SETTING} to be reloaded")


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(content)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tree():
    """A directory tree the server (OS user postgres) can read:

        base/allowed/docs/        the volume root; base/allowed is the allowed root
        base/allowed/escape ->    ../outside (inside the allowed root, leading out)
        base/outside/             not allowed
    """
    base = tempfile.mkdtemp(prefix="aidb-volumes-")
    os.chmod(base, 0o755)
    docs = os.path.join(base, "allowed", "docs")
    write(os.path.join(docs, "a.txt"), b"alpha")
    write(os.path.join(docs, "sub", "b.txt"), b"bravo bravo")
    write(os.path.join(docs, "sub-x.txt"), b"x")        # '-' sorts before '/': a key-order check
    write(os.path.join(docs, "big.bin"), b"z" * (2 * SMALL_LIMIT))
    write(os.path.join(base, "outside", "secret.txt"), b"not for volumes")
    os.symlink("/etc/passwd", os.path.join(docs, "passwd-link"))
    os.symlink("/etc", os.path.join(docs, "etc-link"))
    os.symlink("../outside/secret.txt", os.path.join(docs, "outside-link"))
    os.symlink("a.txt", os.path.join(docs, "inner-link"))
    os.symlink("../outside", os.path.join(base, "allowed", "escape"))
    yield {"base": base, "allowed": os.path.join(base, "allowed"), "docs": docs,
           "outside": os.path.join(base, "outside")}
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def shared_db(cluster, tree):
    """One database for the module, with the read helpers, and the allowed
    root set for the module's duration (reset after: the cluster is shared)."""
    with scratch_database(cluster, "t_volumes_", template="aidb_template") as name:
        cluster.psql(HELPERS, dbname=name)
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            set_allowed_paths(cluster, conn, tree["allowed"])
            try:
                yield name, conn
            finally:
                set_allowed_paths(cluster, conn, None)


@pytest.fixture
def conn(shared_db):
    """The module's connection (each backend imports the engine once); the
    volumes a test creates are gone after it."""
    yield shared_db[1]
    shared_db[1].execute("DELETE FROM aidb.volume_registry")


@pytest.fixture
def bucket(s3_server):  # noqa: F811
    """A new bucket with objects under docs/ and one outside it."""
    name = "b-" + uuid.uuid4().hex[:12]
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    for key, body in (("docs/a.txt", b"alpha"), ("docs/sub/b.txt", b"bravo bravo"),
                      ("docs/sub-x.txt", b"x"), ("docs/big.bin", b"z" * (2 * SMALL_LIMIT)),
                      ("docs/folder/", b""), ("other/c.txt", b"charlie")):
        client.put_object(Bucket=name, Key=key, Body=body)
    return name


def s3_options(server, **extra):
    return {"endpoint_url": server.url, **server.credentials, **extra}


@pytest.fixture
def other_role(cluster, shared_db):
    """A login role in aidb_users that is neither a superuser nor postgres."""
    role = "r_" + uuid.uuid4().hex[:10]
    cluster.psql(f"CREATE ROLE {role} LOGIN IN ROLE aidb_users")
    with psycopg.connect(cluster.dsn(shared_db[0], user=role), autocommit=True) as conn:
        yield role, conn
    cluster.psql(f"DROP ROLE {role}")


# ---------------------------------------------------------------- local directories

def test_file_volume_create_list_and_delete(conn, tree):
    create_volume(conn, "docs", "file://" + tree["docs"] + "/")
    row = conn.execute("SELECT uri, options, owner::text, has_credentials FROM aidb.volumes "
                       "WHERE name = 'docs'").fetchone()
    assert row == ("file://" + tree["docs"] + "/", {"max_object_size": 64 * 1024 * 1024},
                   "postgres", False)

    rows = listing(conn, "docs")
    # Code point order; links that lead out of the root (to a file or a
    # directory) are left out, a link to a file inside is an object.
    assert [r[0] for r in rows] == ["a.txt", "big.bin", "inner-link", "sub-x.txt", "sub/b.txt"]
    for key, size, last_modified, etag in rows:
        info = os.stat(os.path.join(tree["docs"], key))
        assert size == info.st_size
        assert etag == f"{info.st_size}-{info.st_mtime_ns}"
        assert abs(last_modified.timestamp() - info.st_mtime) < 1e-5
        assert last_modified.utcoffset().total_seconds() == 0

    conn.execute("SELECT aidb.delete_volume('docs')")
    assert registry(conn) == []
    error = sql_error(conn, "SELECT aidb.delete_volume('docs')")
    assert error.sqlstate == "42704"


def test_file_volume_reads_inside_its_root_only(conn, tree):
    create_volume(conn, "docs", "file://" + tree["docs"])
    assert read_object(conn, "docs", "sub/b.txt") == b"bravo bravo"
    assert read_object(conn, "docs", "inner-link") == b"alpha"
    for key in ("passwd-link", "outside-link"):
        error = sql_error(conn, "SELECT read_object('docs', %s)", (key,))
        assert "RecordPermanent" in error_text(error)
        assert "symbolic link that leads outside the volume" in error_text(error)
        assert fingerprint(conn, "docs", key) is None
    for key in ("../outside/secret.txt", "/etc/passwd", "sub/../../outside/secret.txt",
                "etc-link/passwd"):
        error = sql_error(conn, "SELECT read_object('docs', %s)", (key,))
        assert "RecordPermanent" in error_text(error)
        assert "root:" not in error_text(error) and "not for volumes" not in error_text(error)
    error = sql_error(conn, "SELECT read_object('docs', 'gone.txt')")
    assert "RecordPermanent ObjectMissing" in error_text(error)


@pytest.mark.parametrize("uri, sqlstate, message", [
    ("file:///etc", "42501", 'directory "/etc" is not allowed by aidb.allowed_local_paths'),
    ("file://{allowed}/../outside", "22023", 'contains ".."'),
    ("file://{allowed}/%2E%2E/outside", "22023", 'contains ".."'),
    ("file://{allowed}/escape", "42501", "is not allowed by aidb.allowed_local_paths"),
    ("file://{outside}", "42501", "is not allowed by aidb.allowed_local_paths"),
    ("file://etc/passwd", "22023", 'names the host "etc"'),
    ("file:relative/dir", "22023", "has a relative path"),
    ("file://{allowed}/no-such-dir", "38000", "does not exist"),
    ("ftp://host/dir", "22023", 'unknown URI scheme "ftp"'),
    ("s3://", "22023", "names no bucket"),
    ("s3://key:secret@bucket/x", "22023", "must not contain user info"),
])
def test_hostile_or_bad_uris_are_refused(conn, tree, uri, sqlstate, message):
    error = sql_error(conn, "SELECT aidb.create_volume('v', %s)", (uri.format(**tree),))
    assert error.sqlstate == sqlstate
    assert message in error_text(error)
    assert "secret" not in error_text(error)
    assert registry(conn) == []


def test_not_allowed_directory_names_the_setting(conn):
    error = sql_error(conn, "SELECT aidb.create_volume('v', 'file:///etc')")
    assert error.diag.message_hint.startswith(f"A superuser can add the directory (or one above "
                                              f"it) to {PATHS_SETTING}")


def test_bad_options_are_refused(conn, tree):
    uri = "file://" + tree["docs"]
    for options, message in (({"region": "x"}, 'unknown option "region" for file volumes'),
                             ({"access_key_id": "a", "secret_access_key": "hidden"},
                              "file volumes take no credentials"),
                             ({"max_object_size": 0}, 'option "max_object_size" must be an integer from 1 to 1073741824, got 0')):
        error = sql_error(conn, "SELECT aidb.create_volume('v', %s, %s)", (uri, Jsonb(options)))
        assert error.sqlstate == "22023"
        assert message in error_text(error) and "hidden" not in error_text(error)
    assert registry(conn) == []


def test_tightened_setting_applies_to_existing_volumes(cluster, conn, tree):
    create_volume(conn, "docs", "file://" + tree["docs"])
    try:
        set_allowed_paths(cluster, conn, None)          # empty: nothing is allowed
        error = sql_error(conn, "SELECT * FROM aidb.list_volume('docs')")
        assert error.sqlstate == "42501"
        assert f"{PATHS_SETTING} is empty: no directory is allowed" in error_text(error)
        error = sql_error(conn, "SELECT aidb.create_volume('v', %s)", ("file://" + tree["docs"],))
        assert error.sqlstate == "42501"
    finally:
        set_allowed_paths(cluster, conn, tree["allowed"])
    assert len(listing(conn, "docs")) == 5


def test_unreadable_files_and_directories(conn, tree):
    """The server reads as OS user postgres: an unreadable file is one
    record's error; an unreadable directory fails the whole listing (a
    listing without it would look complete)."""
    root = os.path.join(tree["allowed"], "locked")
    write(os.path.join(root, "open.txt"), b"open")
    write(os.path.join(root, "closed.txt"), b"closed")
    write(os.path.join(root, "dir", "inside.txt"), b"inside")
    os.chmod(os.path.join(root, "closed.txt"), 0)
    try:
        create_volume(conn, "locked", "file://" + root)
        assert [r[0] for r in listing(conn, "locked")] == ["closed.txt", "dir/inside.txt", "open.txt"]
        error = sql_error(conn, "SELECT read_object('locked', 'closed.txt')")
        assert "RecordPermanent" in error_text(error) and "Permission denied" in error_text(error)
        assert read_object(conn, "locked", "open.txt") == b"open"

        os.chmod(os.path.join(root, "dir"), 0)
        error = sql_error(conn, "SELECT * FROM aidb.list_volume('locked')")
        assert 'volume "locked": listing failed' in error_text(error)
        assert "Permission denied" in error_text(error)
    finally:
        os.chmod(os.path.join(root, "dir"), 0o755)
        shutil.rmtree(root)


def test_fingerprint_changes_with_the_file(conn, tree):
    path = os.path.join(tree["allowed"], "changing", "f.txt")
    write(path, b"one")
    create_volume(conn, "changing", "file://" + os.path.dirname(path))
    before = fingerprint(conn, "changing", "f.txt")
    write(path, b"two")         # same size: only the time differs
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1000))
    after = fingerprint(conn, "changing", "f.txt")
    assert before and after and before != after
    os.unlink(path)
    assert fingerprint(conn, "changing", "f.txt") is None


def test_file_size_limit(conn, tree):
    create_volume(conn, "docs", "file://" + tree["docs"], {"max_object_size": SMALL_LIMIT})
    assert read_object(conn, "docs", "a.txt") == b"alpha"
    error = sql_error(conn, "SELECT read_object('docs', 'big.bin')")
    assert ('RecordPermanent ObjectTooLarge: volume "docs": object "big.bin" is too large '
            f"(2000 bytes; the limit is {SMALL_LIMIT} bytes)") in error_text(error)


# ---------------------------------------------------------------- permissions

def test_only_superusers_change_the_allowed_paths(other_role):
    _, intruder = other_role
    for sql in (f"SET {PATHS_SETTING} = '/'",
                f"SELECT set_config('{PATHS_SETTING}', '/', false)",
                f"ALTER SYSTEM SET {PATHS_SETTING} = '/'"):
        error = sql_error(intruder, sql)
        assert error.sqlstate == "42501", sql
    error = sql_error(intruder, "SELECT aidb.create_volume('mine', 'file:///')")
    assert error.sqlstate == "42501"


def test_other_roles_cannot_read_use_or_delete_volumes(conn, s3_server, bucket, other_role):  # noqa: F811
    secret = s3_server.credentials["secret_access_key"]
    create_volume(conn, "s3docs", f"s3://{bucket}/docs", s3_options(s3_server))
    role, intruder = other_role
    assert intruder.execute("SELECT * FROM aidb.volume_credentials").fetchall() == []
    assert secret not in str(intruder.execute("SELECT * FROM aidb.volumes").fetchall())
    for sql in ("SELECT * FROM aidb.list_volume('s3docs')", "SELECT aidb.delete_volume('s3docs')"):
        error = sql_error(intruder, sql)
        assert error.sqlstate == "42501"
    # Going around the functions does not work either (row-level security).
    assert intruder.execute("DELETE FROM aidb.volume_credentials").rowcount == 0
    assert intruder.execute("DELETE FROM aidb.volume_registry").rowcount == 0
    # A role may own volumes of its own.
    create_volume(intruder, "mine", f"s3://{bucket}/docs", s3_options(s3_server))
    assert len(listing(intruder, "mine")) == 4
    assert conn.execute("SELECT owner::text FROM aidb.volumes WHERE name = 'mine'").fetchone() == (role,)


def test_roles_outside_aidb_users_cannot_create_volumes(cluster, shared_db, tree):
    role = "r_" + uuid.uuid4().hex[:10]
    cluster.psql(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(cluster.dsn(shared_db[0], user=role), autocommit=True) as outsider:
            error = sql_error(outsider, "SELECT aidb.create_volume('v', %s)",
                              ("file://" + tree["docs"],))
            assert error.sqlstate == "42501"
            assert "is not a member of aidb_users" in error_text(error)
    finally:
        cluster.psql(f"DROP ROLE {role}")


def test_delete_is_refused_while_a_pipeline_reads_the_volume(conn, tree):
    create_volume(conn, "docs", "file://" + tree["docs"])
    with conn.transaction():
        conn.execute("CREATE TABLE fake_destination ()")
        conn.execute("INSERT INTO aidb.pipeline_registry (name, source_volume, source_type, "
                     "destination, steps) VALUES ('reader', 'docs', 'volume', 'fake_destination', '[]')")
        with pytest.raises(psycopg.Error) as info, conn.transaction():
            conn.execute("SELECT aidb.delete_volume('docs')")
        assert info.value.sqlstate == "2BP01"
        assert 'volume "docs" is used by pipeline "reader"' in error_text(info.value)
        raise psycopg.Rollback()
    conn.execute("SELECT aidb.delete_volume('docs')")
    assert registry(conn) == []


# ---------------------------------------------------------------- S3

def test_s3_volume_create_list_and_delete(conn, s3_server, bucket):  # noqa: F811
    secret = s3_server.credentials["secret_access_key"]
    create_volume(conn, "s3docs", f"s3://{bucket}/docs", s3_options(s3_server, region="us-east-1"))
    row = conn.execute("SELECT uri, options, has_credentials FROM aidb.volumes "
                       "WHERE name = 's3docs'").fetchone()
    assert row == (f"s3://{bucket}/docs",
                   {"endpoint_url": s3_server.url, "region": "us-east-1",
                    "max_object_size": 64 * 1024 * 1024}, True)
    assert conn.execute("SELECT credentials FROM aidb.volume_credentials").fetchone() == (
        s3_server.credentials,)
    assert secret not in str(conn.execute("SELECT * FROM aidb.volumes").fetchall())

    rows = listing(conn, "s3docs")
    # Relative to the prefix; folder markers and keys outside it left out.
    assert [r[0] for r in rows] == ["a.txt", "big.bin", "sub-x.txt", "sub/b.txt"]
    client = s3_server.client()
    for key, size, last_modified, etag in rows:
        head = client.head_object(Bucket=bucket, Key="docs/" + key)
        assert (size, last_modified, etag) == (
            head["ContentLength"], head["LastModified"], head["ETag"].strip('"'))
    assert rows[0][3] == hashlib.md5(b"alpha").hexdigest()

    conn.execute("SELECT aidb.delete_volume('s3docs')")
    assert registry(conn) == []


def test_s3_reads_stream_under_the_size_limit(conn, s3_server, bucket):  # noqa: F811
    create_volume(conn, "s3docs", f"s3://{bucket}/docs",
                  s3_options(s3_server, max_object_size=SMALL_LIMIT))
    assert read_object(conn, "s3docs", "sub/b.txt") == b"bravo bravo"
    error = sql_error(conn, "SELECT read_object('s3docs', 'big.bin')")
    assert ('RecordPermanent ObjectTooLarge: volume "s3docs": object "big.bin" is too large '
            f"(2000 bytes; the limit is {SMALL_LIMIT} bytes)") in error_text(error)
    error = sql_error(conn, "SELECT read_object('s3docs', 'gone.txt')")
    assert "RecordPermanent ObjectMissing" in error_text(error)


def test_s3_fingerprint_changes_with_the_object(conn, s3_server, bucket):  # noqa: F811
    create_volume(conn, "s3docs", f"s3://{bucket}/docs", s3_options(s3_server))
    before = fingerprint(conn, "s3docs", "a.txt")
    s3_server.client().put_object(Bucket=bucket, Key="docs/a.txt", Body=b"ALPHA")
    after = fingerprint(conn, "s3docs", "a.txt")
    assert before and after and before != after
    assert fingerprint(conn, "s3docs", "gone.txt") is None


@pytest.mark.parametrize("credentials, code", [
    ("wrong secret", "SignatureDoesNotMatch"),
    ("unknown key", "InvalidAccessKeyId"),
])
def test_s3_rejected_credentials_are_clear_and_never_shown(cluster, conn, s3_server, bucket,  # noqa: F811
                                                           credentials, code):
    secret = "wrong-secret-" + uuid.uuid4().hex
    key_id = (s3_server.credentials["access_key_id"] if credentials == "wrong secret"
              else "AKIAUNKNOWN0000000")
    create_volume(conn, "bad", f"s3://{bucket}/docs", s3_options(
        s3_server, access_key_id=key_id, secret_access_key=secret))
    listed = sql_error(conn, "SELECT * FROM aidb.list_volume('bad')")
    read = sql_error(conn, "SELECT read_object('bad', 'a.txt')")
    assert f'volume "bad": access to bucket "{bucket}" was denied ({code})' in error_text(listed)
    assert "PipelinePermanent VolumeError" in error_text(read)
    for error in (listed, read):
        assert error.sqlstate == "42501"
        assert "Check the volume's access_key_id and secret_access_key" in error.diag.message_hint
        assert secret not in error_text(error)
    assert secret not in str(conn.execute("SELECT * FROM aidb.volumes").fetchall())
    assert secret not in cluster.log_text()


def test_s3_missing_bucket(conn, s3_server):  # noqa: F811
    create_volume(conn, "nobucket", "s3://no-such-bucket-here/x", s3_options(s3_server))
    error = sql_error(conn, "SELECT * FROM aidb.list_volume('nobucket')")
    assert error.sqlstate == "42704"
    assert f'volume "nobucket": bucket "no-such-bucket-here" does not exist at {s3_server.url}' \
        in error_text(error)


def test_s3_unreachable_endpoint_is_temporary(conn, s3_server, bucket):  # noqa: F811
    create_volume(conn, "down", f"s3://{bucket}/docs",
                  s3_options(s3_server, endpoint_url=f"http://127.0.0.1:{free_port()}"))
    error = sql_error(conn, "SELECT read_object('down', 'a.txt')")
    assert "PipelineTemporary VolumeError" in error_text(error)
    assert "is unreachable" in error_text(error)


def test_s3_anonymous_volume(conn, s3_server, bucket):  # noqa: F811
    """No credentials: unsigned requests, which only a public bucket answers."""
    create_volume(conn, "public", f"s3://{bucket}/docs/sub", {"endpoint_url": s3_server.url})
    assert conn.execute("SELECT has_credentials FROM aidb.volumes").fetchone() == (False,)
    with s3_server.anonymous_allowed():
        assert [r[0] for r in listing(conn, "public")] == ["b.txt"]
        # Unsigned indeed: moto lets anonymous requests read public objects only.
        error = sql_error(conn, "SELECT read_object('public', 'b.txt')")
        assert f'access to bucket "{bucket}" was denied' in error_text(error)
        assert "no credentials, so its requests are anonymous" in error.diag.message_hint
        s3_server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                           "Resource": f"arn:aws:s3:::{bucket}/docs/*"}]}))
        assert read_object(conn, "public", "b.txt") == b"bravo bravo"


@pytest.mark.parametrize("options, message", [
    ({"endpoint_url": "ftp://127.0.0.1"}, 'option "endpoint_url" must be an http:// or https:// URL, got "ftp://127.0.0.1"'),
    ({"endpoint_url": "http://user:hidden@127.0.0.1"}, 'option "endpoint_url" must not contain user info'),
    ({"region": "evil.example.com/"}, 'option "region" must be a region name such as "eu-west-1", got "evil.example.com/"'),
    ({"access_key_id": "AKIA0000"}, "access_key_id and secret_access_key go together"),
    ({"secret_access_key": "hidden"}, "access_key_id and secret_access_key go together"),
    ({"bucket": "x"}, 'unknown option "bucket" for s3 volumes'),
])
def test_bad_s3_options_are_refused(conn, options, message):
    error = sql_error(conn, "SELECT aidb.create_volume('v', 's3://bucket/x', %s)", (Jsonb(options),))
    assert error.sqlstate == "22023"
    assert message in error_text(error) and "hidden" not in error_text(error)
    assert registry(conn) == []
