"""Unit tests for the ChunkText pipeline step (no database needed)."""

import random
import time

import pytest

from aidb.errors import InvalidInput
from aidb.pipeline.steps.chunk_text import ChunkText, chunk_text, validate_options


def chars(desired, maximum=None, overlap=None):
    """Options for the "chars" strategy."""
    return {"desired_length": desired, "max_length": maximum, "overlap_length": overlap}


def words(desired, maximum=None, overlap=None):
    """Options for the "words" strategy."""
    return dict(chars(desired, maximum, overlap), strategy="words")


def random_text(rng, size):
    """Random prose-like text: words, sentence ends, paragraph breaks, odd spacing."""
    pieces, length = [], 0
    while length < size:
        word = "".join(rng.choice("abcdefghij") for _ in range(rng.choice([1, 3, 7, 15, 60])))
        pieces.append(word + rng.choice([" ", " ", " ", ". ", "! ", "?\n", "\n\n", "  \t", ""]))
        length += len(pieces[-1])
    return "".join(pieces)[:size]


# ---------------------------------------------------------------- options

def test_defaults_are_filled_in():
    assert validate_options({"desired_length": 100}) == {
        "desired_length": 100, "max_length": 100, "overlap_length": 0, "strategy": "chars"}


def test_nulls_count_as_absent_and_validation_is_idempotent():
    normalised = validate_options(words(10, None, None))
    assert normalised == {"desired_length": 10, "max_length": 10, "overlap_length": 0,
                          "strategy": "words"}
    assert validate_options(normalised) == normalised


@pytest.mark.parametrize("options, message", [
    ([100], "ChunkText: options must be a JSON object, got [100]"),
    ({}, 'ChunkText: option "desired_length" is required'),
    ({"desired_length": None}, 'ChunkText: option "desired_length" is required'),
    ({"desired_length": "100"}, 'ChunkText: option "desired_length" must be an integer of at least 1, got "100"'),
    ({"desired_length": 10.5}, 'ChunkText: option "desired_length" must be an integer of at least 1, got 10.5'),
    ({"desired_length": True}, 'ChunkText: option "desired_length" must be an integer of at least 1, got true'),
    ({"desired_length": 0}, 'ChunkText: option "desired_length" must be an integer of at least 1, got 0'),
    ({"desired_length": -5}, 'ChunkText: option "desired_length" must be an integer of at least 1, got -5'),
    (chars(100, "200"), 'ChunkText: option "max_length" must be an integer of at least 1, got "200"'),
    (chars(100, False), 'ChunkText: option "max_length" must be an integer of at least 1, got false'),
    (chars(100, 99), 'ChunkText: option "max_length" must be at least "desired_length" (100), got 99'),
    (chars(100, None, 1.0), 'ChunkText: option "overlap_length" must be an integer of at least 0, got 1.0'),
    (chars(100, None, True), 'ChunkText: option "overlap_length" must be an integer of at least 0, got true'),
    (chars(100, None, -1), 'ChunkText: option "overlap_length" must be an integer of at least 0, got -1'),
    (chars(100, None, 120),
     'ChunkText: option "overlap_length" must be less than "desired_length" (100), got 120'),
    (chars(100, None, 100),
     'ChunkText: option "overlap_length" must be less than "desired_length" (100), got 100'),
    (dict(chars(100), strategy="lines"),
     'ChunkText: option "strategy" must be one of "chars", "words", got "lines"'),
    (dict(chars(100), strategy=1), 'ChunkText: option "strategy" must be one of "chars", "words", got 1'),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(InvalidInput) as caught:
        validate_options(options)
    assert caught.value.message == message
    assert caught.value.sqlstate == "22023"


def test_unknown_options_are_refused_with_the_known_ones_in_the_hint():
    with pytest.raises(InvalidInput) as caught:
        validate_options({"desired_length": 10, "overlap": 2, "Strategy": "words"})
    assert caught.value.message == 'ChunkText: unknown options "Strategy", "overlap"'
    for known in ("desired_length", "max_length", "overlap_length", "strategy"):
        assert known in caught.value.hint


def test_long_bad_values_are_shortened_in_the_message():
    with pytest.raises(InvalidInput) as caught:
        validate_options({"desired_length": "x" * 1000})
    assert len(caught.value.message) < 120


# ---------------------------------------------------------------- chars: boundaries

@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \n"])
def test_empty_or_blank_text_gives_no_chunks(text):
    assert chunk_text(text, chars(10)) == []
    assert chunk_text(text, words(10)) == []


def test_none_gives_no_chunks_and_other_types_are_refused():
    assert chunk_text(None, chars(10)) == []
    with pytest.raises(InvalidInput, match="input must be text"):
        chunk_text(42, chars(10))


def test_short_text_is_one_stripped_chunk():
    assert chunk_text("  Hello there.\n", chars(100)) == ["Hello there."]


def test_paragraph_break_is_preferred_over_sentence_end():
    text = "First one. Second one\n\nThird para. More text follows here."
    # Window for the first cut is [15, 30]: it holds a sentence end (10, too
    # early), the paragraph break (21) and whitespace after it.
    assert chunk_text(text, chars(30))[0] == "First one. Second one"


def test_paragraph_break_with_spaces_and_crlf_counts():
    text = "Alpha beta gamma\r\n  \r\nDelta epsilon zeta eta"
    assert chunk_text(text, chars(24))[0] == "Alpha beta gamma"


def test_sentence_end_is_preferred_over_whitespace():
    text = "One two three! Four five six seven eight"
    assert chunk_text(text, chars(25)) == ["One two three!", "Four five six seven eight"]


def test_sentence_end_keeps_closing_quotes():
    text = 'He said "stop." Then more words came along'
    assert chunk_text(text, chars(24))[0] == 'He said "stop."'


def test_decimal_point_is_not_a_sentence_end():
    text = "pi is 3.14159 and e is 2.71828 roughly"
    assert chunk_text(text, chars(20))[0] == "pi is 3.14159 and e"


def test_last_whitespace_within_desired_length_is_used():
    text = "aaa bbb ccc ddd eee fff"
    assert chunk_text(text, chars(10)) == ["aaa bbb", "ccc ddd", "eee fff"]


def test_boundaries_before_half_of_desired_length_are_ignored():
    # The paragraph break at 2 is before half of 20: the chunk ends at the
    # last whitespace instead, and the early break stays inside the chunk.
    text = "ab\n\ncdefghijklm nopqrstuvwxyz"
    assert chunk_text(text, chars(20))[0] == "ab\n\ncdefghijklm"


def test_first_whitespace_up_to_max_length_beats_a_hard_cut():
    text = "x" * 15 + " tail words"
    assert chunk_text(text, chars(10, 20)) == ["x" * 15, "tail words"]


def test_hard_cut_at_max_length_without_any_boundary():
    text = "y" * 25 + " z"
    assert chunk_text(text, chars(10, 12)) == ["y" * 12, "y" * 12, "y z"]


# ---------------------------------------------------------------- chars: properties

@pytest.mark.parametrize("seed", range(40))
def test_random_texts_respect_max_length_and_keep_all_content(seed):
    rng = random.Random(seed)
    text = random_text(rng, rng.randint(0, 3000))
    desired = rng.randint(1, 200)
    maximum = desired + rng.choice([0, 0, 5, desired])
    chunks = chunk_text(text, chars(desired, maximum))
    for chunk in chunks:
        assert 0 < len(chunk) <= maximum
        assert chunk == chunk.strip() and chunk in text
    # Without overlap the chunks hold all the non-whitespace text, in order.
    assert "".join("".join(c.split()) for c in chunks) == "".join(text.split())
    assert chunk_text(text, chars(desired, maximum)) == chunks   # deterministic


@pytest.mark.parametrize("seed", range(40))
def test_random_texts_with_overlap_respect_max_length(seed):
    rng = random.Random(1000 + seed)
    text = random_text(rng, rng.randint(0, 3000))
    desired = rng.randint(1, 200)
    maximum = desired + rng.choice([0, 5, desired])
    overlap = rng.randint(0, desired - 1)
    chunks = chunk_text(text, chars(desired, maximum, overlap))
    for chunk in chunks:
        assert 0 < len(chunk) <= maximum
        assert chunk == chunk.strip() and chunk in text
    if chunks:
        assert text.lstrip().startswith(chunks[0]) and text.rstrip().endswith(chunks[-1])


def test_overlap_repeats_the_end_of_the_previous_chunk():
    text = "one two three four five six seven eight nine ten"
    chunks = chunk_text(text, chars(20, None, 8))
    assert chunks == ["one two three four", "four five six seven", "seven eight nine ten"]


def test_overlap_moves_forward_to_a_word_boundary():
    text = "alpha bravo charlie delta echo foxtrot golf"
    # 9 characters before the end of "alpha bravo charlie" is inside "bravo":
    # the next chunk starts at the following word instead.
    chunks = chunk_text(text, chars(20, None, 9))
    assert chunks[0] == "alpha bravo charlie"
    assert chunks[1].startswith("charlie ")


@pytest.mark.parametrize("seed", range(20))
def test_random_overlap_is_present_at_word_boundaries(seed):
    rng = random.Random(3000 + seed)
    text = " ".join("xyz"[:rng.randint(1, 3)] + rng.choice(["", ".", "!"])
                    for _ in range(rng.randint(50, 500)))
    desired = rng.randint(20, 100)
    overlap = rng.randint(8, desired - 1)
    chunks = chunk_text(text, chars(desired, None, overlap))
    for previous, following in zip(chunks, chunks[1:]):
        shared = [k for k in range(1, min(overlap, len(previous) - 1) + 1)
                  if previous[-k - 1] == " " and following.startswith(previous[-k:])]
        assert shared, (previous, following)


def test_overlap_starting_inside_the_last_word_is_dropped_not_cut():
    assert chunk_text("aaa bbb ccc ddd eee", chars(10, None, 2)) == ["aaa bbb", "ccc ddd", "eee"]


def test_overlap_inside_one_long_word_cuts_within_it():
    assert chunk_text("z" * 25, chars(10, None, 4)) == ["z" * 10, "z" * 10, "z" * 10, "z" * 7]


# ---------------------------------------------------------------- progress

@pytest.mark.parametrize("text, options, expected_count", [
    ("w" * 10_000, chars(100), 100),
    ("w" * 10_000, chars(1), 10_000),
    ("w" * 10_000, chars(2, None, 1), 9_999),
    ("a b " * 2_000, chars(1), 4_000),
    ("." * 5_000, chars(7, 9), 556),
    ("\n" * 5_000 + "x", chars(3), 1),
    ("a.\n\n" * 2_000, chars(1, 1), 4_000),
    (". " * 3_000, chars(5, 5, 4), None),
    ("ab " * 3_000, chars(5, 5, 4), None),
])
def test_pathological_inputs_terminate(text, options, expected_count):
    started = time.monotonic()
    chunks = chunk_text(text, options)
    assert time.monotonic() - started < 5
    if expected_count is not None:
        assert len(chunks) == expected_count
    assert all(0 < len(c) <= validate_options(options)["max_length"] for c in chunks)


def test_one_megabyte_is_fast():
    rng = random.Random(7)
    text = random_text(rng, 1_000_000)
    started = time.monotonic()
    chunks = chunk_text(text, chars(1000, 1200, 100))
    words_chunks = chunk_text(text, words(200, None, 20))
    assert time.monotonic() - started < 1.0
    assert chunks and words_chunks


# ---------------------------------------------------------------- words

def test_words_groups_desired_length_words_joined_by_single_spaces():
    text = " one  two\tthree\n\nfour five six seven "
    assert chunk_text(text, words(3)) == ["one two three", "four five six", "seven"]


def test_words_overlap_repeats_words():
    text = "a b c d e f g h"
    assert chunk_text(text, words(4, None, 2)) == ["a b c d", "c d e f", "e f g h"]


def test_words_does_not_emit_a_chunk_already_covered_by_the_overlap():
    assert chunk_text("a b c d e", words(3, None, 1)) == ["a b c", "c d e"]


@pytest.mark.parametrize("seed", range(20))
def test_words_random_counts(seed):
    rng = random.Random(2000 + seed)
    text = random_text(rng, rng.randint(0, 2000))
    desired = rng.randint(1, 30)
    overlap = rng.randint(0, desired - 1)
    chunks = chunk_text(text, words(desired, desired + 5, overlap))
    all_words = text.split()
    assert all(len(c.split()) == desired for c in chunks[:-1])
    assert all(0 < len(c.split()) <= desired for c in chunks)
    for previous, following in zip(chunks, chunks[1:]):
        assert previous.split()[desired - overlap:] == following.split()[:overlap]
    if all_words:
        assert chunks[-1].split()[-1] == all_words[-1]


# ---------------------------------------------------------------- step class

def test_step_class_validates_and_runs():
    step = ChunkText({"desired_length": 10})
    assert step.name == "ChunkText"
    assert step.options["max_length"] == 10
    assert ChunkText.validate_options({"desired_length": 5})["max_length"] == 5
    assert step.run("aaa bbb ccc ddd") == ["aaa bbb", "ccc ddd"]
    with pytest.raises(InvalidInput, match='option "desired_length" is required'):
        ChunkText({})
