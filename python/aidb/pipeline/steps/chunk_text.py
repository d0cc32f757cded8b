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

import re

from ...errors import InvalidInput
from ...options import Option, OptionChecker
from .base import Step

STEP_NAME = "ChunkText"
STRATEGIES = ("chars", "words")

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

OPTIONS = (
    Option("desired_length", "integer", "The size a chunk aims at, in characters or words.",
           required=True, minimum=1, example=1000),
    Option("max_length", "integer", "The hard maximum of a chunk (default: desired_length).",
           default_from="desired_length", minimum=1),
    Option("overlap_length", "integer", "How much of a chunk's end the next one repeats "
           "(less than desired_length).", default=0, minimum=0),
    Option("strategy", "choice", '"chars" counts characters, "words" whitespace-separated words.',
           default="chars", allowed=STRATEGIES),
)


def validate_options(options):
    """Check ChunkText options and return them normalised, defaults filled in.

    Raises InvalidInput naming the step, the option and the bad value.
    Idempotent: validating an already normalised dict returns an equal dict.
    """
    check = OptionChecker(STEP_NAME, OPTIONS,
                          hint="Build the options with aidb.chunk_text_config().")
    checked = check.check(options)
    desired = checked["desired_length"]
    if checked["max_length"] < desired:
        raise check.refuse("max_length", f'at least "desired_length" ({desired})',
                           checked["max_length"])
    if checked["overlap_length"] >= desired:
        raise check.refuse("overlap_length", f'less than "desired_length" ({desired})',
                           checked["overlap_length"])
    return checked


def _invalid(message, hint=None):
    """An InvalidInput whose message names this step."""
    return InvalidInput(f"{STEP_NAME}: {message}", hint=hint)


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

class ChunkText(Step):
    """The pipeline step."""

    name = STEP_NAME
    OPTIONS = OPTIONS
    builder = "aidb.chunk_text_config()"
    validate_options = staticmethod(validate_options)   # with the checks between options

    def run(self, text):
        """The chunks of `text` (a list of strings, possibly empty)."""
        return chunk_text(text, self.options)
