"""Leases: how a worker keeps keys across the two transactions of a
pipelined batch (docs/architecture.md, "The batch protocol").

A worker connection has one random 62-bit token for its life, held as a
session-level advisory lock: the lock dies with the connection (crash,
kill, lost network) and a later connection draws another token, so a token
seen in pg_locks means "that very holder is alive". A key's lease is the
token written to its state row; a claimer skips the keys whose token is
alive and takes over those whose holder is gone, at once.
"""

import secrets

from ..sqltext import sql

# The token, split into the two int4 keys of pg_advisory_lock(int4, int4):
# pg_locks shows them as classid and objid, with objsubid = 2.
_TOKEN_BITS = 31

# The tokens of every live holder in this database, as an int8[] (never
# NULL: `<> ALL` of a NULL array would be NULL, and skip every leased key).
# The cast makes `x <> ALL (LIVE_TOKENS)` compare with the array's elements,
# where a bare parenthesised SELECT would be a subquery of one array row.
LIVE_TOKENS = sql("""
    (SELECT COALESCE(pg_catalog.array_agg(
                (l.classid::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32)
                OPERATOR(pg_catalog.|) l.objid::pg_catalog.int8), '{}'::pg_catalog.int8[])
     FROM pg_catalog.pg_locks AS l
     WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.objsubid OPERATOR(pg_catalog.=) 2
       AND l.granted
       AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database AS d
                      WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
    )::pg_catalog.int8[]""")

_TAKE = "SELECT pg_catalog.pg_try_advisory_lock(%s::pg_catalog.int4, %s::pg_catalog.int4) AS ok"


def hold_new_token(db):
    """Draw a token and hold it as a session-level advisory lock on `db`'s
    connection; returns it. A session lock outlives transactions (even one
    that rolls back) and goes only with the session."""
    while True:
        high = secrets.randbelow(2 ** _TOKEN_BITS - 1) + 1     # never 0: no token is 0
        low = secrets.randbelow(2 ** _TOKEN_BITS)
        if db.query(_TAKE, high, low)[0]["ok"]:
            return (high << 32) | low
