"""Keeps secrets out of every message the engine emits.

Known secrets (the keys the engine itself used) are replaced wherever they
appear, in every form a message can carry them: as they are, as Python
shows them (repr of the text or of its bytes, as in "Illegal header value
b'Bearer ...'"), backslash-escaped, JSON-escaped, URL-encoded, and split
across lines. Anything shaped like a bearer token or an API key is masked
too, in case a provider echoes a key we never saw.

Cut messages short only after redacting them: a cut can leave part of a
secret that no longer matches.
"""

import json
import re
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"

_KEY_SHAPES = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"          # Authorization: Bearer …
    r"|\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"                   # OpenAI-style keys
    r"|((?:api[_-]?key|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{4,}"
)

# What may stand between two characters of a secret that a message wrapped:
# a line break, with the indentation and continuation backslash around it.
_LINE_SPLIT = r"(?:[ \t]*\\?\r?\n[ \t]*)?"


class Redactor:
    """Masks a set of known secrets (in every form) and key-shaped tokens."""

    def __init__(self, secrets=()):
        self._secrets = set()
        self._pattern = None        # built from _secrets when first needed
        for secret in secrets:
            self.remember(secret)

    def remember(self, secret):
        if isinstance(secret, str) and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.add(secret)
            self._pattern = None

    def redact(self, text):
        text = str(text)
        pattern = self._secrets_pattern()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        return _KEY_SHAPES.sub(_mask_match, text)

    def _secrets_pattern(self):
        """One regular expression for every form of every known secret,
        longest first (so that a form containing another is masked whole)."""
        pattern = self._pattern
        if pattern is None and self._secrets:
            forms = {form for secret in list(self._secrets) for form in secret_forms(secret)}
            pattern = self._pattern = re.compile("|".join(
                _LINE_SPLIT.join(re.escape(char) for char in form)
                for form in sorted(forms, key=len, reverse=True)))
        return pattern


# The process's own: every key the engine used in this process.
_process_redactor = Redactor()


def remember_secret(secret):
    """Register a secret so that every later `redact` masks it."""
    _process_redactor.remember(secret)


def redact(text):
    """Return `text` with every known secret, in any of its forms, and every
    key-shaped token masked."""
    return _process_redactor.redact(text)


def secret_forms(secret):
    """The spellings of `secret` that an error message may contain: each
    escaping below, and each escaping of those (the repr of a JSON body, the
    JSON of a bytes repr)."""
    first = {form for escape in _ESCAPES for form in escape(secret)}
    second = {form for inner in first for escape in _ESCAPES for form in escape(inner)}
    return {form for form in first | second if form}


def _python_reprs(text):
    """The inside of repr() and ascii(): Python escapes a quote ' only when
    the whole string holds a " too, so both spellings can appear."""
    for shown in (repr, ascii):
        yield from _with_and_without_quote_escapes(shown(text + '"')[1:-2])


def _bytes_reprs(text):
    """b'...' as Python shows the text's bytes (h11 quotes a refused header so)."""
    for encoding in ("utf-8", "latin-1"):
        try:
            encoded = text.encode(encoding)
        except UnicodeEncodeError:
            continue
        yield from _with_and_without_quote_escapes(repr(encoded + b'"')[2:-2])


def _with_and_without_quote_escapes(escaped):
    """`escaped` (every ' written \\'), and the same with the quotes bare."""
    yield escaped
    yield re.sub(r"\\(.)", lambda m: "'" if m.group(1) == "'" else m.group(), escaped)


def _url_encodings(text):
    """%XX as quote() and quote_plus() write them, and in lower case."""
    try:
        encodings = [quote(text, safe=""), quote(text), quote_plus(text),
                     quote_plus(text, safe="")]
    except UnicodeEncodeError:      # a lone surrogate: no URL can carry it
        return
    for encoded in encodings:
        yield encoded
        yield re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)


_ESCAPES = (
    lambda text: [text],
    _python_reprs,
    lambda text: [text.encode("unicode_escape").decode("ascii")],
    lambda text: [json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]],
    _bytes_reprs,
    _url_encodings,
)


def _mask_match(match):
    prefix = match.group(1) or match.group(3) or ""
    return prefix + MASK
