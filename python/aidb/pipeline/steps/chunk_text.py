"""The ChunkText step: splits a text into chunks small enough to embed.

Options (a JSON object, built in SQL by `aidb.chunk_text_config`):

- desired_length  (int >= 1, required): the target chunk size.
- max_length      (int >= desired_length, default desired_length): the hard
                  upper bound; no chunk is ever longer.
- overlap_length  (int, 0 <= overlap < desired_length, default 0): how much of
                  the end of a chunk is repeated at the start of the next.
- strategy        ("chars" or "words", default "chars"): whether lengths count
                  characters or whitespace-separated words.

For "chars", a chunk ends at the last paragraph break, else the last sentence
end, else the last whitespace between half of desired_length and
desired_length; failing that, at the first whitespace up to max_length; failing
that, it is cut hard at max_length. Every loop iteration moves the start
forward, so any input terminates, and each chunk costs time proportional to
max_length, so the whole run is linear in the size of the output.
"""

import json
import re

from ...errors import InvalidInput
from .options import show_value

STEP_NAME = "ChunkText"
STRATEGIES = ("chars", "words")
KNOWN_OPTIONS = ("desired_length", "max_length", "overlap_length", "strategy")

# Boundary finders for the "chars" strategy, best first. Each is used with
# `match(text, lo, hi + 1)`: the greedy `.*` makes it find the LAST boundary in
# text[lo:hi + 1] in one C-level scan, `endpos` keeps any lookahead inside that
# window, and the empty group "cut" marks where the chunk ends (never past hi).
_BOUNDARIES = (
    re.compile(r"(?s).*(?P<cut>)\n(?=[ \t\r\f\v]*\n)"),  # before a blank line
    re.compile(r"(?s).*[.!?][\"')\]]*(?P<cut>)(?=\s)"),   # after . ! ? (and quotes)
    re.compile(r"(?s).*(?P<cut>)\s"),                      # before whitespace
)
_WHITESPACE = re.compile(r"\s")
_NON_SPACE = re.compile(r"\S")


# ---------------------------------------------------------------- options

def validate_options(options):
    """Check ChunkText options and return them normalised, defaults filled in.

    Raises InvalidInput naming the step, the option and the bad value.
    Idempotent: validating an already normalised dict returns an equal dict.
    """
    if not isinstance(options, dict):
        raise _invalid(f"options must be a JSON object, not {_json_type(options)}",
                       hint='For example: {"desired_length": 1000}.')
    _reject_unknown(options)
    desired = _integer(options, "desired_length", required=True)
    _at_least(desired, 1, "desired_length")
    maximum = _integer(options, "max_length", default=desired)
    _at_least(maximum, desired, "max_length", bound_name="desired_length")
    overlap = _integer(options, "overlap_length", default=0)
    _at_least(overlap, 0, "overlap_length")
    if overlap >= desired:
        raise _invalid(f'"overlap_length" ({overlap}) must be less than '
                       f'"desired_length" ({desired})')
    return {"desired_length": desired, "max_length": maximum,
            "overlap_length": overlap, "strategy": _strategy(options)}


def _invalid(message, hint=None):
    """An InvalidInput whose message names this step."""
    return InvalidInput(f"{STEP_NAME}: {message}", hint=hint)


def _reject_unknown(options):
    """Refuse option keys this step does not know, listing the known ones."""
    unknown = sorted(str(key) for key in options if key not in KNOWN_OPTIONS)
    if unknown:
        names = ", ".join(f'"{key}"' for key in unknown)
        raise _invalid(f"unknown option{'s' if len(unknown) > 1 else ''} {names}",
                       hint="Known options: " + ", ".join(KNOWN_OPTIONS) + ".")


def _integer(options, key, required=False, default=None):
    """The integer option `key` (a JSON null counts as absent); bools refused."""
    value = options.get(key)
    if value is None:
        if required:
            raise _invalid(f'"{key}" is required',
                           hint=f'For example: {{"{key}": 1000}}.')
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f'"{key}" ({show_value(value)}) must be an integer')
    return value


def _at_least(value, bound, key, bound_name=None):
    """Refuse `value` < `bound`; `bound_name` names the option the bound comes from."""
    if value < bound:
        limit = f'"{bound_name}" ({bound})' if bound_name else str(bound)
        raise _invalid(f'"{key}" ({value}) must be at least {limit}')


def _strategy(options):
    """The "strategy" option, "chars" unless given."""
    value = options.get("strategy")
    if value is None:
        return "chars"
    if value not in STRATEGIES:
        raise _invalid(f'"strategy" ({show_value(value)}) must be "chars" or "words"',
                       hint='"chars" counts characters, "words" counts '
                            "whitespace-separated words.")
    return value


def _json_type(value):
    """The JSON name of `value`'s type, for error messages."""
    names = {bool: "boolean", int: "number", float: "number", str: "string",
             list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- chunking

def chunk_text(text, options):
    """Split `text` into a list of chunks as `options` say (see module doc).

    Deterministic; returns [] for None, empty or whitespace-only text.
    """
    options = validate_options(options)
    if text is None:
        return []
    if not isinstance(text, str):
        raise _invalid(f"input must be text, not {_json_type(text)}")
    if options["strategy"] == "words":
        return _chunk_words(text, options["desired_length"], options["overlap_length"])
    return _chunk_chars(text, options["desired_length"], options["max_length"],
                        options["overlap_length"])


def _chunk_words(text, desired, overlap):
    """Groups of `desired` words joined by single spaces, `overlap` words repeated.

    max_length needs no check here: a chunk never has more than `desired` words.
    """
    words = text.split()
    step = desired - overlap            # >= 1, since overlap < desired
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start:start + desired]))
        if start + desired >= len(words):   # the rest is already covered
            break
    return chunks


def _chunk_chars(text, desired, maximum, overlap):
    """Character chunks, each ending at the best boundary (see `_chunk_end`)."""
    chunks = []
    pos = _skip_space(text, 0)
    while pos is not None:
        end = _chunk_end(text, pos, desired, maximum)
        chunk = text[pos:end].strip()
        if chunk:
            chunks.append(chunk)
        if _skip_space(text, end) is None:   # only whitespace is left
            break
        pos = _skip_space(text, _next_start(text, pos, end, overlap))
    return chunks


def _chunk_end(text, pos, desired, maximum):
    """Where the chunk starting at `pos` ends (exclusive), at most pos + maximum."""
    if len(text) - pos <= desired:
        return len(text)
    hi = pos + desired
    for pattern in _BOUNDARIES:
        cut = _last_cut(pattern, text, pos + desired // 2, hi)
        if cut is not None:
            return cut
    # No boundary up to desired_length: take the first whitespace within
    # max_length, else cut hard at max_length.
    space = _WHITESPACE.search(text, hi, pos + maximum + 1)
    return space.start() if space else min(pos + maximum, len(text))


def _last_cut(pattern, text, lo, hi):
    """The last cut position in [lo, hi] that `pattern` finds, or None."""
    match = pattern.match(text, lo, hi + 1)
    return match.start("cut") if match else None


def _next_start(text, pos, end, overlap):
    """Where the chunk after text[pos:end] starts: `overlap` characters before
    `end`, always after `pos` so that chunking makes progress. If that is
    mid-word it moves forward to the next whitespace (possibly the one at `end`,
    leaving no overlap rather than a word fragment); only when the chunk was
    cut hard inside a word does the overlap start inside that word."""
    start = max(end - overlap, pos + 1)
    if start < end and not text[start - 1].isspace() and not text[start].isspace():
        space = _WHITESPACE.search(text, start, end + 1)
        if space:
            start = space.start()
    return start


def _skip_space(text, index):
    """The index of the first non-whitespace character at or after `index`, or None."""
    match = _NON_SPACE.search(text, index)
    return match.start() if match else None


# ---------------------------------------------------------------- step

class ChunkText:
    """The pipeline step: options are validated once, at construction."""

    name = STEP_NAME
    validate_options = staticmethod(validate_options)   # ChunkText.validate_options(...)

    def __init__(self, options):
        self.options = validate_options(options)

    def run(self, text):
        """The chunks of `text` (a list of strings, possibly empty)."""
        return chunk_text(text, self.options)
