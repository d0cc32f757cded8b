"""Model definitions as stored in aidb.model_registry / aidb.model_credentials."""

import json

from ..errors import AidbError, InvalidInput, DUPLICATE_OBJECT, INSUFFICIENT_PRIVILEGE, \
    UNDEFINED_OBJECT
from .. import egress
from ..privileges import require_aidb_user
from . import validate_model
from .config import CREDENTIALS_ENV_QUERY, check_credentials_env, check_env_key_if_set


def _json(value):
    return json.loads(value) if isinstance(value, str) else (value or {})


def load_definition(db, name):
    """(provider, config, credentials) of model `name`, as the current role may
    see it. Credentials are row-level protected: only the owner reads them."""
    rows = db.query(
        "SELECT m.provider, m.config::text AS config, m.has_credentials, m.owner::text AS owner, "
        "       c.credentials::text AS credentials, aidb._allowed_model_hosts() AS allowed_hosts, "
        "       aidb._allowed_credentials_env() AS allowed_env "
        "FROM aidb.models m LEFT JOIN aidb.model_credentials c ON c.model = m.name "
        "WHERE m.name = %s", name)
    if not rows:
        raise AidbError(f'model "{name}" does not exist', sqlstate=UNDEFINED_OBJECT,
                        hint="See SELECT name FROM aidb.models; create one with aidb.create_model().")
    row = rows[0]
    if row["has_credentials"] and row["credentials"] is None:
        raise AidbError(f'permission denied for the credentials of model "{name}"',
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        detail=f'Only its owner, role {row["owner"]}, can use its credentials.')
    config = _json(row["config"])
    credentials = _json(row["credentials"])
    # Checked at each use too: the settings may have been tightened since.
    egress.check_model_url(name, config.get("url"), row["allowed_hosts"])
    check_credentials_env(name, credentials, row["allowed_env"])
    return row["provider"], config, credentials


def create_model(db, name, provider, config, credentials, replace_credentials):
    """Insert a new model, or with `replace_credentials` swap the credentials of
    an existing one. Every check runs before anything is written."""
    _check_name(name)
    require_aidb_user(db, "create models")
    config = validate_model(name, provider, config, credentials)
    egress.check_model_url(name, config.get("url"), db.query(egress.HOSTS_QUERY)[0]["v"])
    check_credentials_env(name, credentials, db.query(CREDENTIALS_ENV_QUERY)[0]["v"])
    check_env_key_if_set(name, credentials)
    existing = db.query("SELECT provider, config::text AS config, owner::text AS owner, "
                        "pg_catalog.pg_has_role(owner, 'MEMBER') AS is_owner "
                        "FROM aidb.models WHERE name = %s", name)
    if existing and not replace_credentials:
        raise AidbError(f'model "{name}" already exists', sqlstate=DUPLICATE_OBJECT,
                        hint="To change only its credentials, pass replace_credentials => true; "
                             "to change anything else, aidb.delete_model() it first.")
    if existing and not existing[0]["is_owner"]:
        raise AidbError(f'permission denied to replace the credentials of model "{name}"',
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        detail=f'The model belongs to role {existing[0]["owner"]}.')
    if existing:
        _check_same_definition(name, existing[0], provider, config)
        db.execute("DELETE FROM aidb.model_credentials WHERE model = %s", name)
    else:
        db.execute("INSERT INTO aidb.model_registry (name, provider, config) VALUES (%s, %s, %s)",
                   name, provider, config)
    if credentials:
        db.execute("INSERT INTO aidb.model_credentials (model, credentials) VALUES (%s, %s)",
                   name, credentials)
    return config


def _check_name(name):
    if name is None or not name.strip() or len(name) > 63 or not name.isprintable():
        raise InvalidInput(f"invalid model name {name!r}",
                           hint="Use 1 to 63 printable characters.")


def _check_same_definition(name, existing, provider, config):
    if existing["provider"] != provider or _json(existing["config"]) != config:
        raise InvalidInput(f'model "{name}" already exists with another provider or config',
                           hint="replace_credentials => true changes only the credentials; "
                                "to change the rest, aidb.delete_model() it first.")


def load_model(db, cache, name):
    """A ready instance of model `name` from `cache`, sleeping (for backoff)
    the way `db` can be interrupted."""
    provider, config, credentials = load_definition(db, name)
    model = cache.get(name, provider, config, credentials)
    model.use_interruptible_sleep(db.sleep)
    return model
