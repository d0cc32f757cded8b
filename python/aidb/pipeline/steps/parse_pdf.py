"""Step ParsePdf: the text of a PDF document, one part per page.

Options (a JSON object, built in SQL by `aidb.pdf_parse_config`):

- method ("Text", the default): the text layer of each page, as pypdf
  extracts it. (Scanned pages have none: OCR is a separate step.)
- allow_partial_parsing (boolean, default false): when a page cannot be
  read, skip it and keep the others; by default such a page fails the whole
  record, so that no document is ever stored incomplete without asking.

Pages without text are left out. A file that is not a readable PDF at all
(corrupt, truncated, or encrypted with a password) is a RecordError for that
record only, whatever allow_partial_parsing says.
"""

import io

from .errors import RecordError, require_bytes
from ...options import Option
from .base import Step

STEP_NAME = "ParsePdf"
METHODS = ("Text",)
OPTIONS = (
    Option("method", "choice", "How text is read from the PDF.", default="Text", allowed=METHODS),
    Option("allow_partial_parsing", "boolean",
           "Keep the readable pages of a partly damaged PDF.", default=False),
)


def open_pdf(data):
    """A pypdf reader over `data` (bytes); RecordError if it is no readable PDF.

    pypdf's non-strict mode tolerates the small defects that real-world PDFs
    commonly have (wrong offsets, missing whitespace), as PDF viewers do.
    Any exception here comes from the file's contents, whatever its type.
    """
    import pypdf    # imported here: only pipelines with this step pay for it

    data = require_bytes(data, STEP_NAME, "a PDF file")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise RecordError(f"{STEP_NAME}: the PDF is encrypted with a password",
                              hint="Store an unencrypted copy of the document.")
        len(reader.pages)   # reads the page tree: a broken one fails here
    except RecordError:
        raise
    except Exception as exc:  # noqa: BLE001 — a corrupt file can raise anything
        raise RecordError(f"{STEP_NAME}: not a readable PDF file: {_describe(exc)}") from None
    return reader


def page_texts(reader, allow_partial_parsing):
    """The non-empty texts of the pages, in order. A page that fails is
    skipped if `allow_partial_parsing`, else it fails the record."""
    texts = []
    for number in range(1, len(reader.pages) + 1):
        try:
            text = reader.pages[number - 1].extract_text()
        except Exception as exc:  # noqa: BLE001 — a damaged page can raise anything
            if allow_partial_parsing:
                continue
            raise RecordError(f"{STEP_NAME}: page {number} of {len(reader.pages)} cannot be "
                              f"read: {_describe(exc)}",
                              hint="aidb.pdf_parse_config(allow_partial_parsing => true) "
                                   "keeps the pages that can be read.") from None
        text = text.replace("\x00", "").strip()   # PostgreSQL text cannot hold NUL
        if text:
            texts.append(text)
    return texts


def _describe(exc):
    """An exception as a short message: its type, and its text if it has one."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class ParsePdf(Step):
    """The pipeline step."""

    name = STEP_NAME
    OPTIONS = OPTIONS
    builder = "aidb.pdf_parse_config()"

    def run(self, data):
        """One text per page that has text (a list, possibly empty)."""
        if data is None:
            return []
        return page_texts(open_pdf(data), self.options["allow_partial_parsing"])
