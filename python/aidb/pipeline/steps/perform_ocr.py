"""Step PerformOcr: the text in an image, read by the Tesseract OCR engine,
as one part.

Options (a JSON object, built in SQL by `aidb.ocr_config`):

- language (default "eng"): Tesseract's language code, or several joined by
  "+" ("eng+deu"); each needs its data installed where the pipeline runs
  (Debian: tesseract-ocr-eng, tesseract-ocr-deu, ...).
- psm (integer 1 or 3 to 13, default Tesseract's own, 3): the page
  segmentation mode, e.g. 6 for a single block of text, 7 for one line.

Any image format Pillow reads (PNG, JPEG, TIFF, GIF, BMP, WebP, ...) is
accepted; a multi-frame image is read from its first frame. Bytes that are
not a readable image are a RecordError for that record; a missing tesseract
program or language blocks the pipeline (PipelinePermanent) until installed.
"""

import io

from ...errors import AidbError, PIPELINE_PERMANENT
from .errors import RecordError, require_bytes
from ...options import Option, OptionChecker
from .base import Step

STEP_NAME = "PerformOcr"
OPTIONS = (
    # Tesseract's language codes (eng, chi_sim, script/Latin), joined by "+".
    Option("language", "string", "Tesseract language code(s).", default="eng",
           pattern=r"[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)?(?:\+[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)?)*",
           pattern_says='a Tesseract language code such as "eng", or several joined by "+"'),
    # 0 only detects the orientation (no text); tesseract does not implement 2.
    Option("psm", "integer", "Tesseract's page segmentation mode (default: Tesseract's, 3).",
           minimum=1, maximum=13),
)
TIMEOUT_SECONDS = 300       # a pathological image must not hold a batch forever
INSTALL_HINT = ("Install it where the pipeline runs, the database server or the external "
                "worker's machine (Debian: apt-get install tesseract-ocr tesseract-ocr-eng).")


def validate_options(options):
    """Check PerformOcr options; return them normalised, defaults filled in."""
    check = OptionChecker(STEP_NAME, OPTIONS, hint="Build the options with aidb.ocr_config().")
    checked = check.check(options)
    if checked["psm"] == 2:
        raise check.refuse("psm", "1 or 3 to 13 (Tesseract does not implement 2)", 2,
                           hint="3 (automatic) is Tesseract's default.")
    return checked


def load_image(data):
    """A Pillow image of `data`, upright and flattened on white; RecordError
    if `data` is not a readable image."""
    from PIL import Image, ImageOps

    data = require_bytes(data, STEP_NAME, "an image file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()        # decodes now: a truncated file fails here, not in tesseract
        return _flatten(ImageOps.exif_transpose(image))
    except Exception as exc:  # noqa: BLE001 — a damaged file can raise anything
        raise RecordError(f"{STEP_NAME}: not a readable image: {_describe(exc)}") from None


def _flatten(image):
    """The image in a mode tesseract reads, transparent areas made white
    (dark text on a transparent background would otherwise turn all black)."""
    from PIL import Image

    if image.mode in ("1", "L", "RGB"):
        return image
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def check_tesseract(language):
    """Raise a pipeline-level error unless tesseract and the data of every
    language in `language` are installed."""
    import pytesseract

    try:
        available = set(pytesseract.get_languages())
    except pytesseract.TesseractNotFoundError:
        raise _tesseract_missing() from None
    missing = [code for code in language.split("+") if code not in available]
    if missing:
        raise AidbError(f"{STEP_NAME}: tesseract has no data for the language "
                        f"{', '.join(missing)} on the database server",
                        category=PIPELINE_PERMANENT,
                        hint="Installed: " + (", ".join(sorted(available)) or "none") + ". "
                             f"Debian packages them as tesseract-ocr-{missing[0].lower()}.")


def _tesseract_missing():
    return AidbError(f"{STEP_NAME}: tesseract is not installed on the database server",
                     category=PIPELINE_PERMANENT, hint=INSTALL_HINT)


def _describe(exc):
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class PerformOcr(Step):
    """The pipeline step: options are validated once, at construction, and
    the tesseract installation checked once, at the first image."""

    name = STEP_NAME
    OPTIONS = OPTIONS
    builder = "aidb.ocr_config()"
    validate_options = staticmethod(validate_options)

    def __init__(self, options):
        super().__init__(options)
        self._checked = False

    def run(self, data):
        """[the text read in the image], or [] if it shows none."""
        if data is None:
            return []
        if not self._checked:
            check_tesseract(self.options["language"])
            self._checked = True
        text = self._read(load_image(data))
        text = text.replace("\x00", "").strip()     # PostgreSQL text cannot hold NUL
        return [text] if text else []

    def _read(self, image):
        import pytesseract

        psm = self.options["psm"]
        try:
            return pytesseract.image_to_string(image, lang=self.options["language"],
                                               config=f"--psm {psm}" if psm else "",
                                               timeout=TIMEOUT_SECONDS)
        except pytesseract.TesseractNotFoundError:
            raise _tesseract_missing() from None
        except RuntimeError as exc:     # TesseractError, or the timeout
            raise RecordError(f"{STEP_NAME}: tesseract could not read the image: "
                              f"{_describe(exc)}") from None
