"""Step KnowledgeBase: embed each part with a registered model and store it
(always the last step). Options come from aidb.knowledge_base_config()."""

from ...options import Option, OptionChecker
from ..distance import DISTANCE_OPERATORS

DATA_FORMATS = ("Text", "Pdf", "Image")
INDEX_TYPES = ("hnsw", "ivfflat", "none")
OPTIONS = (
    Option("model", "string", "The embedding model (aidb.create_model).", required=True,
           example="minilm"),
    Option("data_format", "choice", "What the source holds; Pdf and Image imply a parsing step.",
           default="Text", allowed=DATA_FORMATS),
    Option("distance_operator", "choice", "The distance the index and retrieval use.",
           default="L2", allowed=tuple(DISTANCE_OPERATORS)),
    Option("vector_index", "object", 'The vector index, such as {"type": "hnsw", "m": 16}.',
           default={"type": "hnsw"}),
)
_HINT = "Build the options with aidb.knowledge_base_config()."

# The settings of each index type, with pgvector's bounds.
_INDEX_TYPE = Option("type", "choice", "The index type.", default="hnsw", allowed=INDEX_TYPES)
INDEX_SETTINGS = {
    "hnsw": (_INDEX_TYPE,
             Option("m", "integer", "Links per node.", minimum=2, maximum=100),
             Option("ef_construction", "integer", "Candidates kept while building.",
                    minimum=4, maximum=1000)),
    "ivfflat": (_INDEX_TYPE,
                Option("lists", "integer", "Inverted lists.", minimum=1, maximum=32768)),
    "none": (_INDEX_TYPE,),
}


class KnowledgeBase:
    name = "KnowledgeBase"
    OPTIONS = OPTIONS

    @staticmethod
    def validate_options(options):
        """Check the options (the model's existence is checked by the caller)."""
        normalized = OptionChecker("KnowledgeBase", OPTIONS, hint=_HINT).check(options)
        normalized["vector_index"] = _check_index_settings(normalized["vector_index"])
        return normalized


def _check_index_settings(index):
    """The vector_index object checked: its type, then that type's settings."""
    kind = OptionChecker("KnowledgeBase", (_INDEX_TYPE,), prefix="vector_index.",
                         hint=_HINT).check({"type": index.get("type")})["type"]
    checked = OptionChecker("KnowledgeBase", INDEX_SETTINGS[kind], prefix="vector_index.",
                            scope=f"for a {kind} index", hint=_HINT).check(index, keep_absent=False)
    return {"type": kind, **{k: v for k, v in checked.items() if k != "type"}}
