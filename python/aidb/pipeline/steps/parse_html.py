"""Step ParseHtml: the text of an HTML document, as one part.

Options (a JSON object, built in SQL by `aidb.html_parse_config`):

- method ("StructuredPlaintext", the default, or "StructuredMarkdown").
  StructuredPlaintext puts each heading, paragraph, list item and table row
  on its own line, with a blank line between blocks (list items and table
  rows stay on consecutive lines, cells joined by " | "). StructuredMarkdown
  renders the same blocks as Markdown: "#" headings, "-" and "1." list items,
  "**bold**", "*italic*", "`code`", links as [text](href), fenced code
  blocks, "> " quotes, "---" rules.

Both drop what a browser does not show as text: the <head>, scripts,
styles, <noscript>, <template>, inline SVG and MathML. Bytes are decoded as
UTF-8 unless a byte-order mark or a <meta charset> in the first 1024 bytes
says otherwise; bytes that do not decode are a RecordError for that record.

Built on the standard library's html.parser, a tokenizer that never fails on
malformed markup: an unclosed or misnested tag only ends a block early or late.
"""

import codecs
import re
from html.parser import HTMLParser

from .errors import RecordError
from ...options import Option
from .base import Step

STEP_NAME = "ParseHtml"
METHODS = ("StructuredPlaintext", "StructuredMarkdown")
OPTIONS = (Option("method", "choice", "Plain text, or Markdown keeping headings, lists, "
                  "links and code.", default="StructuredPlaintext", allowed=METHODS),)

SKIPPED = frozenset({"head", "script", "style", "noscript", "template", "svg", "math",
                     "iframe", "object", "canvas"})
HEADINGS = {f"h{level}": level for level in range(1, 7)}
LISTS = frozenset({"ul", "ol", "menu"})
BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "header", "hgroup", "hr", "html", "legend", "li", "main", "nav", "p", "pre", "section",
    "summary", "table", "tbody", "tfoot", "thead", "tr", *HEADINGS, *LISTS})
# Blocks that always start anew; the others (p, div, ...) merely end the text
# before them, so that <li><p>text</p></li> stays one list item.
STRUCTURAL = frozenset({"li", "tr", "blockquote", "pre", "hr", "table", *HEADINGS, *LISTS})
CELLS = frozenset({"td", "th"})
# Inline Markdown: the HTML tags of each kind, and the kind's opening and closing marks.
INLINE_KINDS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic",
                "code": "code", "kbd": "code", "samp": "code", "tt": "code"}
INLINE_MARKS = {"bold": ("**", "**"), "italic": ("*", "*"), "code": ("`", "`")}

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_LONE_SURROGATE = re.compile("[\udc80-\udcff]")
_CODE_LANGUAGE = re.compile(r"(?:^|\s)(?:language|lang)-([\w+#.-]+)")
_BACKTICK_RUNS = re.compile(r"`+")
_URL_ESCAPES = str.maketrans({" ": "%20", "(": "%28", ")": "%29", "<": "%3C", ">": "%3E"})


def decode_document(data):
    """The document as text: `data` itself if it is a str, else decoded bytes."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        encoding = _declared_encoding(data)
        try:
            data = _decode(data, encoding)
        except UnicodeDecodeError as exc:
            raise RecordError(f"{STEP_NAME}: the document is not valid {encoding} text "
                              f"(byte {exc.start} cannot be decoded)",
                              hint="An HTML page in another encoding than UTF-8 must declare "
                                   'it in a <meta charset="..."> tag.') from None
    elif not isinstance(data, str):
        raise RecordError(f"{STEP_NAME}: the input must be text or bytes, "
                          f"not {type(data).__name__}")
    if "\x00" in data:
        raise RecordError(f"{STEP_NAME}: the document contains NUL characters; "
                          "it is not an HTML page")
    return data


def _decode(data, encoding):
    """`data` decoded; as in browsers, the five bytes that windows-1252 leaves
    undefined become the C1 control characters of the same value."""
    if encoding != "cp1252":
        return data.decode(encoding)
    return _LONE_SURROGATE.sub(lambda m: chr(ord(m.group()) - 0xDC00),
                               data.decode(encoding, "surrogateescape"))


def _declared_encoding(data):
    """The encoding of an HTML byte string: its byte-order mark, else its
    <meta charset>, else UTF-8 (the HTML standard's prescan, simplified)."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    match = _META_CHARSET.search(data, 0, 1024)
    if match:
        try:
            name = codecs.lookup(match.group(1).decode("ascii")).name
        except LookupError:
            return "utf-8"
        # As in browsers: Latin-1 and ASCII labels mean windows-1252, and a
        # UTF-16 label read from ASCII-compatible bytes cannot be true.
        if name in ("iso8859-1", "ascii"):
            return "cp1252"
        if not name.startswith("utf-16"):
            return name
    return "utf-8"


def html_to_text(html, markdown=False):
    """The text of `html` (a str) as StructuredPlaintext, or as Markdown."""
    converter = _Converter(markdown)
    converter.feed(html)
    converter.close()
    return converter.text()


class _Mark:
    """An inline Markdown mark that is open: written lazily, so that an empty
    <b></b> or <a></a> leaves nothing behind."""

    def __init__(self, kind, opening, closing):
        self.kind, self.opening, self.closing = kind, opening, closing


class _Converter(HTMLParser):
    """Collects the blocks of a document; `text()` joins them."""

    def __init__(self, markdown):
        super().__init__(convert_charrefs=True)
        self.markdown = markdown
        self.blocks = []            # (kind, text) of each finished block
        self.skip = None            # [tag, depth] of the element being skipped
        self.lists = []             # [ordered, next number, width of the current marker]
        self.quote_depth = 0
        self.group = 0              # counts lists and tables: their lines stay together
        self.pre = None             # [text pieces, language] inside <pre>
        self.open_marks = []        # inline marks open now, in opening order
        self._new_block()

    def _new_block(self, kind="block", prefix="", indent=""):
        self.kind, self.prefix, self.indent = kind, prefix, indent
        self.pieces = []
        self.space = False          # whitespace seen, written before the next word
        self.written = []           # marks whose opening is in self.pieces
        self.pending = list(self.open_marks)   # marks to open before the next word

    # ------------------------------------------------------------ tokens

    def handle_starttag(self, tag, attrs):
        if self._skipping_start(tag):
            return
        attrs = dict(attrs)
        if self.pre is not None:
            self._start_in_pre(tag, attrs)
        elif tag in SKIPPED:
            self.skip = [tag, 1]
        elif tag == "br":
            self.pieces.append("\n")
            self.space = False
        elif tag in CELLS:
            if self.pieces:
                self.pieces.append(" | ")
                self.space = False
        elif tag in BLOCKS:
            self._start_block(tag, attrs)
        else:
            self._start_inline(tag, attrs)

    def handle_endtag(self, tag):
        if self.skip is not None:
            if tag == self.skip[0]:
                self.skip[1] -= 1
                if self.skip[1] == 0:
                    self.skip = None
        elif self.pre is not None:
            if tag == "pre":
                self._end_pre()
        elif tag in BLOCKS:
            self._end_block(tag)
        elif tag in INLINE_KINDS or tag == "a":
            self._close_mark("link" if tag == "a" else INLINE_KINDS[tag])

    def handle_data(self, data):
        if self.skip is not None:
            return
        if self.pre is not None:
            self.pre[0].append(data)
            return
        words = " ".join(data.split())
        if data[:1].isspace():
            self.space = True
        if words:
            self._write_word_run(words)
            self.space = data[-1:].isspace()

    def _skipping_start(self, tag):
        """True while inside a skipped element (counting nested ones of its
        kind); a <body> ends a <head> whose end tag is missing."""
        if self.skip is None:
            return False
        if tag == self.skip[0]:
            self.skip[1] += 1
        elif tag == "body" and self.skip[0] == "head":
            self.skip = None
            return False
        return True

    # ------------------------------------------------------------ blocks

    def _start_block(self, tag, attrs):
        if tag not in STRUCTURAL and (not self.pieces or self._in_row()):
            return                      # nothing to end yet, or a <div> in a table cell
        self._flush()
        if tag in LISTS:
            self.group += 0 if self.lists else 1
            self.lists.append([tag == "ol", _list_start(attrs), 0])
        elif tag == "li":
            self._start_item()
        elif tag in HEADINGS:
            self.kind = "heading"
            self.prefix = "#" * HEADINGS[tag] + " " if self.markdown else ""
        elif tag == "tr":
            self.kind = ("row", self.group)
        elif tag == "table":
            self.group += 1
        elif tag == "blockquote":
            self.quote_depth += 1
        elif tag == "pre":
            self.pre = [[], _code_language(attrs)]
        elif tag == "hr" and self.markdown:
            self._add_block("block", "---")

    def _end_block(self, tag):
        if tag not in STRUCTURAL and self._in_row():
            return
        self._flush()
        if tag in LISTS and self.lists:
            self.lists.pop()
        elif tag == "blockquote" and self.quote_depth:
            self.quote_depth -= 1

    def _in_row(self):
        return isinstance(self.kind, tuple) and self.kind[0] == "row"

    def _start_item(self):
        """A list item: in Markdown, "- " or "N. ", indented under its parents."""
        if not self.lists:              # an <li> outside any list
            self.group += 1
            self.lists.append([False, 1, 0])
        if not self.markdown:
            self.kind = ("item", self.group)
            return
        level = self.lists[-1]
        marker = f"{level[1]}. " if level[0] else "- "
        level[1] += 1
        level[2] = len(marker)
        outer = " " * sum(width for _, _, width in self.lists[:-1])
        self._new_block(("item", self.group), outer + marker, outer + " " * len(marker))

    def _flush(self):
        """End the current block: close its marks, store its lines, start a new one."""
        for mark in reversed(self.written):
            self.pieces.append(mark.closing)
        lines = [line.strip() for line in "".join(self.pieces).split("\n")]
        lines = [line for line in lines if line]
        kind, prefix, indent = self.kind, self.prefix, self.indent
        self._new_block()
        if not lines:
            return
        if kind == "heading":
            lines = [" ".join(lines)]
        lines = [prefix + lines[0], *(indent + line for line in lines[1:])]
        self._add_block(kind, "\n".join(lines))

    def _add_block(self, kind, text):
        if self.markdown and self.quote_depth:
            quote = "> " * self.quote_depth
            text = "\n".join((quote + line).rstrip() for line in text.split("\n"))
        self.blocks.append((kind, text))

    # ------------------------------------------------------------ <pre>

    def _start_in_pre(self, tag, attrs):
        if tag == "br":
            self.pre[0].append("\n")
        elif tag == "code" and self.pre[1] is None:
            self.pre[1] = _code_language(attrs)

    def _end_pre(self):
        pieces, language = self.pre
        self.pre = None
        text = "".join(pieces)
        # As in browsers: a newline right after <pre> is not content.
        text = text[1:] if text.startswith("\n") else text
        text = text.rstrip()
        if not text.strip():
            return
        if self.markdown:
            longest = max((len(run) for run in _BACKTICK_RUNS.findall(text)), default=0)
            fence = "`" * max(3, longest + 1)
            text = f"{fence}{language or ''}\n{text}\n{fence}"
        self._add_block("block", text)

    # ------------------------------------------------------------ inline marks

    def _start_inline(self, tag, attrs):
        if not self.markdown:
            return
        if tag == "a":
            href = (attrs.get("href") or "").strip()
            if href and not href.lower().startswith("javascript:"):
                self._open_mark("link", "[", f"]({href.translate(_URL_ESCAPES)})")
        elif tag in INLINE_KINDS:
            self._open_mark(INLINE_KINDS[tag], *INLINE_MARKS[INLINE_KINDS[tag]])

    def _open_mark(self, kind, opening, closing):
        """Open a mark unless one of its kind is open already (<b><b>x</b></b>)."""
        if any(mark.kind == kind for mark in self.open_marks):
            return
        mark = _Mark(kind, opening, closing)
        self.open_marks.append(mark)
        self.pending.append(mark)

    def _close_mark(self, kind):
        mark = next((m for m in self.open_marks if m.kind == kind), None)
        if mark is None:
            return
        self.open_marks.remove(mark)
        if mark in self.pending:        # nothing was written inside it: drop it
            self.pending.remove(mark)
        elif mark in self.written:
            self.written.remove(mark)
            self.pieces.append(mark.closing)

    def _write_word_run(self, words):
        """Write words: the pending space first, then the marks opened since."""
        if self.space and self.pieces and self.pieces[-1] != "\n":
            self.pieces.append(" ")
        for mark in self.pending:
            self.pieces.append(mark.opening)
            self.written.append(mark)
        self.pending = []
        self.pieces.append(words)

    # ------------------------------------------------------------ result

    def close(self):
        super().close()
        if self.pre is not None:        # an unclosed <pre> runs to the end
            self._end_pre()
        self._flush()

    def text(self):
        """The blocks, separated by a blank line except between the items of
        one list (nested lists included) or the rows of one table."""
        out = []
        previous = None
        for kind, text in self.blocks:
            if previous is not None:
                out.append("\n" if isinstance(kind, tuple) and kind == previous else "\n\n")
            out.append(text)
            previous = kind
        return "".join(out)


def _list_start(attrs):
    """The first number of an <ol> (its start attribute), 1 by default."""
    try:
        return int(attrs.get("start") or 1)
    except ValueError:
        return 1


def _code_language(attrs):
    """The language of a code block from class="language-x" (or "lang-x")."""
    match = _CODE_LANGUAGE.search(attrs.get("class") or "")
    return match.group(1) if match else None


class ParseHtml(Step):
    """The pipeline step."""

    name = STEP_NAME
    OPTIONS = OPTIONS
    builder = "aidb.html_parse_config()"

    def run(self, data):
        """[the document's text], or [] if it has none; RecordError if `data`
        is not text."""
        if data is None:
            return []
        text = html_to_text(decode_document(data),
                            markdown=self.options["method"] == "StructuredMarkdown")
        return [text] if text else []
