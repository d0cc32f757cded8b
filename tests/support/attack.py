"""Roles and planted code for the hostile security tests (tests/test_attack_*.py).

`Cast` makes the people of the threat model as real login roles in a
database: an attacker (a member of aidb_users who owns pipelines), a victim
(another aidb user), a reader (no aidb membership) and a login role with
nothing; the cluster's superuser is `postgres`. `plant_spy` gives the
attacker a function, `spy(tag)`, that does what hostile code would do where
it runs (tries to make the attacker superuser, to change role back to the
session's user) and records where it ran: current_user, session_user,
whether that role is a superuser, and which of its escalations worked. A
test makes someone act on the attacker's pipelines, then reads the record. `spy_planned()` is the
IMMUTABLE variant, which the planner itself runs.
"""
from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .common import scratch_database  # noqa: F401 — the test modules use it

SUPERUSER = "postgres"

# The spy's escalation attempts, each in its own block: what worked is listed.
SPY_BODY = """
DECLARE
    worked text[] := '{}';
BEGIN
    BEGIN
        EXECUTE pg_catalog.format('ALTER ROLE %%I SUPERUSER', %(attacker)s);
        worked := worked || 'ALTER ROLE SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        EXECUTE pg_catalog.format('SET ROLE %%I', %(superuser)s);
        worked := worked || 'SET ROLE';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        RESET ROLE;
        IF current_user <> %(attacker)s THEN worked := worked || 'RESET ROLE'; END IF;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        PERFORM pg_catalog.set_config('role', %(superuser)s, true);
        worked := worked || 'set_config(role)';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        EXECUTE pg_catalog.format('SET SESSION AUTHORIZATION %%I', %(superuser)s);
        worked := worked || 'SET SESSION AUTHORIZATION';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    -- Sequences are not transactional: a run in a savepoint rolled back
    -- afterwards (a batch reads the source so) is counted all the same.
    PERFORM pg_catalog.nextval(%(ran)s);
    IF current_user <> %(attacker)s OR worked <> '{}'
       OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        PERFORM pg_catalog.nextval(%(ran_wrongly)s);
    END IF;
    INSERT INTO %(seen)s (tag, current_role_, session_role, superuser, escalated)
    VALUES (tag, current_user, session_user,
            (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), worked);
    RETURN true;
END
"""


@dataclass
class Cast:
    cluster: object
    dbname: str
    attacker: str
    victim: str
    reader: str
    nobody: str

    def dsn(self, role=SUPERUSER):
        return self.cluster.dsn(self.dbname, user=role)

    @contextlib.contextmanager
    def session(self, role=SUPERUSER, **kwargs):
        with psycopg.connect(self.dsn(role), autocommit=True, **kwargs) as connection:
            yield connection

    def roles(self):
        return [self.attacker, self.victim, self.reader, self.nobody]


def make_cast(cluster, dbname):
    """The four roles (unique names), with schemas for attacker and victim;
    `public` is writable by everyone, as before PostgreSQL 15 (the setting
    that makes search_path attacks possible). drop_roles() removes the roles
    once the database is gone."""
    suffix = uuid.uuid4().hex[:8]
    cast = Cast(cluster, dbname, f"attacker_{suffix}", f"victim_{suffix}", f"reader_{suffix}",
                f"nobody_{suffix}")
    cluster.psql(f"CREATE ROLE {cast.attacker} LOGIN IN ROLE aidb_users; "
                 f"CREATE ROLE {cast.victim} LOGIN IN ROLE aidb_users; "
                 f"CREATE ROLE {cast.reader} LOGIN; CREATE ROLE {cast.nobody} LOGIN")
    cluster.psql(f"CREATE SCHEMA AUTHORIZATION {cast.attacker}; "
                 f"CREATE SCHEMA AUTHORIZATION {cast.victim}; "
                 "GRANT CREATE ON SCHEMA public TO PUBLIC", dbname=dbname)
    return cast


def drop_roles(cluster, cast):
    for role in cast.roles():
        cluster.psql(f"DROP ROLE IF EXISTS {role}")


def plant_spy(attacker_conn, attacker):
    """The attacker's schema gets table `seen` (anyone may add rows, the
    attacker reads them) and function `spy(tag)`, executable by anyone."""
    schema = sql.Identifier(attacker)
    seen = sql.SQL("{}.seen").format(schema)
    attacker_conn.execute(sql.SQL(
        "CREATE TABLE {} (tag text, current_role_ name, session_role name, superuser boolean, "
        "escalated text[], at timestamptz DEFAULT pg_catalog.clock_timestamp())").format(seen))
    attacker_conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(schema))
    attacker_conn.execute(sql.SQL("GRANT INSERT ON {} TO PUBLIC").format(seen))
    for sequence in ("ran", "ran_wrongly"):
        name = sql.SQL("{}.{}").format(schema, sql.Identifier(sequence))
        attacker_conn.execute(sql.SQL("CREATE SEQUENCE {}").format(name))
        attacker_conn.execute(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO PUBLIC").format(name))
    body = SPY_BODY % {"attacker": sql.Literal(attacker).as_string(attacker_conn),
                       "ran": sql.Literal(f"{attacker}.ran").as_string(attacker_conn),
                       "ran_wrongly": sql.Literal(f"{attacker}.ran_wrongly").as_string(attacker_conn),
                       "superuser": sql.Literal(SUPERUSER).as_string(attacker_conn),
                       "seen": seen.as_string(attacker_conn)}
    attacker_conn.execute(sql.SQL(
        "CREATE FUNCTION {}.spy(tag text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS {}").format(
        schema, sql.Literal(body)))
    attacker_conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}.spy(text) TO PUBLIC").format(schema))
    # spy_planned(): IMMUTABLE, so the planner runs it while it plans a query
    # that calls it with constants (it can only count, not record).
    attacker_conn.execute(sql.SQL("""
        CREATE FUNCTION {s}.spy_planned() RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN
            PERFORM pg_catalog.nextval({ran});
            IF current_user <> {attacker} THEN PERFORM pg_catalog.nextval({wrongly}); END IF;
            RETURN true;
        END $$""").format(s=schema, ran=sql.Literal(f"{attacker}.ran"),
                          wrongly=sql.Literal(f"{attacker}.ran_wrongly"),
                          attacker=sql.Literal(attacker)))
    attacker_conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}.spy_planned() TO PUBLIC")
                          .format(schema))


def seen_rows(admin, attacker, clear=True):
    """[(tag, current_user, session_user, superuser, escalated)] the spy recorded
    (in committed transactions)."""
    seen = sql.SQL("{}.seen").format(sql.Identifier(attacker))
    rows = admin.execute(sql.SQL("SELECT tag, current_role_::text, session_role::text, superuser, "
                                 "escalated FROM {} ORDER BY at").format(seen)).fetchall()
    if clear:
        admin.execute(sql.SQL("TRUNCATE {}").format(seen))
    return rows


def spy_counts(admin, attacker, clear=True):
    """(runs, runs not as the attacker or with an escalation that worked),
    counted even in transactions that were rolled back."""
    counts = []
    for sequence in ("ran", "ran_wrongly"):
        name = sql.SQL("{}.{}").format(sql.Identifier(attacker), sql.Identifier(sequence))
        value, called = admin.execute(sql.SQL("SELECT last_value, is_called FROM {}")
                                      .format(name)).fetchone()
        counts.append(value if called else 0)
        if clear:
            admin.execute(sql.SQL("ALTER SEQUENCE {} RESTART").format(name))
    return tuple(counts)


def is_superuser(admin, role):
    return admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0]
