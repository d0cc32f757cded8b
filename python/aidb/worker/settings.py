"""Worker settings from the command line, AIDB_WORKER_* environment variables
and a .env file (the command line wins, then the environment, then .env)."""

import os
import re

import dotenv

from ..redact import MASK, Redactor, redact

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text):
    """Seconds from '300', '45s', '5m', '1h', '2d', '500ms'; ValueError otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (use seconds or e.g. 45s, 5m, 1h)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {text!r}")
    return seconds


def load_dotenv(path=".env"):
    """Set variables from a .env file in the current directory unless they
    are already set. python-dotenv parses it (quotes, escapes, `export`,
    comments); ${VAR} references are kept as written, not expanded: a
    password may contain them."""
    dotenv.load_dotenv(path, override=False, interpolate=False)


def env(name, default=None):
    """The value of AIDB_WORKER_<NAME>, or `default`."""
    return os.environ.get(f"AIDB_WORKER_{name}", default)


def redact_url(url):
    """A connection string (URL or key=value) without its password, for
    messages: user:PASSWORD@ in a URL, ?password= and password= are masked."""
    return redact_db_error(re.sub(r"(://[^:/@]*:)[^@]*@", rf"\1{MASK}@", url or ""), url)


def redact_db_error(text, url):
    """`text` (e.g. a driver's message about connecting to `url`; a malformed
    connection string can be echoed in part) without the password of `url`."""
    from psycopg.conninfo import conninfo_to_dict
    try:
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 — unparsable: nothing more to mask than redact() finds
        params = {}
    password = params.get("password")
    # A password that is also the user's name cannot be hidden; masking it
    # would only garble the message.
    if password and password != params.get("user"):
        # In every form: a URL carries it percent-encoded.
        text = Redactor([password]).redact(text.replace(password, MASK))
    return redact(text)
