"""pgvector's text form, the way vectors travel from the engine to SQL."""


def vector_literal(values):
    """'[x,y,...]' for a sequence of floats (shortest exact repr of each)."""
    return "[" + ",".join(map(str, values)) + "]"
