"""The steps a pipeline can chain. Text steps turn one text into parts;
KnowledgeBase, always last, embeds the parts."""

from ...errors import InvalidInput
from .knowledge_base import KnowledgeBase

MAX_STEPS = 10


def _text_steps():
    from .chunk_text import ChunkText
    return {"ChunkText": ChunkText}


# Steps of DESIGN.md that need a volume source (issue: volumes and document steps).
DOCUMENT_STEPS = ("ParseHtml", "ParsePdf", "PerformOcr", "SummarizeText")


def validate_steps(steps):
    """Check a list of (operation, options) and return it normalised as
    [{"operation": ..., "options": {...}}, ...]."""
    if not steps:
        raise InvalidInput("a pipeline needs at least one step",
                           hint="For example: step_1 => 'KnowledgeBase', "
                                "step_1_options => aidb.knowledge_base_config('minilm').")
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"a pipeline has at most {MAX_STEPS} steps, not {len(steps)}")
    text_steps = _text_steps()
    normalized = []
    for position, (operation, options) in enumerate(steps, start=1):
        options = options or {}
        if not isinstance(options, dict):
            raise InvalidInput(f"step {position} ({operation}): options must be a JSON object")
        if operation == "KnowledgeBase":
            if position != len(steps):
                raise InvalidInput(f"step {position}: KnowledgeBase must be the last step",
                                   hint="Put the text steps (such as ChunkText) before it.")
            options = KnowledgeBase.validate_options(options)
        elif operation in text_steps:
            options = text_steps[operation].validate_options(options)
        elif operation in DOCUMENT_STEPS:
            raise InvalidInput(f"step {position}: {operation} is not available for table "
                               "and view sources")
        else:
            known = ", ".join([*text_steps, "KnowledgeBase"])
            raise InvalidInput(f'step {position}: unknown operation "{operation}"',
                               hint=f"Known operations: {known}.")
        normalized.append({"operation": operation, "options": options})
    return normalized


def text_steps_of(steps):
    """Runnable instances of the text steps of a validated step list."""
    classes = _text_steps()
    return [classes[s["operation"]](s["options"]) for s in steps if s["operation"] in classes]


def knowledge_base_of(steps):
    """The KnowledgeBase options, or None if the pipeline stores only text."""
    last = steps[-1]
    return last["options"] if last["operation"] == "KnowledgeBase" else None
