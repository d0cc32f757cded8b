"""Options of models, credentials, steps and volumes: declared as data, checked
by one checker, refused in one style.

A declaration (`Option`) says an option's name, type, default, allowed values
or range, whether it is required or secret, and what it does. The checker
(`check_options`) reads a JSON object against a tuple of declarations and
returns it normalised (defaults filled in); every refusal names the object,
the option, the value and what is allowed:

    model "m1": option "timeout" must be a number of seconds greater than 0
    and at most 3600, got 1e308

A secret option's value is never shown. Checks that involve several options
or a lookup (a bundled model's name, overlap < desired length) stay with
their owner and refuse through `OptionChecker.refuse` in the same style.

`declarations()` lists every declaration, for the docs check
(tests/test_reference.py holds docs/reference.md to it).
"""

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import egress
from .errors import InvalidInput

TYPES = ("string", "integer", "number", "boolean", "choice", "url", "object")


@dataclass(frozen=True)
class Option:
    """One option: what it is, what it may hold, what it defaults to."""

    name: str
    type: str                       # one of TYPES
    description: str
    default: object = None          # None: absent unless given
    required: bool = False
    minimum: float = None           # integer/number: smallest allowed value
    maximum: float = None           # integer/number: largest allowed value
    above_minimum: bool = False     # number: must be greater than `minimum`
    unit: str = None                # number: what it counts ("seconds")
    allowed: tuple = ()             # choice: the allowed values
    pattern: str = None             # string: a regular expression it must match whole
    pattern_says: str = None        # string: what `pattern` means, for the error
    default_from: str = None        # default: the value of this other option
    secret: bool = False            # never shown in errors; stored apart where it applies
    example: object = None          # shown in the hint when a required option is missing

    def __post_init__(self):
        assert self.type in TYPES, self.type

    def must_be(self):
        """What a value of this option must be, as the error says it."""
        if self.type == "string":
            return self.pattern_says or "a non-empty string"
        if self.type == "boolean":
            return "true or false"
        if self.type == "choice":
            return "one of " + ", ".join(json.dumps(value) for value in self.allowed)
        if self.type == "url":
            return "an http:// or https:// URL"
        if self.type == "object":
            return "a JSON object"
        return _range_phrase(self)


def _range_phrase(option):
    """'an integer from 1 to 64', 'a number of seconds greater than 0 and at most 3600', ..."""
    noun = "an integer" if option.type == "integer" else (
        f"a number of {option.unit}" if option.unit else "a number")
    low, high = _number(option.minimum), _number(option.maximum)
    if low is not None and option.above_minimum:
        return f"{noun} greater than {low}" + (f" and at most {high}" if high is not None else "")
    if low is not None and high is not None:
        return f"{noun} from {low} to {high}"
    if low is not None:
        return f"{noun} of at least {low}"
    if high is not None:
        return f"{noun} of at most {high}"
    return noun


def _number(bound):
    """A bound as people write it: 1000000, 0.5 (never 1e+06)."""
    if bound is None:
        return None
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


class OptionChecker:
    """Checks one object's options against its declarations.

    `subject` names the object in every message ('model "m1"', 'ChunkText',
    'volume "docs"'); `scope` follows "unknown option" ('for provider
    openai_embeddings'); `hint` is the default hint (how to build the
    options); `noun` is "option" or "credential"; `prefix` is prepended to
    option names in messages (nested objects: "vector_index.")."""

    def __init__(self, subject, declared, *, scope=None, hint=None, noun="option", prefix=""):
        self.subject = subject
        self.declared = {option.name: option for option in declared}
        self.scope = scope
        self.hint = hint
        self.noun = noun
        self.prefix = prefix

    def check(self, options, keep_absent=True):
        """`options` normalised: every declared option with its value or
        default (`keep_absent=False`: only those that have one). A JSON null
        counts as absent (the SQL builders pass NULL for "the default")."""
        if options is None:
            options = {}
        if not isinstance(options, dict):
            # Not shown if it may hold a secret (a key pasted as a bare string).
            secretive = any(option.secret for option in self.declared.values())
            got = "" if secretive else f", got {show_value(options)}"
            raise self.invalid(f"{self.noun}s must be a JSON object{got}")
        self._refuse_unknown(options)
        normalised = {}
        for option in self.declared.values():
            value = self._value(option, options, normalised)
            if value is not None or keep_absent:
                normalised[option.name] = value
        return normalised

    def invalid(self, message, hint=None):
        """An InvalidInput about this object, with the default hint."""
        return InvalidInput(f"{self.subject}: {message}", hint=hint or self.hint)

    def refuse(self, name, must_be, value, hint=None):
        """The one refusal: option `name` must be `must_be`, got `value`; the
        hint says what the option does (and how to build the options)."""
        option = self.declared.get(name)
        got = "" if option is not None and option.secret else f", got {show_value(value)}"
        return self.invalid(f'{self.noun} "{self.prefix}{name}" must be {must_be}{got}',
                            hint or _sentences(f'"{self.prefix}{name}": {option.description}'
                                               if option is not None else None, self.hint))

    def _refuse_unknown(self, options):
        unknown = sorted(str(key) for key in options if key not in self.declared)
        if not unknown:
            return
        names = ", ".join(f'"{self.prefix}{key}"' for key in unknown)
        scope = f" {self.scope}" if self.scope else ""
        known = ", ".join(self.prefix + name for name in self.declared) or "none"
        raise InvalidInput(f"{self.subject}: unknown {self.noun}{'s' if len(unknown) > 1 else ''} "
                           f"{names}{scope}", hint=f"Known {self.noun}s: {known}.")

    def _value(self, option, options, earlier):
        """The checked value of one option, or its default when absent."""
        value = options.get(option.name)
        if value is None:
            if option.required:
                example = None if option.example is None else (
                    f"For example: {{{json.dumps(option.name)}: {json.dumps(option.example)}}}.")
                raise self.invalid(f'{self.noun} "{self.prefix}{option.name}" is required',
                                   hint=_sentences(example, self.hint))
            return earlier.get(option.default_from) if option.default_from else option.default
        if option.type == "string":
            return self._check_string(option, value)
        if option.type == "url":
            return self._check_url(option, value)
        if not _ACCEPTS[option.type](option, value):
            raise self.refuse(option.name, option.must_be(), value)
        return value

    def _check_string(self, option, value):
        """A non-empty string, matching the option's pattern if it has one."""
        if not isinstance(value, str) or not value.strip():
            raise self.refuse(option.name, "a non-empty string", value)
        if option.pattern and not re.fullmatch(option.pattern, value):
            raise self.refuse(option.name, option.must_be(), value)
        return value

    def _check_url(self, option, value):
        """An http(s) URL with a host the egress allowlist can read; no user
        info (not shown: it may be a password; parsers also disagree about
        such URLs, which would defeat the allowlist). Stored without a
        trailing slash."""
        self._check_string(option, value)
        try:
            parts = urlsplit(value)
            parts.port
        except ValueError:          # an unclosed IPv6 bracket, a port out of range
            raise self.refuse(option.name, "a valid URL (host and port)", value) from None
        if "@" in parts.netloc:
            raise self.invalid(f'{self.noun} "{self.prefix}{option.name}" must not contain '
                               "user info (user:password@host)",
                               hint="Give credentials in their own place (credentials, "
                                    "options), never in a URL.")
        if (parts.scheme not in ("http", "https") or not parts.hostname
                or egress.url_host(value) is None):
            raise self.refuse(option.name, option.must_be(), value)
        return value.rstrip("/")


def _is_integer(value):
    """An integer in JSON: a bool (true, false) is not one."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    """A number in JSON: not a bool, not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


# The types a value either has or has not: whether `value` is allowed for `option`.
_ACCEPTS = {
    "integer": lambda option, value: _is_integer(value) and _in_range(option, value),
    "number": lambda option, value: _is_number(value) and _in_range(option, value),
    "boolean": lambda option, value: isinstance(value, bool),
    "choice": lambda option, value: isinstance(value, str) and value in option.allowed,
    "object": lambda option, value: isinstance(value, dict),
}


def _sentences(*parts):
    """The non-empty parts, joined into one hint (None if there is none)."""
    return " ".join(part for part in parts if part) or None


def _in_range(option, value):
    """Whether `value` lies in the option's declared range."""
    low, high = option.minimum, option.maximum
    if low is not None and (value <= low if option.above_minimum else value < low):
        return False
    return high is None or value <= high


def check_options(subject, options, declared, **how):
    """Shorthand: `options` checked against `declared` (see OptionChecker)."""
    keep_absent = how.pop("keep_absent", True)
    return OptionChecker(subject, declared, **how).check(options, keep_absent=keep_absent)


def show_value(value, limit=40):
    """`value` as it looks in JSON, shortened for an error message."""
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def declarations():
    """Every option aidb checks, as {kind: {owner: (Option, ...)}}: kinds
    "model" (by provider), "model credentials", "step" (by operation),
    "vector_index" (by index type) and "volume" (by URI scheme)."""
    from .models import PROVIDER_MODULES, provider_class
    from .models.config import CREDENTIALS
    from .pipeline.steps import STEP_MODULES, step_class
    from .pipeline.steps.knowledge_base import INDEX_SETTINGS, OPTIONS as KB_OPTIONS
    from .volumes import FILE_OPTIONS, S3_OPTIONS
    return {
        "model": {provider: provider_class(provider).OPTIONS for provider in PROVIDER_MODULES},
        "model credentials": {"*": CREDENTIALS},
        "step": {**{operation: step_class(operation).OPTIONS for operation in STEP_MODULES},
                 "KnowledgeBase": KB_OPTIONS},
        "vector_index": INDEX_SETTINGS,
        "volume": {"file": FILE_OPTIONS, "s3": S3_OPTIONS},
    }
