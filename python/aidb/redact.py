"""Keeps secrets out of every message the engine emits.

Known secrets (the keys the engine itself used) are replaced wherever they
appear; anything shaped like a bearer token or an API key is masked too, in
case a provider echoes a key we never saw.
"""

import re

MASK = "[REDACTED]"

_KEY_SHAPES = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"          # Authorization: Bearer …
    r"|\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"                   # OpenAI-style keys
    r"|((?:api[_-]?key|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{4,}"
)

_known_secrets = set()


def remember_secret(secret):
    """Register a secret so that every later `redact` masks it."""
    if secret and len(secret) >= 4:
        _known_secrets.add(secret)


def redact(text):
    """Return `text` with every known secret and key-shaped token masked."""
    text = str(text)
    for secret in _known_secrets:
        text = text.replace(secret, MASK)
    return _KEY_SHAPES.sub(_mask_match, text)


def _mask_match(match):
    prefix = match.group(1) or match.group(3) or ""
    return prefix + MASK
