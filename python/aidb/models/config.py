"""Checks for model configuration values, shared by the providers.

Each check names the model, the setting and the bad value, so that
`create_model` can refuse bad input with an error that says what to fix.
"""

import json
import os
from urllib.parse import urlsplit

from .. import egress
from ..errors import InvalidInput, ModelError, PIPELINE_PERMANENT


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

    def positive_number(self, key, default=None):
        value = self.config.get(key, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise self.invalid(f'"{key}" must be a positive number of seconds, not {_shown(value)}')
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
        self.positive_number("timeout", default_timeout)
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
    return credentials


def resolve_api_key(model_name, credentials):
    """The API key to send: stored, or read from the named environment variable."""
    if "api_key" in credentials:
        return credentials["api_key"]
    env_name = credentials.get("credentials_env")
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise ModelError(f'model "{model_name}": environment variable {env_name} '
                         "is not set in the server's environment",
                         category=PIPELINE_PERMANENT,
                         hint="Set it where PostgreSQL (or the external worker) starts, "
                              "or store the key with replace_credentials => true.")
    return key


def _shown(value):
    """A config value as the user wrote it: JSON, not Python's repr."""
    return json.dumps(value)
