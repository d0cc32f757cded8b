"""Step KnowledgeBase: embed each part with a registered model and store it
(always the last step). Options come from aidb.knowledge_base_config()."""

from ...errors import InvalidInput

DISTANCE_OPERATORS = {"L2": "<->", "Cosine": "<=>", "InnerProduct": "<#>"}
DATA_FORMATS = ("Text", "Pdf", "Image")
INDEX_TYPES = ("hnsw", "ivfflat", "none")
OPTIONS = ("model", "data_format", "distance_operator", "vector_index")


class KnowledgeBase:
    name = "KnowledgeBase"

    @staticmethod
    def validate_options(options):
        """Check the options (the model's existence is checked by the caller)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidInput(f'KnowledgeBase: unknown option "{unknown[0]}"',
                               hint="Build the options with aidb.knowledge_base_config().")
        if not isinstance(options.get("model"), str) or not options["model"]:
            raise InvalidInput("KnowledgeBase: the option \"model\" is required",
                               hint="For example: aidb.knowledge_base_config('minilm').")
        normalized = {
            "model": options["model"],
            "data_format": options.get("data_format") or "Text",
            "distance_operator": options.get("distance_operator") or "L2",
            "vector_index": options.get("vector_index") or {"type": "hnsw"},
        }
        _one_of("data_format", normalized["data_format"], DATA_FORMATS)
        _one_of("distance_operator", normalized["distance_operator"], DISTANCE_OPERATORS)
        index = normalized["vector_index"]
        if not isinstance(index, dict):
            raise InvalidInput("KnowledgeBase: \"vector_index\" must be a JSON object, "
                               "such as {\"type\": \"hnsw\"}")
        _one_of("vector_index.type", index.get("type", "hnsw"), INDEX_TYPES)
        normalized["vector_index"] = _check_index_settings(index)
        return normalized


# pgvector's bounds for each index parameter.
INDEX_SETTINGS = {"hnsw": {"m": (2, 100), "ef_construction": (4, 1000)},
                  "ivfflat": {"lists": (1, 32768)}, "none": {}}


def _check_index_settings(index):
    kind = index.get("type", "hnsw")
    allowed = INDEX_SETTINGS[kind]
    for key, value in index.items():
        if key == "type":
            continue
        if key not in allowed:
            raise InvalidInput(f'KnowledgeBase: a {kind} index has no setting "{key}"',
                               hint="Settings: " + (", ".join(allowed) or "none") + ".")
        low, high = allowed[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f'KnowledgeBase: vector_index "{key}" must be an integer '
                               f"from {low} to {high}, not {value}")
    return {"type": kind, **{k: v for k, v in index.items() if k != "type"}}


def _one_of(option, value, allowed):
    if value not in allowed:
        raise InvalidInput(f'KnowledgeBase: "{option}" cannot be "{value}"',
                           hint="Use one of: " + ", ".join(allowed) + ".")
