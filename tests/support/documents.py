"""Test documents made on the fly: an HTML page, multi-page PDFs with a real
text layer, and PNG images of rendered text that OCR can read back.

The PDF writer is a minimal hand-written one (PDF 1.4, one Helvetica text
stream per page, an exact cross-reference table): enough for pypdf to
extract every line back, with no PDF library needed to write it.
"""

import io
import os

# The page make_html() returns: every kind of block and inline element the
# ParseHtml step renders, plus what it must drop (head, script, style).
SAMPLE_HTML = """<!DOCTYPE html>
<html>
<head>
  <meta charset="{charset}">
  <title>Not part of the text</title>
  <style>p {{ color: red; }}</style>
  <script>document.write("<p>no script text</p>");</script>
</head>
<body>
  <h1>Café   guide</h1>
  <p>Our <b>best</b> beans come from <a href="https://example.com/beans">small farms</a>.<br>
     Roasted weekly.</p>
  <h2>Menu</h2>
  <ul>
    <li>Espresso</li>
    <li>Flat <em>white</em>
      <ul><li>with oat milk</li></ul>
    </li>
  </ul>
  <ol><li>Grind</li><li>Brew</li></ol>
  <pre><code class="language-sh">brew --strong
  --hot</code></pre>
  <noscript>Enable JavaScript</noscript>
  <blockquote><p>Best in town.</p></blockquote>
</body>
</html>
"""

DEJAVU_SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def make_html(charset="utf-8"):
    """SAMPLE_HTML encoded in `charset`, which its <meta> tag declares."""
    return SAMPLE_HTML.format(charset=charset).encode(charset)


# ---------------------------------------------------------------- PDF

def make_pdf(pages, broken_pages=()):
    """A PDF with one page per text in `pages` (lines split on "\\n"; Latin-1
    only). Each page of `broken_pages` (0-based) gets a content stream in an
    encoding no reader knows, so that reading its text fails."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: _pages_tree(len(pages)),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for index, text in enumerate(pages):
        page, content = _page_objects(index)
        objects[page] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                         b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content)
        objects[content] = _content_stream(text, broken=index in broken_pages)
    return _write_pdf(objects)


def _page_objects(index):
    """Object numbers of page `index` and of its content stream."""
    return 4 + 2 * index, 5 + 2 * index


def _pages_tree(count):
    kids = " ".join(f"{_page_objects(i)[0]} 0 R" for i in range(count))
    return f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode()


def _content_stream(text, broken=False):
    """Draw each line of `text` in 14-point Helvetica, top-down."""
    lines = [_pdf_string(line) for line in text.split("\n")] if text else []
    operators = "BT /F1 14 Tf 18 TL 72 720 Td " + " T* ".join(f"{s} Tj" for s in lines) + " ET"
    data = operators.encode("latin-1")
    extra = b" /Filter /NoSuchFilter" if broken else b""
    return b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(data), extra, data)


def _pdf_string(line):
    escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({escaped})"


def _write_pdf(objects):
    """The file: header, numbered objects, cross-reference table, trailer."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number]
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


# ---------------------------------------------------------------- PNG

def make_text_png(text, size=40, margin=40):
    """A PNG of `text` (lines split on "\\n") in DejaVu Sans: black on white,
    large and crisp, as a scanner would give a clean page."""
    from PIL import Image, ImageDraw, ImageFont

    if not os.path.exists(DEJAVU_SANS):
        raise RuntimeError(f"{DEJAVU_SANS} is missing: install fonts-dejavu-core "
                           "(scripts/setup.sh does)")
    font = ImageFont.truetype(DEJAVU_SANS, size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox(
        (0, 0), text, font=font, spacing=size // 2)
    image = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 255)
    ImageDraw.Draw(image).multiline_text((margin - left, margin - top), text, font=font,
                                         fill=0, spacing=size // 2)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
