"""pgvector's text form, the way vectors travel from the engine to SQL."""


def vector_literal(values):
    """'[x,y,...]' for a sequence of floats. Nine significant digits round-trip
    a float4 exactly, and '%' formatting costs a third of str() per float —
    which matters at 1,536 floats a vector. (A real[] parameter would be
    slower still: PL/Python converts each element through its text form.)"""
    return "[" + ",".join(["%.9g" % x for x in values]) + "]"
