"""The document steps ParseHtml, ParsePdf, PerformOcr and SummarizeText, and
the openai_completions provider, run directly on documents made by
tests/support/documents.py: real pypdf, a real tesseract, real HTTP to the
test model server. One test goes through SQL: the option builders and the
provider registered in the installed extension.
"""

import re

import pytest
from psycopg.types.json import Jsonb

from tests.support.common import TEST_API_KEY
from tests.support.documents import make_html, make_pdf, make_text_png
from tests.support.fake_vectors import fake_completion

from aidb.errors import (AidbError, InvalidInput, ModelError, PIPELINE_PERMANENT,
                         RECORD_PERMANENT, RECORD_TEMPORARY)
from aidb.models import provider_class
from aidb.pipeline.steps.errors import RecordError
from aidb.pipeline.steps.parse_html import ParseHtml
from aidb.pipeline.steps.parse_pdf import ParsePdf
from aidb.pipeline.steps.perform_ocr import PerformOcr
from aidb.pipeline.steps.summarize_text import SummarizeText, system_message

CHAT_PATH = "/v1/chat/completions"
LONG_TEXT = ("Tesseract reads printed text from images while pypdf extracts the text layer "
             "of each page and the parser turns markup into plain lines for the embedder.")


def record_error(step, data):
    """The RecordError that `step.run(data)` must raise."""
    with pytest.raises(RecordError) as info:
        step.run(data)
    assert info.value.category == RECORD_PERMANENT
    return info.value


# ---------------------------------------------------------------- ParseHtml

PLAINTEXT = """Café guide

Our best beans come from small farms.
Roasted weekly.

Menu

Espresso
Flat white
with oat milk

Grind
Brew

brew --strong
  --hot

Best in town."""

MARKDOWN = """# Café guide

Our **best** beans come from [small farms](https://example.com/beans).
Roasted weekly.

## Menu

- Espresso
- Flat *white*
  - with oat milk

1. Grind
2. Brew

```sh
brew --strong
  --hot
```

> Best in town."""


def test_html_plaintext_keeps_blocks_as_lines_and_drops_head_and_scripts():
    assert ParseHtml({}).run(make_html()) == [PLAINTEXT]


def test_html_markdown_renders_structure():
    assert ParseHtml({"method": "StructuredMarkdown"}).run(make_html()) == [MARKDOWN]


def test_html_meta_charset_and_byte_order_mark_decide_the_encoding():
    latin = make_html("windows-1252")
    assert "Café".encode("cp1252") in latin and "Café".encode() not in latin
    assert ParseHtml({}).run(latin) == [PLAINTEXT]
    assert ParseHtml({}).run(b"\xef\xbb\xbf<p>Caf\xc3\xa9</p>") == ["Café"]
    assert ParseHtml({}).run("\ufeff<p>Café</p>".encode("utf-16-le")) == ["Café"]
    # As in browsers: ISO-8859-1 means windows-1252, whose unused bytes stay C1 controls.
    assert ParseHtml({}).run(b'<meta charset="iso-8859-1"><p>\x80 \x81</p>') == ["\u20ac \x81"]
    assert ParseHtml({}).run("<p>already text</p>") == ["already text"]


def test_html_malformed_markup_still_yields_its_text():
    step = ParseHtml({"method": "StructuredMarkdown"})
    assert step.run("<ul><li>one<li>two</ul><p>open <b>bold<p>next") == [
        "- one\n- two\n\nopen **bold**\n\n**next**"]
    assert step.run("<head><title>t</title><body>unclosed head") == ["unclosed head"]
    assert step.run('<a href="javascript:evil()">plain</a> <b></b>') == ["plain"]


@pytest.mark.parametrize("document", [None, b"", "   ", "<html><head><title>x</title></head></html>",
                                      "<script>only()</script>"])
def test_html_without_text_gives_no_part(document):
    assert ParseHtml({}).run(document) == []


@pytest.mark.parametrize("data, message", [
    (make_text_png("x"), "ParseHtml: the document is not valid utf-8 text "
                         "(byte 0 cannot be decoded)"),
    (b"<p>ok</p>\x00\x01\x02", "ParseHtml: the document contains NUL characters; "
                               "it is not an HTML page"),
    (b'<meta charset="utf-8"><p>caf\xe9</p>', "ParseHtml: the document is not valid utf-8 "
                                              "text (byte 28 cannot be decoded)"),
    (b'<meta charset="utf-16"><p>\xff</p>', "ParseHtml: the document is not valid utf-8 "
                                           "text (byte 26 cannot be decoded)"),
    (12, "ParseHtml: the input must be text or bytes, not int"),
])
def test_html_non_html_bytes_are_a_record_error(data, message):
    assert record_error(ParseHtml({}), data).message == message


@pytest.mark.parametrize("options, message", [
    ({"method": "Markdown"}, 'ParseHtml: option "method" must be one of "StructuredPlaintext", '
                             '"StructuredMarkdown", got "Markdown"'),
    ({"metod": "StructuredMarkdown"}, 'ParseHtml: unknown option "metod"'),
    (["StructuredMarkdown"], 'ParseHtml: options must be a JSON object, got ["StructuredMarkdown"]'),
])
def test_html_options_are_checked(options, message):
    with pytest.raises(InvalidInput) as info:
        ParseHtml(options)
    assert info.value.message == message
    assert ParseHtml.validate_options({"method": None}) == {"method": "StructuredPlaintext"}


# ---------------------------------------------------------------- ParsePdf

def test_pdf_gives_one_part_per_page_with_text():
    pdf = make_pdf(["First page\nsecond line", "", "Third (page) \\ done"])
    assert ParsePdf({}).run(pdf) == ["First page\nsecond line", "Third (page) \\ done"]


@pytest.mark.parametrize("allow_partial", [False, True])
@pytest.mark.parametrize("corrupt", [
    b"", b"%PDF-1.4\nnot really", b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
    make_pdf(["one", "two"])[:150], make_pdf(["one", "two"])[:-40],
])
def test_pdf_corrupt_file_is_a_record_error_even_with_partial_parsing(corrupt, allow_partial):
    error = record_error(ParsePdf({"allow_partial_parsing": allow_partial}), corrupt)
    assert error.message.startswith("ParsePdf: not a readable PDF file: ")


def test_pdf_unreadable_page_fails_the_record_unless_partial_parsing_is_allowed():
    pdf = make_pdf(["page one", "page two", "page three"], broken_pages={1})
    error = record_error(ParsePdf({}), pdf)
    assert error.message.startswith("ParsePdf: page 2 of 3 cannot be read: ")
    assert "allow_partial_parsing => true" in error.hint
    assert ParsePdf({"allow_partial_parsing": True}).run(pdf) == ["page one", "page three"]


def test_pdf_encrypted_with_a_password_is_a_record_error_without_one_it_is_read():
    import io
    import pypdf

    def encrypted(user_password):
        writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf(["secret text"]))))
        writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()

    error = record_error(ParsePdf({}), encrypted("letmein"))
    assert error.message == "ParsePdf: the PDF is encrypted with a password"
    assert ParsePdf({}).run(encrypted("")) == ["secret text"]


def test_pdf_takes_bytes_only():
    assert record_error(ParsePdf({}), "%PDF-1.4").message == \
        "ParsePdf: the input must be bytes (a PDF file), not str"
    assert ParsePdf({}).run(None) == []


@pytest.mark.parametrize("options, message", [
    ({"method": "OCR"}, 'ParsePdf: option "method" must be one of "Text", got "OCR"'),
    ({"allow_partial_parsing": "yes"}, 'ParsePdf: option "allow_partial_parsing" must be '
                                       'true or false, got "yes"'),
    ({"pages": 3, "dpi": 2}, 'ParsePdf: unknown options "dpi", "pages"'),
])
def test_pdf_options_are_checked(options, message):
    with pytest.raises(InvalidInput) as info:
        ParsePdf.validate_options(options)
    assert info.value.message == message
    assert ParsePdf.validate_options({}) == {"method": "Text", "allow_partial_parsing": False}


# ---------------------------------------------------------------- PerformOcr

def words_of(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def assert_reads_back(parts, text):
    """OCR found the text: one part, holding (almost) every word of `text`,
    in order, case aside; a misread character or two is tolerated."""
    assert len(parts) == 1
    expected, found = words_of(text), words_of(parts[0])
    matched = sum(1 for word in expected if word in found)
    assert matched >= len(expected) - 1, (expected, found)
    assert len(found) <= len(expected) + 2, found


def test_ocr_reads_back_the_words_of_an_image():
    text = "Invoice 2024\nTotal due: 42 euros\nPayable within thirty days"
    assert_reads_back(PerformOcr({}).run(make_text_png(text)), text)


def test_ocr_reads_dark_text_on_a_transparent_background_and_one_line_mode():
    import io
    from PIL import Image

    text = "Quarterly report summary"
    gray = Image.open(io.BytesIO(make_text_png(text)))
    # Black pixels whose opacity is the ink: without flattening on white,
    # the whole picture would be black.
    transparent = Image.new("LA", gray.size, 0)
    transparent.putalpha(gray.point(lambda v: 255 - v))
    buffer = io.BytesIO()
    transparent.save(buffer, "PNG")
    assert_reads_back(PerformOcr({"psm": 7}).run(buffer.getvalue()), text)


def test_ocr_blank_image_gives_no_part():
    assert PerformOcr({}).run(make_text_png(" ")) == []
    assert PerformOcr({}).run(None) == []


@pytest.mark.parametrize("data, start", [
    (make_text_png("truncated image")[:300], "PerformOcr: not a readable image: OSError: "),
    (b"GIF89a but not really", "PerformOcr: not a readable image: UnidentifiedImageError: "),
    (make_pdf(["a pdf, not an image"]), "PerformOcr: not a readable image: "),
    ("text", "PerformOcr: the input must be bytes (an image file), not str"),
])
def test_ocr_unreadable_image_is_a_record_error(data, start):
    assert record_error(PerformOcr({}), data).message.startswith(start)


def test_ocr_without_tesseract_blocks_the_pipeline(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))       # no tesseract program on it
    with pytest.raises(AidbError) as info:
        PerformOcr({}).run(make_text_png("hello"))
    assert info.value.message == "PerformOcr: tesseract is not installed on the database server"
    assert info.value.category == PIPELINE_PERMANENT
    assert "tesseract-ocr" in info.value.hint


def test_ocr_language_without_data_blocks_the_pipeline():
    with pytest.raises(AidbError) as info:
        PerformOcr({"language": "eng+tlh"}).run(make_text_png("hello"))
    assert info.value.message == ("PerformOcr: tesseract has no data for the language tlh "
                                  "on the database server")
    assert info.value.category == PIPELINE_PERMANENT
    assert "eng" in info.value.hint and "tesseract-ocr-tlh" in info.value.hint


@pytest.mark.parametrize("options, message", [
    ({"language": "eng; rm -rf /"}, 'PerformOcr: option "language" must be a Tesseract '
                                    'language code such as "eng", or several joined by "+", '
                                    'got "eng; rm -rf /"'),
    ({"language": ""}, 'PerformOcr: option "language" must be a non-empty string, got ""'),
    ({"psm": 2}, 'PerformOcr: option "psm" must be 1 or 3 to 13 (Tesseract does not '
                  'implement 2), got 2'),
    ({"psm": 14}, 'PerformOcr: option "psm" must be an integer from 1 to 13, got 14'),
    ({"psm": "6"}, 'PerformOcr: option "psm" must be an integer from 1 to 13, got "6"'),
    ({"lang": "eng"}, 'PerformOcr: unknown option "lang"'),
])
def test_ocr_options_are_checked(options, message):
    with pytest.raises(InvalidInput) as info:
        PerformOcr(options)
    assert info.value.message == message
    assert PerformOcr.validate_options({"language": "eng+deu", "psm": 6}) == {
        "language": "eng+deu", "psm": 6}


# ---------------------------------------------------------------- SummarizeText

def completion_model(server, name="writer", **config):
    """An openai_completions model on the test server, as create_model would build it."""
    cls = provider_class("openai_completions")
    settings = cls.validate(name, {"model": "chat-test", "url": server.url + "/v1",
                                   "max_retries": 2, "timeout": 5, **config},
                            {"api_key": TEST_API_KEY})
    return cls(name, settings, {"api_key": TEST_API_KEY})


@pytest.fixture
def summarizer(model_server):
    """SummarizeText(options) with a loader serving test-server models."""
    built = []

    def make(options, **config):
        step = SummarizeText(options, lambda name: completion_model(model_server, name, **config))
        built.append(step.model)
        return step

    yield make
    for model in built:
        model.close()


def chat_requests(server):
    return server.state()["requests"].get(CHAT_PATH, 0)


def test_summary_is_the_models_answer_cut_to_max_length(summarizer, model_server):
    assert summarizer({"model": "writer"}).run(LONG_TEXT) == [fake_completion(LONG_TEXT)]
    assert summarizer({"model": "writer", "max_length": 4}).run(LONG_TEXT) == [
        "summary: Tesseract reads printed"]
    assert chat_requests(model_server) == 2


def test_summary_instructions_carry_the_prompt_and_the_length():
    assert system_message({"prompt": "Summarize for lawyers.", "max_length": 30}) == \
        "Summarize for lawyers.\n\nUse at most 30 words."
    assert system_message({"prompt": None, "max_length": 120}).endswith("Use at most 120 words.")


def test_empty_text_is_not_sent(summarizer, model_server):
    step = summarizer({"model": "writer"})
    assert step.run("  \n ") == [] and step.run(None) == []
    assert chat_requests(model_server) == 0
    assert record_error(step, b"bytes").message == "SummarizeText: the input must be text, not bytes"


def test_server_errors_are_retried(summarizer, model_server):
    step = summarizer({"model": "writer"})
    model_server.set_fault("http500", count=1)
    assert step.run(LONG_TEXT) == [fake_completion(LONG_TEXT)]
    assert chat_requests(model_server) == 2


def test_persistent_server_errors_give_up_as_record_temporary(summarizer, model_server):
    step = summarizer({"model": "writer"}, max_retries=1)
    model_server.set_fault("http500")
    with pytest.raises(ModelError) as info:
        step.run(LONG_TEXT)
    assert info.value.category == RECORD_TEMPORARY
    assert info.value.message.startswith('model "writer": gave up after 2 attempts: HTTP 500')


def test_rejected_text_is_record_permanent_and_not_retried(summarizer, model_server):
    with pytest.raises(ModelError) as info:
        summarizer({"model": "writer"}).run("this text holds POISON")
    assert info.value.category == RECORD_PERMANENT
    assert "the provider rejected the input (HTTP 400)" in info.value.message
    assert chat_requests(model_server) == 1


@pytest.mark.parametrize("config, message", [
    ({"model": "no-such-model"}, "the provider does not know this model or URL (HTTP 404)"),
    ({}, "the provider rejected the credentials (HTTP 401)"),
])
def test_broken_model_configuration_blocks_the_pipeline(model_server, config, message):
    if not config:
        model_server.set_api_key("sk-another-key-0123456789")
    model = completion_model(model_server, **config)
    try:
        with pytest.raises(ModelError) as info:
            model.complete("hello")
    finally:
        model.close()
    assert info.value.category == PIPELINE_PERMANENT
    assert message in info.value.message and TEST_API_KEY not in info.value.message
    assert chat_requests(model_server) == 1


def test_summarize_needs_a_completion_model(model_server):
    embedder = provider_class("openai_embeddings")("emb", {"model": "e", "url": model_server.url,
                                                           "timeout": 5})
    try:
        with pytest.raises(InvalidInput) as info:
            SummarizeText({"model": "emb"}, lambda name: embedder)
    finally:
        embedder.close()
    assert info.value.message == ('SummarizeText: model "emb" is of provider openai_embeddings, '
                                  "which cannot write text")
    writer = completion_model(model_server)
    try:
        with pytest.raises(ModelError) as info:
            writer.embed(["text"])
    finally:
        writer.close()
    assert info.value.category == PIPELINE_PERMANENT
    assert "cannot embed text" in info.value.message


@pytest.mark.parametrize("options, message", [
    ({}, 'SummarizeText: option "model" is required'),
    ({"model": "w", "max_length": 0}, 'SummarizeText: option "max_length" must be an integer from 1 to '
                                      '100000, got 0'),
    ({"model": "w", "prompt": 5}, 'SummarizeText: option "prompt" must be a non-empty string, got 5'),
    ({"model": "w", "strategy": "map"}, 'SummarizeText: unknown option "strategy"'),
])
def test_summarize_options_are_checked(options, message):
    with pytest.raises(InvalidInput) as info:
        SummarizeText.validate_options(options)
    assert info.value.message == message
    assert SummarizeText.validate_options({"model": "w", "prompt": None}) == {
        "model": "w", "max_length": 120, "prompt": None}


@pytest.mark.parametrize("config, message", [
    ({"model": None}, 'model "writer": option "model" is required'),
    ({"max_tokens": 0}, 'model "writer": option "max_tokens" must be an integer from 1 to 1000000, got 0'),
    ({"dimensions": 8}, 'model "writer": unknown option "dimensions" for provider '
                        "openai_completions"),
])
def test_completion_model_config_is_checked(model_server, config, message):
    with pytest.raises(InvalidInput) as info:
        completion_model(model_server, **config)
    assert info.value.message == message


# ---------------------------------------------------------------- through SQL

def test_sql_option_builders_and_the_provider_in_the_extension(conn, model_server):
    """The builders' defaults are what the steps accept, and create_model
    knows the provider."""
    built = conn.execute(
        "SELECT aidb.html_parse_config(), aidb.html_parse_config('StructuredMarkdown'), "
        "aidb.pdf_parse_config(), aidb.pdf_parse_config(allow_partial_parsing => true), "
        "aidb.ocr_config(), aidb.ocr_config('eng+deu', 6), "
        "aidb.summarize_text_config('writer'), "
        "aidb.summarize_text_config('writer', 50, 'Be brief.')").fetchone()
    assert [ParseHtml.validate_options(o) for o in built[:2]] == [
        {"method": "StructuredPlaintext"}, {"method": "StructuredMarkdown"}]
    assert [ParsePdf.validate_options(o) for o in built[2:4]] == [
        {"method": "Text", "allow_partial_parsing": False},
        {"method": "Text", "allow_partial_parsing": True}]
    assert [PerformOcr.validate_options(o) for o in built[4:6]] == [
        {"language": "eng", "psm": None}, {"language": "eng+deu", "psm": 6}]
    assert [SummarizeText.validate_options(o) for o in built[6:]] == [
        {"model": "writer", "max_length": 120, "prompt": None},
        {"model": "writer", "max_length": 50, "prompt": "Be brief."}]
    # The engine validates stored options again when it runs them.
    for step, options in zip([ParseHtml] * 2 + [ParsePdf] * 2 + [PerformOcr] * 2
                             + [SummarizeText] * 2, built):
        normalised = step.validate_options(options)
        assert step.validate_options(normalised) == normalised
    conn.execute("SELECT aidb.create_model('writer', 'openai_completions', %s, %s)",
                 (Jsonb({"model": "chat-test", "url": model_server.url + "/v1"}),
                  Jsonb({"api_key": TEST_API_KEY})))
    assert conn.execute("SELECT provider FROM aidb.models WHERE name = 'writer'").fetchone() == (
        "openai_completions",)
    with pytest.raises(Exception, match="cannot embed text"):
        conn.execute("SELECT aidb.encode_text('writer', 'hello')")
