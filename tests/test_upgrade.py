"""ALTER EXTENSION aidb UPDATE from the previous release, with live data.

The server runs this tree's C library and engine (as after `make install` of
a new release); a fresh database gets release 0.1.0's SQL
(CREATE EXTENSION aidb VERSION '0.1.0'), and a session loads 0.1.0's engine
from git history into PL/Python's GD, so that pipelines are created and run
exactly as 0.1.0 would. A new session (the new engine) then updates the
extension and checks that pipelines, backlogs, capture, workers and
retrieval go on with nothing lost — and that the updated extension is the
same as a fresh install of this version (so a later change to a table,
index or grant that the upgrade script lacks fails here).
"""

import glob
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.support.common import ROOT, TEST_API_KEY, scratch_database, wait_for
from tests.support.fake_vectors import fake_embedding
from tests.support.pipeline_checks import (
    DIMS, MODEL, SERVER_MODEL, assert_consistent, create_fake_model, destination_contents, metrics,
    pending, pipeline_errors)
from tests.support.workers import running_worker

pytestmark = pytest.mark.slow      # builds and installs the previous release

PREVIOUS = "0.1.0"
PREVIOUS_COMMIT = "2b0ed2f"          # the release 0.1.0 (its sql/ext/ and python/aidb)
CURRENT = "0.2.0"
DRAIN_TIMEOUT = 60


@pytest.fixture(scope="module")
def previous_engine():
    """Release 0.1.0's Python engine, extracted from git history where the
    server's OS user can read it."""
    target = tempfile.mkdtemp(prefix="aidb-previous-engine-")
    try:
        archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", PREVIOUS_COMMIT,
                                  "python/aidb"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(target)
        detail = getattr(exc, "stderr", b"").decode(errors="replace").strip() or exc
        pytest.fail(f"the upgrade test needs release {PREVIOUS}'s engine from git history "
                    f"(commit {PREVIOUS_COMMIT}), which this checkout cannot give: {detail}. "
                    "Run it in a full clone (git fetch --unshallow).", pytrace=False)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target)
    for directory, _, files in os.walk(target):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    yield os.path.join(target, "python")
    shutil.rmtree(target)


@pytest.fixture
def previous_db(cluster):
    """A fresh database with aidb 0.1.0's SQL."""
    with scratch_database(cluster, "up_") as name:
        cluster.psql(f"CREATE EXTENSION aidb VERSION '{PREVIOUS}' CASCADE", dbname=name)
        yield name


@pytest.fixture
def owner(cluster):
    """A pipeline owner that is not a superuser (as in production), who may log in
    (its background worker connects as it). Requested before the database, so
    that the database (and all the role owns) is dropped first."""
    role = f"owner_{uuid.uuid4().hex[:8]}"
    cluster.psql(f"CREATE ROLE {role} LOGIN IN ROLE aidb_users")
    yield role
    cluster.psql(f"DROP ROLE IF EXISTS {role}")


def previous_release_sessions(cluster, dbname, owner, previous_engine, model_server):
    """(admin, old) on a 0.1.0 database: a superuser session, and one acting
    as `owner` (who may create tables in public) on 0.1.0's engine, with the
    test model registered."""
    admin = session(cluster, dbname)
    admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
    old = session(cluster, dbname)
    load_previous_engine(old, previous_engine)
    old.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    create_fake_model(old, model_server.url, TEST_API_KEY)
    return admin, old


def load_previous_engine(conn, engine_dir):
    """This session's aidb functions run 0.1.0's engine from now on: GD["aidb"]
    is what every PL/Python entry point of 0.1.0 calls (GD is shared by all
    PL/Python code of a session)."""
    body = f"""
import sys
deps = plpy.execute("SELECT aidb._engine_dir() AS d")[0]["d"] + "/deps"
for path in (deps, {engine_dir!r}):
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
import aidb.sql_api
assert aidb.__version__ == {PREVIOUS!r}, aidb.__version__
assert aidb.sql_api.__file__.startswith({engine_dir!r}), aidb.sql_api.__file__
GD["aidb"] = aidb.sql_api
"""
    conn.execute(sql.SQL("DO {} LANGUAGE plpython3u").format(sql.Literal(body)))


def session(cluster, dbname, user="postgres"):
    return psycopg.connect(cluster.dsn(dbname, user=user), autocommit=True)


def extension_version(conn):
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'aidb'").fetchone()[0]


def registry(conn):
    """Every pipeline's settings, as the registry holds them (0.1.0 named
    the source's type source_kind)."""
    return conn.execute("""
        SELECT id, name, source::text, source_volume,
               coalesce(to_jsonb(r) ->> 'source_type', to_jsonb(r) ->> 'source_kind'),
               source_key_column, source_data_column, source_filter, destination::text, steps,
               auto_processing, batch_size, background_sync_interval, owner_role::text, created_at
        FROM aidb.pipeline_registry r ORDER BY id""").fetchall()


def backlog_keys(conn, pipeline_id):
    return sorted(k for (k,) in conn.execute(
        sql.SQL("SELECT DISTINCT key FROM aidb.{}").format(
            sql.Identifier(f"_backlog_{pipeline_id}"))))


def state_rows(conn, pipeline_id):
    return sorted(conn.execute(sql.SQL("SELECT key, hash FROM aidb.{}").format(
        sql.Identifier(f"_state_{pipeline_id}"))).fetchall())


# What an extension consists of, for comparing an updated one with a fresh one.
FINGERPRINT = r"""
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'aidb'),
aidb_tables AS (
    SELECT c.oid FROM pg_depend d JOIN pg_class c ON c.oid = d.objid, ext
    WHERE d.refobjid = ext.oid AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
      AND d.classid = 'pg_class'::regclass AND c.relkind = 'r')
SELECT 'member ' || pg_describe_object(d.classid, d.objid, 0) FROM pg_depend d, ext
 WHERE d.refobjid = ext.oid AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
UNION ALL
SELECT 'function ' || f.oid::regprocedure || ' owner ' || f.proowner::regrole || ' acl '
       || coalesce(f.proacl::text, '-') || E'\n' || pg_get_functiondef(f.oid)
 FROM pg_proc f WHERE f.pronamespace = 'aidb'::regnamespace AND f.proname !~ '_[0-9]+$'
UNION ALL
SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' owner ' || c.relowner::regrole
       || ' acl ' || coalesce(c.relacl::text, '-') || ' rls ' || c.relrowsecurity
       || coalesce(E'\n' || pg_get_viewdef(c.oid), '')
 FROM pg_class c WHERE c.relnamespace = 'aidb'::regnamespace
  AND c.relname !~ '^_(backlog|state)_[0-9]+(_key|_pkey)?$'
UNION ALL
SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
       || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
 FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE a.attrelid IN (SELECT oid FROM aidb_tables) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
 FROM pg_constraint WHERE conrelid IN (SELECT oid FROM aidb_tables)
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes
 WHERE schemaname = 'aidb' AND tablename !~ '^_(backlog|state)_[0-9]+$'
UNION ALL
SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent || ' ' || e.evtfoid::regproc || ' '
       || coalesce(e.evttags::text, '-') || ' ' || e.evtenabled::text
 FROM pg_event_trigger e
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'aidb'::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.tablename || ' ' || p.policyname || ' ' || p.cmd || ' ' || p.roles::text
       || ' ' || coalesce(p.qual, '-') || ' ' || coalesce(p.with_check, '-')
 FROM pg_policies p WHERE p.schemaname = 'aidb'
UNION ALL
SELECT 'dumped ' || c.relname || ' ' || coalesce(e.extcondition[i], '-')
 FROM pg_extension e, generate_subscripts(e.extconfig, 1) i, pg_class c
 WHERE e.extname = 'aidb' AND c.oid = e.extconfig[i]
UNION ALL
SELECT 'schema acl ' || n.nspacl::text FROM pg_namespace n WHERE n.nspname = 'aidb'
UNION ALL
SELECT 'model ' || name || ' ' || provider || ' ' || config::text FROM aidb.model_registry
 WHERE name = 'minilm'
ORDER BY 1
"""


def fingerprint(conn):
    return [row[0] for row in conn.execute(FINGERPRINT)]


def model_row(conn):
    """The test model as the registry holds it, credentials included."""
    return conn.execute("""
        SELECT m.name, m.provider, m.config, m.owner::text, m.created_at, c.credentials
        FROM aidb.model_registry m LEFT JOIN aidb.model_credentials c ON c.model = m.name
        WHERE m.name = %s""", (MODEL,)).fetchone()


@pytest.fixture
def folder(cluster):
    """A directory the server can read, allowed by aidb.allowed_local_paths
    for the duration of the test."""
    path = tempfile.mkdtemp(prefix="aidb-upgrade-volume-")
    os.chmod(path, 0o755)
    with session(cluster, "postgres") as conn:
        conn.execute(f"ALTER SYSTEM SET aidb.allowed_local_paths = '{path}'")
        conn.execute("SELECT pg_reload_conf()")
        wait_for(lambda: conn.execute("SELECT current_setting('aidb.allowed_local_paths')")
                 .fetchone()[0] == path, message="the reloaded setting")
    yield path
    with session(cluster, "postgres") as conn:
        conn.execute("ALTER SYSTEM RESET aidb.allowed_local_paths")
        conn.execute("SELECT pg_reload_conf()")
    shutil.rmtree(path, ignore_errors=True)


def write_file(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as out:
        out.write(text)
    os.chmod(path, 0o644)


def volume_destination(conn, name):
    """{file: (text, vector)} of a volume pipeline without ChunkText (one part per file)."""
    return {key: value for (key, part), value in destination_contents(conn, name).items()
            if part == 0}


def expected_volume_destination(folder):
    return {name: (open(os.path.join(folder, name)).read(),
                   fake_embedding(open(os.path.join(folder, name)).read(), DIMS, SERVER_MODEL))
            for name in os.listdir(folder)}


def assert_same_vectors(actual, expected):
    assert actual.keys() == expected.keys()
    for key, (text, vector) in expected.items():
        assert actual[key][0] == text
        assert all(abs(a - b) < 1e-5 for a, b in zip(actual[key][1], vector)), key


# Smoke: the catalogs differ between majors (PostgreSQL 18 makes a table's
# row type a member along with the table, and names NOT NULL constraints).
@pytest.mark.smoke
def test_update_from_previous_release_keeps_pipelines_working(
        cluster, owner, previous_db, previous_engine, model_server, folder):
    dbname = previous_db
    admin, old = previous_release_sessions(cluster, dbname, owner, previous_engine, model_server)

    # --- as 0.1.0: sources, a model, two pipelines, a partial run --------------------------
    old.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    old.execute("INSERT INTO docs SELECT g, 'document ' || g || ' about topic ' || g % 4 "
                "FROM generate_series(1, 20) g")
    old.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text, published boolean)")
    old.execute("INSERT INTO notes SELECT g, 'note ' || g, g % 3 <> 0 "
                "FROM generate_series(1, 12) g")
    # Rows go in before the pipelines: 0.1.0's backlogs belong to the owner, and
    # this library's C capture writes only into backlogs that a superuser owns.
    old.execute(f"""SELECT aidb.create_pipeline('p', 'docs', 'id', 'body',
        step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('{MODEL}'),
        batch_size => 6)""")
    old.execute(f"""SELECT aidb.create_pipeline('pf', 'notes', 'id', 'body',
        step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(100),
        step_2 => 'KnowledgeBase',
        step_2_options => aidb.knowledge_base_config('{MODEL}', distance_operator => 'Cosine'),
        source_filter => 'published', batch_size => 5)""")
    # A Live pipeline (processed in the writing transaction), a view source
    # (reconciled by content hash) and a volume source.
    old.execute("CREATE TABLE live_docs (id int PRIMARY KEY, body text)")
    old.execute("INSERT INTO live_docs SELECT g, 'live ' || g FROM generate_series(1, 4) g")
    old.execute(f"""SELECT aidb.create_pipeline('plive', 'live_docs', 'id', 'body',
        step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('{MODEL}'),
        auto_processing => 'Live')""")
    old.execute("INSERT INTO live_docs VALUES (5, 'live 5, written under 0.1.0')")
    old.execute("CREATE VIEW docs_v AS SELECT id, body FROM docs WHERE id <= 10")
    old.execute(f"""SELECT aidb.create_pipeline('pv', 'docs_v', 'id', 'body',
        step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('{MODEL}'))""")
    for n in range(1, 4):
        write_file(folder, f"file{n}.txt", f"the text of file {n}")
    old.execute(f"SELECT aidb.create_volume('files', 'file://{folder}')")
    old.execute(f"""SELECT aidb.create_pipeline('pvol', 'files',
        step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('{MODEL}'))""")
    ids = dict(old.execute("SELECT name, id FROM aidb.pipeline_registry").fetchall())
    # One batch of p (6 keys) as 0.1.0's worker would run it; pf completely,
    # then a delete captured by 0.1.0's capture function.
    assert old.execute("SELECT aidb._run_batch(%s)", (ids["p"],)).fetchone()[0] == 6
    old.execute("SELECT aidb.run_pipeline('pf')")
    old.execute("SELECT aidb.run_pipeline('pv')")
    old.execute("SELECT aidb.run_pipeline('pvol')")
    old.execute("DELETE FROM docs WHERE id = 20")
    old.execute("DELETE FROM notes WHERE id = 1")
    old.close()

    assert extension_version(admin) == PREVIOUS
    settings_before = registry(admin)
    p_pending = backlog_keys(admin, ids["p"])
    pf_pending = backlog_keys(admin, ids["pf"])
    states_before = {name: state_rows(admin, i) for name, i in ids.items()}
    destination_before = {name: destination_contents(admin, name) for name in ids}
    done = {key for key, _ in destination_before["p"]}
    assert len(done) == 6 and 20 not in done
    assert p_pending == sorted(set(range(1, 21)) - done), "0.1.0 left the rest of p queued"
    assert pf_pending == [1], "0.1.0 processed pf and queued its deleted key"
    assert len(destination_before["pv"]) == 10
    assert len(destination_before["plive"]) == 5
    assert_same_vectors(volume_destination(admin, "pvol"), expected_volume_destination(folder))
    model_before = model_row(admin)
    owner_oid = admin.execute("SELECT %s::regrole::oid", (owner,)).fetchone()[0]
    assert admin.execute("SELECT relowner FROM pg_class WHERE oid = %s::regclass",
                         (f"aidb._backlog_{ids['p']}",)).fetchone()[0] == owner_oid

    # --- the update, in a new session: the new engine ----------------------------------------
    admin.close()
    admin = session(cluster, dbname)
    admin.execute("ALTER EXTENSION aidb UPDATE")
    assert extension_version(admin) == CURRENT

    # Nothing lost or changed: settings, queued keys, states, destinations, the model.
    assert registry(admin) == settings_before
    assert backlog_keys(admin, ids["p"]) == p_pending
    assert backlog_keys(admin, ids["pf"]) == pf_pending
    for name, i in ids.items():
        assert state_rows(admin, i) == states_before[name], name
        assert destination_contents(admin, name) == destination_before[name], name
        assert pipeline_errors(admin, name) == [], name
    assert model_row(admin) == model_before
    assert pending(admin, "p") == len(p_pending)

    # Backlog and state now belong to the extension's owner, depend on the
    # extension without being members of it, and have 0.2.0's shape.
    ext_owner, ext_oid = admin.execute(
        "SELECT extowner, oid FROM pg_extension WHERE extname = 'aidb'").fetchone()
    for i in ids.values():
        for table in (f"_backlog_{i}", f"_state_{i}"):
            relowner, = admin.execute("SELECT relowner FROM pg_class WHERE oid = %s::regclass",
                                      (f"aidb.{table}",)).fetchone()
            assert relowner == ext_owner, table
            deptypes = sorted(d for (d,) in admin.execute(
                "SELECT deptype FROM pg_depend WHERE classid = 'pg_class'::regclass "
                "AND objid = %s::regclass AND refobjid = %s", (f"aidb.{table}", ext_oid)))
            assert deptypes == ["n"], (table, deptypes)
        assert admin.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'aidb' "
                             "AND tablename = %s", (f"_backlog_{i}",)).fetchone()[0] == 0
        assert admin.execute(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'hash'", (f"aidb._state_{i}",)).fetchone()[0] is False
    per_pipeline_members = admin.execute(
        "SELECT array_agg(pg_describe_object(classid, objid, objsubid)) FROM pg_depend "
        "WHERE refclassid = 'pg_extension'::regclass AND refobjid = %s AND deptype = 'e' "
        "AND pg_describe_object(classid, objid, objsubid) ~ '_[0-9]+\\M'",
        (ext_oid,)).fetchone()[0]
    assert per_pipeline_members is None, per_pipeline_members
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        admin.execute("DROP EXTENSION aidb")      # refused while pipelines exist, as on 0.2.0
    owner_functions = admin.execute(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'aidb'::regnamespace "
        "AND proname = ANY(%s) AND prosecdef AND proowner = %s",
        ([f"_{k}_{ids['p']}" for k in ("source", "drift", "count", "all_keys", "destination",
                                       "capture")], owner_oid)).fetchone()[0]
    assert owner_functions == 6

    # The updated extension is exactly a fresh install of this version.
    with scratch_database(cluster, "fresh_") as fresh_db:
        cluster.psql("CREATE EXTENSION aidb CASCADE", dbname=fresh_db)
        with session(cluster, fresh_db) as fresh:
            expected, actual = fingerprint(fresh), fingerprint(admin)
    assert actual == expected, "\n".join(
        ["the updated extension differs from a fresh install (- fresh, + updated):"]
        + [f"- {line}" for line in expected if line not in actual][:20]
        + [f"+ {line}" for line in actual if line not in expected][:20])

    # --- the pipelines go on, as the owner ---------------------------------------------------
    user = session(cluster, dbname, user=owner)
    user.execute("SELECT aidb.run_pipeline('p')")
    user.execute("SELECT aidb.run_pipeline('pf')")
    assert pending(user, "p") == 0 and pending(user, "pf") == 0
    assert assert_consistent(user, "p") == 19
    assert_consistent(user, "pf")
    # The keys 0.1.0 embedded were not touched again.
    after = destination_contents(user, "p")
    assert {k: v for k, v in after.items() if k[0] in done} == destination_before["p"]

    # Capture: INSERT, UPDATE (of the data and of a key), DELETE — by a role
    # that is not the owner too (the superuser).
    user.execute("INSERT INTO docs VALUES (100, 'a new document'), (101, 'another one')")
    user.execute("UPDATE docs SET body = 'rewritten' WHERE id = 2")
    admin.execute("UPDATE docs SET id = 200 WHERE id = 3")
    admin.execute("DELETE FROM docs WHERE id IN (4, 5)")
    user.execute("INSERT INTO notes VALUES (50, 'published note', true), (51, 'draft', false)")
    user.execute("UPDATE notes SET published = false WHERE id = 2")
    assert backlog_keys(user, ids["p"]) == [2, 3, 4, 5, 100, 101, 200]
    user.execute("SELECT aidb.run_pipeline('p')")
    user.execute("SELECT aidb.run_pipeline('pf')")
    assert_consistent(user, "p")
    assert_consistent(user, "pf")
    assert metrics(user, "p")["Status"] == "UpToDate"
    user.execute("INSERT INTO live_docs VALUES (6, 'live 6, written under 0.2.0')")
    user.execute("UPDATE live_docs SET body = 'live 1, changed' WHERE id = 1")
    user.execute("DELETE FROM live_docs WHERE id = 2")
    assert assert_consistent(user, "plive") == 5          # at once: no run needed
    user.execute("SELECT aidb.run_pipeline('pv')")       # the view's changes, by hash
    assert assert_consistent(user, "pv") == 7             # 1..10 without 3 (now 200), 4, 5
    write_file(folder, "file2.txt", "file 2, rewritten")
    write_file(folder, "file4.txt", "a fourth file")
    os.remove(os.path.join(folder, "file3.txt"))
    user.execute("SELECT aidb.run_pipeline('pvol')")
    assert_same_vectors(volume_destination(user, "pvol"), expected_volume_destination(folder))
    assert metrics(user, "pvol")["Status"] == "UpToDate"

    # Retrieval with the pipeline's model and operator.
    assert user.execute("SELECT key FROM aidb.retrieve_key('p', 'a new document', 1)"
                        ).fetchone()[0] == "100"
    assert user.execute("SELECT key FROM aidb.retrieve_key('pf', 'published note', 1)"
                        ).fetchone()[0] == "50"

    # A background worker takes p over and drains what comes.
    user.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Background')")
    wait_for(lambda: running_worker(user, "p"), timeout=DRAIN_TIMEOUT, message="p's worker")
    user.execute("INSERT INTO docs SELECT g, 'late document ' || g "
                 "FROM generate_series(300, 340) g")
    wait_for(lambda: pending(user, "p") == 0 and metrics(user, "p")["Status"] == "UpToDate",
             timeout=DRAIN_TIMEOUT, message="the worker to drain p")
    assert assert_consistent(user, "p") == 19 + 2 - 2 + 41
    user.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Disabled')")
    user.close()
    admin.close()


def test_previous_release_sql_refuses_the_new_engine_and_its_worker_backs_off(
        cluster, owner, previous_db, previous_engine, model_server):
    """Between `make install` of a new release and ALTER EXTENSION aidb UPDATE:
    calls fail with a clear error and the fix, a Background pipeline's worker
    records that and backs off (no busy loop, nothing taken from the backlog),
    and the update wakes it to drain everything."""
    dbname = previous_db
    admin, old = previous_release_sessions(cluster, dbname, owner, previous_engine, model_server)
    old.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    old.execute("INSERT INTO docs SELECT g, 'waiting document ' || g FROM generate_series(1, 15) g")
    old.execute(f"""SELECT aidb.create_pipeline('bg', 'docs', 'id', 'body',
        step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('{MODEL}'),
        auto_processing => 'Background', background_sync_interval => '1 second')""")
    pipeline_id, = old.execute("SELECT id FROM aidb.pipeline_registry WHERE name = 'bg'").fetchone()
    old.close()

    # A new session runs the new engine: every entry point refuses, saying why.
    for statement in (f"SELECT aidb.encode_text('{MODEL}', 'x')", "SELECT aidb.run_pipeline('bg')"):
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            admin.execute(statement)
        diag = refused.value.diag
        assert f"version {PREVIOUS}, but the installed aidb engine is version {CURRENT}" \
            in diag.message_primary, diag.message_primary
        assert diag.message_hint == "ALTER EXTENSION aidb UPDATE;"

    # So does capture (this library's C trigger) on 0.1.0's backlog, which
    # belongs to the pipeline's owner: writes to the source wait for the update.
    with session(cluster, dbname, user=owner) as writer:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            writer.execute("INSERT INTO docs VALUES (99, 'written meanwhile')")
    assert refused.value.diag.message_hint == "ALTER EXTENSION aidb UPDATE;"
    assert f"SQL objects of aidb {PREVIOUS}" in refused.value.diag.message_detail

    # The worker (this library, this engine) fails the same way, records it,
    # and backs off: three attempts take at least 1 + 2 seconds of back-off.
    def worker_error():
        return admin.execute(
            "SELECT message, attempts, extract(epoch FROM last_attempt - first_attempt) "
            "FROM aidb.pipeline_error_log WHERE pipeline_id = %s AND source_key IS NULL "
            "AND step = 'worker'", (pipeline_id,)).fetchone()

    message, attempts, seconds = wait_for(
        lambda: (row := worker_error()) is not None and row[1] >= 3 and row,
        timeout=30, message="the worker's third failed attempt")
    assert f"aidb's SQL objects in this database are version {PREVIOUS}" in message
    assert seconds >= 2.5 * (attempts - 1) / 2, (attempts, seconds)
    assert admin.execute('SELECT "worker state" FROM aidb.pipem WHERE pipeline = %s',
                         ('bg',)).fetchone()[0] == "backing off after errors"
    assert backlog_keys(admin, pipeline_id) == list(range(1, 16))
    assert destination_contents(admin, "bg") == {}

    # The update clears that error, which wakes the worker: it drains at once.
    admin.execute("ALTER EXTENSION aidb UPDATE")
    assert worker_error() is None
    with session(cluster, dbname, user=owner) as writer:
        writer.execute("INSERT INTO docs VALUES (99, 'written after the update')")
    wait_for(lambda: pending(admin, "bg") == 0 and metrics(admin, "bg")["Status"] == "UpToDate",
             timeout=DRAIN_TIMEOUT, message="the worker to drain bg after the update")
    assert assert_consistent(admin, "bg") == 16
    admin.execute("SELECT aidb.update_pipeline('bg', auto_processing => 'Disabled')")
    admin.close()


# --- the build step that makes the code part of an upgrade script -------------------------------

UPGRADE_CODE = os.path.join(ROOT, "sql", "upgrade", "code-only.awk")
INSTALL_PARTS = sorted(glob.glob(os.path.join(ROOT, "sql", "ext", "*.sql")))
TABLE = re.compile(r"^CREATE (?:UNLOGGED )?TABLE (aidb\.\w+)", re.M)


def upgrade_code(*parts):
    return subprocess.run(["awk", "-f", UPGRADE_CODE, *parts], capture_output=True, text=True)


def test_upgrade_script_code_leaves_out_the_table_sections():
    result = upgrade_code(*INSTALL_PARTS)
    assert result.returncode == 0, result.stderr
    code = result.stdout
    assert not TABLE.search(code) and not re.search(r"^CREATE (UNIQUE )?INDEX", code, re.M)
    assert "INSERT INTO aidb.model_registry" not in code
    assert "CREATE FUNCTION aidb.create_pipeline(" in code
    assert "CREATE VIEW aidb.pipeline_metrics AS" in code
    assert "CREATE EVENT TRIGGER aidb_follow_source_changes" in code


def test_every_table_of_the_install_script_is_in_the_upgrade():
    """A table that release 0.1.0 lacks must be created by the upgrade script
    (sql/upgrade/): its CREATE TABLE in the install parts sits in a skipped
    section, so the code part never makes it."""
    install = "".join(open(part).read() for part in INSTALL_PARTS)
    previous = open(os.path.join(ROOT, "sql", "versions", f"aidb--{PREVIOUS}.sql")).read()
    steps = "".join(open(os.path.join(ROOT, "sql", "upgrade", f"{PREVIOUS}--{CURRENT}-{step}.sql"))
                    .read() for step in ("pre", "post"))
    missing = set(TABLE.findall(install)) - set(TABLE.findall(previous)) - set(TABLE.findall(steps))
    assert not missing, (f"tables new since {PREVIOUS} that "
                         f"sql/upgrade/{PREVIOUS}--{CURRENT}-*.sql does not create: "
                         f"{sorted(missing)}")


@pytest.mark.parametrize("part, complaint", [
    ("CREATE TABLE aidb.extra (id int);\n", "outside '-- upgrade: skip begin/end'"),
    ("CREATE UNIQUE INDEX extra_id ON aidb.extra (id);\n", "outside '-- upgrade: skip begin/end'"),
    ("DO $$ BEGIN\n    CREATE ROLE extra;\nEND $$;\n", "outside '-- upgrade: skip begin/end'"),
    ("-- upgrade: skip begin\nCREATE TABLE aidb.extra (id int);\n", "ends inside"),
    ("-- upgrade: skip end\n", "without a begin"),
])
def test_upgrade_script_build_refuses_unmarked_table_sections(tmp_path, part, complaint):
    """The build (make) fails, naming the file and line, so that the author of
    the next version is told to mark the section and write its upgrade step."""
    path = tmp_path / "45_extra.sql"
    path.write_text("-- a part\n" + part)
    result = upgrade_code(str(path))
    assert result.returncode != 0
    assert complaint in result.stderr and "45_extra.sql:" in result.stderr, result.stderr


def test_update_refuses_while_user_objects_use_aidb_and_blocks_pipelines_it_cannot_rebuild(
        cluster, owner, previous_db, previous_engine, model_server):
    dbname = previous_db
    admin, old = previous_release_sessions(cluster, dbname, owner, previous_engine, model_server)
    for table in ("kept", "doomed"):
        old.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        old.execute(f"INSERT INTO {table} SELECT g, '{table} ' || g FROM generate_series(1, 5) g")
        old.execute(f"""SELECT aidb.create_pipeline('{table}', '{table}', 'id', 'body',
            step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('{MODEL}'))""")
    # A key of a domain with its own collation: 0.1.0 typed backlog and state
    # keys as the domain, 0.2.0 as its base type with the column's collation.
    old.execute('CREATE DOMAIN code AS text COLLATE "C" CHECK (VALUE <> \'\')')
    old.execute("CREATE TABLE coded (id code PRIMARY KEY, body text)")
    old.execute("INSERT INTO coded SELECT 'k' || g, 'coded ' || g FROM generate_series(1, 5) g")
    old.execute(f"""SELECT aidb.create_pipeline('coded', 'coded', 'id', 'body',
        step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('{MODEL}'))""")
    old.execute("SELECT aidb.run_pipeline('kept')")
    old.execute("DROP TABLE doomed")       # 0.1.0 did not notice
    coded_id, = old.execute("SELECT id FROM aidb.pipeline_registry WHERE name = 'coded'").fetchone()
    old.close()

    # A user's view on an aidb view and a user's function calling an aidb
    # function (its body parsed at creation, so it depends on it).
    admin.execute("CREATE VIEW my_pipelines AS SELECT name FROM aidb.pipelines")
    admin.execute("CREATE FUNCTION my_vector(t text) RETURNS vector LANGUAGE sql "
                  f"BEGIN ATOMIC SELECT aidb.encode_text('{MODEL}', t); END")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as refused:
        admin.execute("ALTER EXTENSION aidb UPDATE")
    detail = refused.value.diag.message_detail
    assert "view my_pipelines" in detail and "function my_vector(text)" in detail, detail
    assert "ALTER EXTENSION aidb UPDATE" in refused.value.diag.message_hint
    assert extension_version(admin) == PREVIOUS
    admin.execute("DROP VIEW my_pipelines")
    admin.execute("DROP FUNCTION my_vector(text)")

    notices = []
    admin.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    admin.execute("ALTER EXTENSION aidb UPDATE")
    assert extension_version(admin) == CURRENT
    warnings = [m for severity, m in notices if severity == "WARNING"]
    assert len(warnings) == 1 and 'aidb pipeline "doomed" could not be rebuilt' in warnings[0], \
        notices
    # The pipeline whose source is gone is blocked, saying why; the other is fine.
    errors = pipeline_errors(admin, "doomed")
    assert [(key, category) for key, category, _ in errors] == [(None, "PipelinePermanent")]
    assert "ALTER EXTENSION aidb UPDATE could not rebuild" in errors[0][2]
    assert "aidb.delete_pipeline('doomed')" in errors[0][2]
    assert metrics(admin, "doomed")["Status"] == "BlockingErrors"
    assert pipeline_errors(admin, "kept") == [] and metrics(admin, "kept")["Status"] == "UpToDate"
    assert pipeline_errors(admin, "coded") == []
    with session(cluster, dbname, user=owner) as user:
        user.execute("INSERT INTO kept VALUES (6, 'kept 6')")
        user.execute("SELECT aidb.run_pipeline('kept')")
        assert assert_consistent(user, "kept") == 6
        user.execute("INSERT INTO coded VALUES ('k6', 'coded 6'), ('K7', 'coded 7')")
        user.execute("DELETE FROM coded WHERE id = 'k1'")
        user.execute("SELECT aidb.run_pipeline('coded')")
        assert assert_consistent(user, "coded") == 6
        assert user.execute(
            "SELECT array_agg(DISTINCT format_type(atttypid, NULL) || ' ' "
            "                 || attcollation::regcollation) "
            "FROM pg_attribute WHERE attname = 'key' AND attrelid IN (SELECT oid FROM pg_class "
            "WHERE relname IN (%s, %s))", (f"_backlog_{coded_id}", f"_state_{coded_id}")
        ).fetchone()[0] == ['text "C"']
        # The way out that the error names works.
        user.execute("SELECT aidb.delete_pipeline('doomed')")
        assert user.execute("SELECT count(*) FROM pg_class WHERE relname ~ %s",
                            (r"^_(backlog|state)_\d+$",)).fetchone()[0] == 4   # kept, coded
    admin.close()


def test_the_release_number_agrees_everywhere():
    """The engine refuses SQL of another version (python/aidb/version_check.py):
    aidb.control, the engine and its package must name the same release, and
    the upgrade script leads to it."""
    control = open(os.path.join(ROOT, "aidb.control")).read()
    engine = open(os.path.join(ROOT, "python", "aidb", "__init__.py")).read()
    package = open(os.path.join(ROOT, "python", "pyproject.toml")).read()
    assert re.search(r"^default_version = '([^']+)'", control, re.M).group(1) == CURRENT
    assert re.search(r'^__version__ = "([^"]+)"', engine, re.M).group(1) == CURRENT
    assert re.search(r'^version = "([^"]+)"', package, re.M).group(1) == CURRENT
    for step in ("pre", "post"):
        assert os.path.exists(os.path.join(ROOT, "sql", "upgrade",
                                           f"{PREVIOUS}--{CURRENT}-{step}.sql"))
    assert os.path.exists(os.path.join(ROOT, "sql", "versions", f"aidb--{PREVIOUS}.sql"))


def test_an_engine_older_than_the_sql_says_to_reconnect(cluster):
    """The other way round: a session that loaded its engine before the
    extension was updated past it (here: the catalog says a later version)."""
    with scratch_database(cluster, "newer_", template="aidb_template") as dbname:
        with session(cluster, dbname) as conn:
            conn.execute("UPDATE pg_extension SET extversion = '99.0.0' WHERE extname = 'aidb'")
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
                conn.execute("SELECT aidb.encode_text('minilm', 'x')")
            diag = refused.value.diag
            assert "version 99.0.0, but the installed aidb engine is the older version " \
                f"{CURRENT}" in diag.message_primary, diag.message_primary
            assert diag.message_hint.startswith("Reconnect"), diag.message_hint
            assert "install aidb 99.0.0" in diag.message_hint


@pytest.fixture
def second_owner(cluster):
    """Another pipeline owner (requested before the database, like `owner`)."""
    role = f"owner2_{uuid.uuid4().hex[:8]}"
    cluster.psql(f"CREATE ROLE {role} LOGIN IN ROLE aidb_users")
    yield role
    cluster.psql(f"DROP ROLE IF EXISTS {role}")


def member_objects_of_pipelines(conn):
    """Per-pipeline objects that are members of the extension (none may be)."""
    return conn.execute(r"""
        SELECT pg_describe_object(d.classid, d.objid, 0) FROM pg_depend d
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'aidb'
        WHERE d.deptype = 'e' AND (
            (d.classid = 'pg_class'::regclass AND EXISTS (SELECT FROM pg_class c
                WHERE c.oid = d.objid AND c.relname ~ '^_(backlog|state)_\d+$'))
            OR (d.classid = 'pg_proc'::regclass AND EXISTS (SELECT FROM pg_proc f
                WHERE f.oid = d.objid AND f.proname ~ '^_[a-z_]+_\d+$'
                  AND f.proname <> '_capture_keys')))""").fetchall()


def test_update_with_id_gaps_other_roles_sources_altered_under_0_1_0_and_a_restored_dump(
        cluster, owner, second_owner, previous_db, previous_engine):
    """A reported failure ("_backlog_3 is a member of an extension") tried
    again: pipelines of two roles, deleted ones leaving gaps in the ids,
    sources shared, a key type and a data column changed under 0.1.0 (which
    noticed nothing), and the same database restored from a dump into a
    0.1.0 database; both update, and no pipeline object stays a member."""
    dbname = previous_db
    admin = session(cluster, dbname)
    old = session(cluster, dbname)
    load_previous_engine(old, previous_engine)

    def create(role, name, source, **options):
        old.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        extra = sql.SQL("").join(sql.SQL(", {} => {}").format(sql.Identifier(k), sql.Literal(v))
                                 for k, v in options.items())
        old.execute(sql.SQL("SELECT aidb.create_pipeline({}, {}, 'id', 'body', "
                            "step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(50)"
                            "{})").format(sql.Literal(name), sql.Literal(source), extra))
        old.execute("RESET ROLE")

    for role in (owner, second_owner):
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    for role, table in ((owner, "t1"), (owner, "t2"), (second_owner, "t3"), (second_owner, "t4")):
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text, other text)")
        admin.execute(f"INSERT INTO {table} SELECT g, '{table} ' || g FROM generate_series(1, 4) g")
        admin.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table),
                                                                   sql.Identifier(role)))
    create(owner, "a", "t1")                                   # 1
    create(owner, "b", "t1", destination="b_dest")             # 2, deleted: a gap
    create(owner, "c", "t2")                                   # 3
    create(second_owner, "d", "t3", auto_processing="Live")    # 4
    create(second_owner, "e", "t3", destination="e_dest")      # 5, deleted
    create(second_owner, "f", "t4")                            # 6: key type changed under 0.1.0
    create(owner, "g", "t2", destination="g_dest")             # 7: shares t2 with c
    old.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    old.execute("SELECT aidb.delete_pipeline('b', drop_destination => true)")
    old.execute("SELECT aidb.run_pipeline('a')")
    old.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(second_owner)))
    old.execute("SELECT aidb.delete_pipeline('e', drop_destination => true)")
    old.execute("RESET ROLE")
    old.close()
    admin.execute("ALTER TABLE t4 ALTER COLUMN id TYPE bigint")
    admin.execute("ALTER TABLE t2 RENAME COLUMN other TO other2")

    dump = subprocess.run([os.path.join(cluster.bindir, "pg_dump"), "-h", "127.0.0.1", "-p",
                           str(cluster.port), "-U", "postgres", dbname],
                          capture_output=True, text=True, check=True).stdout
    with scratch_database(cluster, "upr_") as restored_name:
        cluster.psql(f"CREATE EXTENSION aidb VERSION '{PREVIOUS}' CASCADE", dbname=restored_name)
        # Into a database that has 0.1.0 already (a dump names no version):
        # the dump's CREATE SCHEMA aidb fails, the rest goes on.
        restore = subprocess.run([os.path.join(cluster.bindir, "psql"), "-X", "-q", "-h",
                                  "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                                  "-d", restored_name],
                                 input=dump, capture_output=True, text=True)
        assert [line for line in restore.stderr.splitlines() if line.startswith("ERROR")] == \
            ['ERROR:  schema "aidb" already exists'], restore.stderr[-3000:]
        for name in (dbname, restored_name):
            with session(cluster, name) as conn:
                conn.execute("ALTER EXTENSION aidb UPDATE")
                assert extension_version(conn) == CURRENT
                assert member_objects_of_pipelines(conn) == [], name
                assert conn.execute("SELECT name FROM aidb.pipeline_registry ORDER BY id"
                                    ).fetchall() == [(n,) for n in "acdfg"]
                for pipeline in "acdfg":
                    assert pipeline_errors(conn, pipeline) == [], (name, pipeline)
                for role, pipelines, table in ((owner, "acg", "t1"), (second_owner, "df", "t4")):
                    with session(cluster, name, user=role) as user:
                        user.execute(f"INSERT INTO {table} VALUES (9, '{table} 9')")
                        for pipeline in pipelines:
                            user.execute("SELECT aidb.run_pipeline(%s)", (pipeline,))
                            source, destination = user.execute(
                                "SELECT source, destination FROM aidb.pipelines WHERE name = %s",
                                (pipeline,)).fetchone()
                            assert user.execute(f"SELECT count(DISTINCT source_key) FROM {destination}"
                                                ).fetchone() == user.execute(
                                f"SELECT count(*) FROM {source}").fetchone(), (name, pipeline)
                with pytest.raises(psycopg.errors.DependentObjectsStillExist):
                    conn.execute("DROP EXTENSION aidb")
