"""Who may change aidb objects: members of the role aidb_users (created with
the extension), and superusers. The table privileges behind the functions
enforce the same rule; this check is there to say so clearly."""

from .errors import AidbError, INSUFFICIENT_PRIVILEGE

USERS_ROLE = "aidb_users"

_CHECK = ("SELECT pg_catalog.pg_has_role(current_user, %s, 'MEMBER') AS ok, "
          "pg_catalog.quote_ident(current_user) AS me")


def require_aidb_user(db, action):
    """Raise insufficient_privilege unless the current role may `action`
    (such as "create pipelines")."""
    row = db.query(_CHECK, USERS_ROLE)[0]
    if not row["ok"]:
        raise AidbError(f"permission denied to {action}: role {row['me']} is not a member "
                        f"of {USERS_ROLE}",
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        hint="Ask an administrator for membership: "
                             f"GRANT {USERS_ROLE} TO {row['me']};")
