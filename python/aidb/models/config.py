"""Checks for model configuration values, shared by the providers.

Each check names the model, the setting and the bad value, so that
`create_model` can refuse bad input with an error that says what to fix.
"""

import json
import os
import re
from urllib.parse import urlsplit

from .. import egress
from ..errors import (InvalidInput, ModelError, INSUFFICIENT_PRIVILEGE, INVALID_PARAMETER,
                      PIPELINE_PERMANENT)
from ..redact import remember_secret

# The variables a model's credentials_env may name: set by a superuser only,
# read through the C module (never a session placeholder), like egress.py's.
CREDENTIALS_ENV_SETTING = "aidb.allowed_credentials_env"
CREDENTIALS_ENV_QUERY = "SELECT aidb._allowed_credentials_env() AS v"
# A model request that takes longer than an hour is not coming back; larger
# values (1e308) would overflow the HTTP clients' own deadline arithmetic.
MAX_TIMEOUT_SECONDS = 3600

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigChecker:
    """Validates one model's `config` against the settings its provider knows."""

    def __init__(self, model_name, provider, config, known):
        if not isinstance(config, dict):
            raise InvalidInput(f'model "{model_name}": config must be a JSON object, '
                               f"not {type(config).__name__}")
        self.model_name = model_name
        self.provider = provider
        self.config = dict(config)
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise self.invalid(f'unknown setting "{unknown[0]}" for provider {provider}',
                                hint="Known settings: " + ", ".join(sorted(known)) + ".")

    def invalid(self, message, hint=None):
        return InvalidInput(f'model "{self.model_name}": {message}', hint=hint)

    def text(self, key, default=None, required=False):
        value = self.config.get(key, default)
        if value is None and required:
            raise self.invalid(f'config needs "{key}"',
                                hint=f'For example: config => \'{{"{key}": "..."}}\'.')
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self.invalid(f'"{key}" must be a non-empty string, not {_shown(value)}')
        self._set(key, value)
        return value

    def positive_int(self, key, default=None, maximum=None, minimum=1):
        value = self.config.get(key, default)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
                raise self.invalid(f'"{key}" must be {kind}, not {_shown(value)}')
            if maximum is not None and value > maximum:
                raise self.invalid(f'"{key}" must be at most {maximum}, not {_shown(value)}')
        self._set(key, value)
        return value

    def positive_number(self, key, default=None, maximum=None):
        value = self.config.get(key, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value <= (maximum or float("inf"))):
            allowed = (f"a number of seconds greater than 0 and at most {maximum}" if maximum
                       else "a positive number of seconds")
            raise self.invalid(f'"{key}" must be {allowed}, not {_shown(value)}')
        self._set(key, value)
        return value

    def url(self, key, default):
        value = self.text(key, default)
        try:
            parts = urlsplit(value)
        except ValueError:          # such as an unclosed IPv6 bracket
            raise self.invalid(f'"{key}" is not a valid URL: {_shown(value)}') from None
        if "@" in parts.netloc:
            # Not shown: what precedes the @ may well be a password. Parsers
            # also disagree about such URLs, which would defeat the egress
            # allowlist (egress.py).
            raise self.invalid(f'"{key}" must not contain user info (user:password@host)',
                               hint="Put an API key in credentials, never in the URL.")
        if (parts.scheme not in ("http", "https") or not parts.hostname
                or egress.url_host(value) is None):
            raise self.invalid(f'"{key}" must be an http:// or https:// URL, not {_shown(value)}')
        try:
            parts.port
        except ValueError:
            raise self.invalid(f'"{key}" has an invalid port: {_shown(value)}') from None
        self._set(key, value.rstrip("/"))
        return value

    def remote_endpoint(self, default_url, default_timeout):
        """The settings every HTTP provider shares: model, url, timeout, retries."""
        self.text("model", required=True)
        self.url("url", default_url)
        self.positive_number("timeout", default_timeout, maximum=MAX_TIMEOUT_SECONDS)
        self.positive_int("max_retries", 5, maximum=20, minimum=0)

    def embedding_batches(self, default_batch_size, default_concurrency):
        """The settings of remote embedding providers: size, batching, concurrency."""
        self.positive_int("dimensions", maximum=16000)
        self.positive_int("max_batch_size", default_batch_size, maximum=2048)
        self.positive_int("max_concurrent_requests", default_concurrency, maximum=64)

    def _set(self, key, value):
        if value is not None:
            self.config[key] = value


def check_credentials(model_name, credentials, allowed=("api_key", "credentials_env")):
    """Credentials hold an `api_key`, or `credentials_env` naming a server
    environment variable that holds it."""
    if not isinstance(credentials, dict):
        raise InvalidInput(f'model "{model_name}": credentials must be a JSON object')
    unknown = sorted(set(credentials) - set(allowed))
    if unknown:
        raise InvalidInput(f'model "{model_name}": unknown credential "{unknown[0]}"',
                           hint="Known credentials: " + ", ".join(allowed) + ".")
    for key, value in credentials.items():
        if not isinstance(value, str) or not value:
            raise InvalidInput(f'model "{model_name}": credential "{key}" must be a non-empty string')
    api_key = credentials.get("api_key")
    remember_secret(api_key)    # from now on, masked in every message of this process
    problem = api_key and unsendable_key(api_key)
    if problem:
        raise InvalidInput(f'model "{model_name}": the api_key cannot be sent in an HTTP header: '
                           f"{problem}",
                           hint="An API key is printable ASCII without spaces; check for a "
                                "line break or a space pasted along with it.")
    env_name = credentials.get("credentials_env")
    if env_name is not None and not _VARIABLE_NAME.fullmatch(env_name):
        # Not shown: a key pasted here by mistake must not reach the log.
        raise InvalidInput(f'model "{model_name}": credentials_env must name an environment '
                           "variable (letters, digits and _, not starting with a digit)",
                           hint='Put the key itself under "api_key".')
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


def _shown(value):
    """A config value as the user wrote it: JSON, not Python's repr."""
    return json.dumps(value)
