"""The steps a pipeline can chain. Document steps (ParseHtml, ParsePdf,
PerformOcr) turn an object's bytes into text; text steps (ChunkText,
SummarizeText) turn a text into parts; KnowledgeBase, always last, embeds
the parts. Each step lives in its own module, imported only when used
(ParsePdf and PerformOcr pull in libraries a text pipeline never needs)."""

import importlib

from ...errors import InvalidInput
from .knowledge_base import KnowledgeBase

MAX_STEPS = 10

# operation -> (module, class)
STEP_MODULES = {
    "ChunkText": ("chunk_text", "ChunkText"),
    "ParseHtml": ("parse_html", "ParseHtml"),
    "ParsePdf": ("parse_pdf", "ParsePdf"),
    "PerformOcr": ("perform_ocr", "PerformOcr"),
    "SummarizeText": ("summarize_text", "SummarizeText"),
}
ACCEPTS_BYTES = ("ParseHtml", "ParsePdf", "PerformOcr")
NEEDS_MODEL = ("SummarizeText",)

# knowledge_base_config(data_format => ...) implies a parsing step when the
# pipeline has none of its own.
IMPLIED_BY_DATA_FORMAT = {"Pdf": "ParsePdf", "Image": "PerformOcr"}


def step_class(operation):
    module_name, class_name = STEP_MODULES[operation]
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)


# Binary documents only come from volumes (a table's data column is text).
VOLUME_ONLY = ("ParsePdf", "PerformOcr")


def validate_steps(steps, source_type="table"):
    """Check a list of (operation, options) and return it normalised as
    [{"operation": ..., "options": {...}}, ...]."""
    if not steps:
        raise InvalidInput("a pipeline needs at least one step",
                           hint="For example: step_1 => 'KnowledgeBase', "
                                "step_1_options => aidb.knowledge_base_config('minilm').")
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"a pipeline has at most {MAX_STEPS} steps, not {len(steps)}")
    normalized = [_validate_step(position, operation, options, len(steps))
                  for position, (operation, options) in enumerate(steps, start=1)]
    if source_type != "volume":
        _check_text_source(normalized)
    return normalized


def _check_text_source(steps):
    kb = knowledge_base_of(steps) or {}
    for position, step in enumerate(steps, start=1):
        if step["operation"] in VOLUME_ONLY:
            raise InvalidInput(f"step {position}: {step['operation']} needs a volume source",
                               hint="Table and view sources hold text; create a volume "
                                    "(aidb.create_volume) for PDF files and images.")
    if kb.get("data_format", "Text") != "Text":
        raise InvalidInput(f'KnowledgeBase: data_format "{kb["data_format"]}" needs a volume source',
                           hint="Table and view sources hold text: use data_format 'Text'.")


def _validate_step(position, operation, options, count):
    options = options or {}
    if not isinstance(options, dict):
        raise InvalidInput(f"step {position} ({operation}): options must be a JSON object")
    if operation == "KnowledgeBase":
        if position != count:
            raise InvalidInput(f"step {position}: KnowledgeBase must be the last step",
                               hint="Put the other steps (such as ChunkText) before it.")
        return {"operation": operation, "options": KnowledgeBase.validate_options(options)}
    if operation not in STEP_MODULES:
        known = ", ".join([*STEP_MODULES, "KnowledgeBase"])
        raise InvalidInput(f'step {position}: unknown operation "{operation}"',
                           hint=f"Known operations: {known}.")
    return {"operation": operation, "options": step_class(operation).validate_options(options)}


def models_of(steps):
    """Names of the models the steps use (SummarizeText, KnowledgeBase)."""
    return [s["options"]["model"] for s in steps
            if s["operation"] in (*NEEDS_MODEL, "KnowledgeBase")]


def text_steps_of(steps, model_loader=None):
    """Runnable instances of every step but KnowledgeBase, in order, with the
    parsing step the KnowledgeBase data_format implies."""
    operations = [s["operation"] for s in steps]
    kb = knowledge_base_of(steps)
    implied = IMPLIED_BY_DATA_FORMAT.get((kb or {}).get("data_format"))
    chain = [{"operation": implied, "options": {}}] if implied and implied not in operations else []
    chain += [s for s in steps if s["operation"] != "KnowledgeBase"]
    return [_instance(s, model_loader) for s in chain]


def _instance(step, model_loader):
    cls = step_class(step["operation"])
    options = cls.validate_options(step["options"])
    instance = cls(options, model_loader) if step["operation"] in NEEDS_MODEL else cls(options)
    instance.accepts_bytes = step["operation"] in ACCEPTS_BYTES
    return instance


def knowledge_base_of(steps):
    """The KnowledgeBase options, or None if the pipeline stores only text."""
    last = steps[-1]
    return last["options"] if last["operation"] == "KnowledgeBase" else None
