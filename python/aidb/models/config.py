"""Model options and credentials: the declarations the providers share
(checked by aidb.options), and the checks of API keys and of the
environment variables credentials_env may name.
"""

import os

from ..errors import (InvalidInput, ModelError, INSUFFICIENT_PRIVILEGE, INVALID_PARAMETER,
                      PIPELINE_PERMANENT)
from ..options import Option, check_options, show_value
from ..redact import remember_secret

# The variables a model's credentials_env may name: set by a superuser only,
# read through the C module (never a session placeholder), like egress.py's.
CREDENTIALS_ENV_SETTING = "aidb.allowed_credentials_env"
CREDENTIALS_ENV_QUERY = "SELECT aidb._allowed_credentials_env() AS v"
# A model request that takes longer than an hour is not coming back; larger
# values (1e308) would overflow the HTTP clients' own deadline arithmetic.
MAX_TIMEOUT_SECONDS = 3600


def remote_endpoint_options(default_url, default_timeout):
    """The options every HTTP provider shares: model, url, timeout, retries."""
    return (
        Option("model", "string", "The provider's model name.", required=True,
               example="text-embedding-3-small"),
        Option("url", "url", "The API's base URL.", default=default_url),
        Option("timeout", "number", "Seconds to wait for one request.", default=default_timeout,
               minimum=0, above_minimum=True, maximum=MAX_TIMEOUT_SECONDS, unit="seconds"),
        Option("max_retries", "integer", "Retries of a failed request (backoff, Retry-After).",
               default=5, minimum=0, maximum=20),
    )


def embedding_batch_options(default_batch_size, default_concurrency):
    """The options of remote embedding providers: size, batching, concurrency."""
    return (
        Option("dimensions", "integer", "Output dimensions (asked of the model if it can).",
               minimum=1, maximum=16000),
        Option("max_batch_size", "integer", "Texts per request.", default=default_batch_size,
               minimum=1, maximum=2048),
        Option("max_concurrent_requests", "integer", "Requests in flight at once per process.",
               default=default_concurrency, minimum=1, maximum=64),
    )


# What create_model's credentials may hold (both are secrets: never shown).
CREDENTIALS = (
    Option("api_key", "string", "The API key, sent as a bearer token.", secret=True),
    Option("credentials_env", "string",
           "Name of a server environment variable holding the key (allowed by "
           "aidb.allowed_credentials_env).", secret=True, pattern=r"[A-Za-z_][A-Za-z0-9_]*",
           pattern_says="the name of an environment variable (letters, digits and _, "
                        'not starting with a digit; a key itself goes under "api_key")'),
)


def check_config(model_name, provider, config, declared):
    """A model's config checked against its provider's declared options;
    options that are absent and have no default are left out."""
    if not isinstance(config, dict):
        raise InvalidInput(f'model "{model_name}": config must be a JSON object, '
                           f"got {show_value(config)}")
    return check_options(f'model "{model_name}"', config, declared,
                         scope=f"for provider {provider}", keep_absent=False)


def model_invalid(model_name, message, hint=None):
    """An InvalidInput about model `model_name` that no declaration covers."""
    return InvalidInput(f'model "{model_name}": {message}', hint=hint)


def check_credentials(model_name, credentials):
    """Credentials hold an `api_key`, or `credentials_env` naming a server
    environment variable that holds it; never shown in an error."""
    checked = check_options(f'model "{model_name}"', credentials, CREDENTIALS, noun="credential",
                            keep_absent=False)
    api_key = checked.get("api_key")
    remember_secret(api_key)    # from now on, masked in every message of this process
    problem = api_key and unsendable_key(api_key)
    if problem:
        raise InvalidInput(f'model "{model_name}": the api_key cannot be sent in an HTTP header: '
                           f"{problem}",
                           hint="An API key is printable ASCII without spaces; check for a "
                                "line break or a space pasted along with it.")
    return credentials


def check_credentials_env(model_name, credentials, allowed_setting):
    """Refuse (PipelinePermanent: a pipeline using the model blocks) a
    credentials_env naming a variable that `allowed_setting`, the value of
    aidb.allowed_credentials_env, leaves out. Without it any aidb user could
    have any server variable sent as a bearer token to a host of their choice."""
    env_name = (credentials or {}).get("credentials_env")
    if env_name is None or env_name in allowed_credentials_env(allowed_setting):
        return
    shown = f'"{allowed_setting}"' if (allowed_setting or "").strip() else "empty"
    raise ModelError(f'model "{model_name}": environment variable {env_name} is not allowed '
                     f"by {CREDENTIALS_ENV_SETTING}",
                     sqlstate=INSUFFICIENT_PRIVILEGE, category=PIPELINE_PERMANENT,
                     detail=f"{CREDENTIALS_ENV_SETTING} is {shown}.",
                     hint=f"A superuser can allow it (ALTER SYSTEM SET {CREDENTIALS_ENV_SETTING} "
                          f"= '{env_name}'; SELECT pg_reload_conf()), or give the key itself: "
                          """credentials => '{"api_key": "..."}'.""")


def allowed_credentials_env(value):
    """The variable names of aidb.allowed_credentials_env (comma-separated;
    exact names, no wildcards: each one is a decision)."""
    return {name.strip() for name in (value or "").split(",") if name.strip()}


def resolve_api_key(model_name, credentials):
    """The API key to send: stored, or read from the named environment
    variable; registered for redaction, and refused (PipelinePermanent, never
    retried) if an HTTP client could not send it."""
    if "api_key" in credentials:
        key = credentials["api_key"]
        where, fix = "its api_key", "Give the key again with replace_credentials => true."
    elif credentials.get("credentials_env") is not None:
        env_name = credentials["credentials_env"]
        key = os.environ.get(env_name)
        if not key:
            raise ModelError(f'model "{model_name}": environment variable {env_name} '
                             "is not set in the server's environment",
                             category=PIPELINE_PERMANENT,
                             hint="Set it where PostgreSQL (or the external worker) starts, "
                                  "or store the key with replace_credentials => true.")
        where = f"environment variable {env_name}"
        fix = (f"Fix {env_name} where PostgreSQL (or the external worker) starts: "
               "it must hold the key alone.")
    else:
        return None
    remember_secret(key)
    problem = unsendable_key(key)
    if problem:
        raise ModelError(f'model "{model_name}": the API key in {where} cannot be sent '
                         f"in an HTTP header: {problem}",
                         sqlstate=INVALID_PARAMETER, category=PIPELINE_PERMANENT, hint=fix)
    return key


def check_env_key_if_set(model_name, credentials):
    """At create_model: the variable credentials_env names, if the server has
    it, must hold a key that can be sent (one not set yet may be set before
    the model's first use, and is checked then)."""
    env_name = credentials.get("credentials_env")
    if env_name and "api_key" not in credentials and os.environ.get(env_name):
        resolve_api_key(model_name, credentials)


def unsendable_key(key):
    """Why `key` cannot go in an Authorization header, or None. HTTP clients
    refuse line breaks and most control characters (h11 echoes the header
    in its error) and httpx encodes headers as ASCII; an API key is
    printable ASCII without spaces, so anything else is a pasting mistake.
    Only the position and the kind of character are told, never the key."""
    for position, char in enumerate(key, 1):
        if not "\x21" <= char <= "\x7e":
            return f"character {position} of {len(key)} is {_kind_of(char)}"
    return None


def _kind_of(char):
    if char in "\r\n":
        return "a line break"
    if char in " \t":
        return "a space or tab"
    if char < " " or char == "\x7f":
        return "a control character"
    return "not ASCII"

