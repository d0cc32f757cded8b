"""Step SummarizeText: a summary of each text, written by a chat model
(provider openai_completions), as one part.

Options (a JSON object, built in SQL by `aidb.summarize_text_config`):

- model (required): the name of a model of provider openai_completions.
- max_length (integer >= 1, default 120): the summary's length in words.
  The model is asked for at most that many, and an answer that is longer
  anyway is cut after that many words, so the bound always holds.
- prompt (text, optional): the instructions, sent as the system message in
  place of the default ones; the length limit is appended to them.

The text itself is the user message, so that instructions and data stay
apart. An empty text is not sent: it has no summary (no part).
"""

import re

from ...errors import InvalidInput
from .errors import RecordError
from ...options import Option
from .base import Step

STEP_NAME = "SummarizeText"
OPTIONS = (
    Option("model", "string", "A model of provider openai_completions.", required=True,
           example="writer"),
    Option("max_length", "integer", "The summary's length in words, at most.", default=120,
           minimum=1, maximum=100_000),
    Option("prompt", "string", "Instructions replacing the default ones."),
)
DEFAULT_PROMPT = ("Summarize the text that the user sends. Answer with the summary only, "
                  "in the language of the text.")
_WORD = re.compile(r"\S+")


def system_message(options):
    """The instructions sent with every text."""
    prompt = (options["prompt"] or DEFAULT_PROMPT).strip()
    return f"{prompt}\n\nUse at most {options['max_length']} words."


def cut_to_words(text, max_words):
    """`text` up to the end of its `max_words`-th word (its layout kept)."""
    for count, word in enumerate(_WORD.finditer(text), start=1):
        if count == max_words:
            return text[:word.end()]
    return text


class SummarizeText(Step):
    """The pipeline step. `model_loader(name)` returns a ready model
    instance; the model is loaded once, at construction. (Whether the model
    exists, and makes text, is checked then, not by validate_options.)"""

    name = STEP_NAME
    OPTIONS = OPTIONS
    builder = "aidb.summarize_text_config()"

    def __init__(self, options, model_loader):
        super().__init__(options)
        self.model = model_loader(self.options["model"])
        if not callable(getattr(self.model, "complete", None)):
            provider = getattr(self.model, "provider", None) or "unknown"
            raise InvalidInput(f'{STEP_NAME}: model "{self.options["model"]}" is of provider '
                               f"{provider}, which cannot write text",
                               hint="Use a model of provider openai_completions.")
        self.system = system_message(self.options)

    def run(self, text):
        """[the summary of `text`], or [] for an empty text."""
        if text is None:
            return []
        if not isinstance(text, str):
            raise RecordError(f"{STEP_NAME}: the input must be text, not {type(text).__name__}",
                              hint="Put ParseHtml, ParsePdf or PerformOcr before it "
                                   "to turn documents into text.")
        if not text.strip():
            return []
        summary = self.model.complete(text, system=self.system).replace("\x00", "")
        summary = cut_to_words(summary, self.options["max_length"]).strip()
        return [summary] if summary else []
