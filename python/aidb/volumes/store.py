"""Volume definitions as stored in aidb.volume_registry / aidb.volume_credentials.

Reading a volume is reading data, so only members of the volume's owner role
(and superusers) may open it, much as a table's rows need SELECT; the
credentials are row-level protected the same way (sql/ext/60_volumes.sql).
"""

import json

from .. import egress
from ..errors import AidbError, InvalidInput, DUPLICATE_OBJECT, INSUFFICIENT_PRIVILEGE, \
    UNDEFINED_OBJECT
from ..privileges import require_aidb_user
from . import open_volume, parse_volume_uri, validate_volume
from .file_volume import parse_allowed_roots

_DEFINITION = """
SELECT v.uri, v.options::text AS options, v.owner::text AS owner,
       pg_catalog.pg_has_role(v.owner, 'MEMBER') AS may_use,
       c.credentials::text AS credentials
FROM aidb.volumes v LEFT JOIN aidb.volume_credentials c ON c.volume = v.name
WHERE v.name = %s"""


def create_volume(db, name, uri, options):
    """Register a volume. Every check runs before anything is written; a
    local directory must be allowed now (and is checked again at each use)."""
    _check_name(name)
    require_aidb_user(db, "create volumes")
    public, credentials = validate_volume(name, uri, options)
    egress.check_url(f'volume "{name}"', public.get("endpoint_url"),
                     db.query(egress.HOSTS_QUERY)[0]["v"])
    if parse_volume_uri(uri, name)[0] == "file":
        open_volume(uri, public, credentials, allowed_roots(db), name=name)
    if db.query("SELECT FROM aidb.volume_registry WHERE name = %s", name):
        raise AidbError(f'volume "{name}" already exists', sqlstate=DUPLICATE_OBJECT,
                        hint="To change it, aidb.delete_volume() it first.")
    db.execute("INSERT INTO aidb.volume_registry (name, uri, options) VALUES (%s, %s, %s)",
               name, uri, public)
    if credentials:
        db.execute("INSERT INTO aidb.volume_credentials (volume, credentials) VALUES (%s, %s)",
                   name, credentials)


def load_definition(db, name):
    """(uri, options, credentials) of volume `name`, for a role that may use it."""
    rows = db.query(_DEFINITION, name)
    if not rows:
        raise AidbError(f'volume "{name}" does not exist', sqlstate=UNDEFINED_OBJECT,
                        hint="See SELECT name, uri FROM aidb.volumes; create one with "
                             "aidb.create_volume().")
    row = rows[0]
    if not row["may_use"]:
        raise AidbError(f'permission denied to read volume "{name}"',
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        detail=f'The volume belongs to role {row["owner"]}; only its members '
                               "may read it.")
    credentials = json.loads(row["credentials"]) if row["credentials"] else {}
    return row["uri"], json.loads(row["options"]), credentials


def allowed_roots(db):
    """The directories of aidb.allowed_local_paths, as the C module holds the
    setting (never a placeholder a non-superuser could have SET)."""
    return parse_allowed_roots(db.query(egress.PATHS_QUERY)[0]["v"])


def open_named_volume(db, name):
    """A ready Volume for the stored volume `name`."""
    uri, options, credentials = load_definition(db, name)
    # An S3-compatible endpoint is egress like a model URL: same allowlist.
    egress.check_url(f'volume "{name}"', options.get("endpoint_url"),
                     db.query(egress.HOSTS_QUERY)[0]["v"])
    return open_volume(uri, options, credentials, allowed_roots(db), name=name)


def list_volume(db, name):
    """aidb.list_volume's rows: every object of the volume, in key order."""
    for found in open_named_volume(db, name).list():
        yield {"key": found.key, "size": found.size, "last_modified": found.last_modified,
               "etag": found.etag}


def _check_name(name):
    if name is None or not name.strip() or len(name) > 63 or not name.isprintable():
        raise InvalidInput(f"invalid volume name {name!r}", hint="Use 1 to 63 printable characters.")
