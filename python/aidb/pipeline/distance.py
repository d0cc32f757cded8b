"""The distance operators a KnowledgeBase may use: the one table that step
validation, the vector index (operator class) and retrieval (the operator,
through aidb._distance_operator) read."""

from ..errors import InvalidInput

# name -> (pgvector operator, pgvector operator class for vector columns)
DISTANCE_OPERATORS = {
    "L2": ("<->", "vector_l2_ops"),
    "Cosine": ("<=>", "vector_cosine_ops"),
    "InnerProduct": ("<#>", "vector_ip_ops"),
}


def operator_symbol(name):
    """The pgvector operator of distance `name` (as stored in a KnowledgeBase)."""
    if name not in DISTANCE_OPERATORS:
        raise InvalidInput(f'unknown distance operator "{name}"',
                           hint="Known: " + ", ".join(DISTANCE_OPERATORS) + ".")
    return DISTANCE_OPERATORS[name][0]


def operator_class(name):
    """The pgvector operator class an index of distance `name` is built with."""
    return DISTANCE_OPERATORS[name][1]
