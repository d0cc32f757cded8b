"""Entry points of the extension's PL/Python functions.

Each SQL function body is two lines: make sure the engine is loaded, then call
the function of the same name here. Errors meant for the user (AidbError)
become SQL errors with their detail, hint and SQLSTATE; anything else is an
internal error whose text is redacted before it reaches a client or the log.
"""

import functools
import json

import plpy

from .db.plpy_db import PlpyDatabase
from .errors import AidbError
from .models import ModelCache
from .models import store as model_store
from .redact import redact

db = PlpyDatabase()
models = ModelCache()


def sql_entry(function):
    """Turn engine exceptions into PostgreSQL errors."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except plpy.SPIError:
            raise
        except AidbError as exc:
            extra = {"detail": exc.detail and redact(exc.detail), "hint": exc.hint}
            plpy.error(redact(exc.message), sqlstate=exc.sqlstate,
                       **{key: value for key, value in extra.items() if value})
        except Exception as exc:  # noqa: BLE001 — the last line of defence
            plpy.error(f"aidb internal error: {type(exc).__name__}: {redact(exc)}",
                       hint="This is a bug in aidb; please report it with the statement.")

    return wrapper


def vector_literal(values):
    """pgvector's text form of a vector."""
    return "[" + ",".join(map(str, values)) + "]"


def model_for(name):
    """A ready model instance, with PostgreSQL's interruptible sleep for backoff."""
    provider, config, credentials = model_store.load_definition(db, name)
    model = models.get(name, provider, config, credentials)
    model.sleep = db.sleep
    return model


@sql_entry
def create_model(name, provider, config, credentials, replace_credentials):
    model_store.create_model(db, name, provider, json.loads(config or "{}"),
                             json.loads(credentials or "{}"), replace_credentials)


@sql_entry
def encode_text(model_name, text):
    if text is None:
        return None
    return vector_literal(model_for(model_name).embed([text])[0])


@sql_entry
def encode_text_batch(model_name, texts):
    if texts is None:
        return None
    present = [t for t in texts if t is not None]
    vectors = iter(model_for(model_name).embed(present))
    return [None if t is None else vector_literal(next(vectors)) for t in texts]
