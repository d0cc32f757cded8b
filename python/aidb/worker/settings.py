"""Worker settings from the command line, AIDB_WORKER_* environment variables
and a .env file (the command line wins, then the environment, then .env)."""

import os
import re

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
    """Set variables from a .env file (KEY=VALUE lines) unless already set."""
    if not os.path.isfile(path):
        return
    with open(path) as env_file:
        for line in env_file:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            key = key.strip().removeprefix("export ").strip()
            os.environ.setdefault(key, value.strip().strip("'\""))


def env(name, default=None):
    """The value of AIDB_WORKER_<NAME>, or `default`."""
    return os.environ.get(f"AIDB_WORKER_{name}", default)


def redact_url(url):
    """A connection URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url or "")
