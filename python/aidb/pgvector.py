"""How vectors travel from the engine to SQL: as little-endian float4 bytes
for the destination (aidb._float4_vector, src/vectors.c), as pgvector's text
form for the SQL functions that return one."""

import sys
from array import array


def float4_array(values):
    """`values` (a float sequence, or already an array('f')) as an array('f')."""
    if isinstance(values, array) and values.typecode == "f":
        return values
    return array("f", values)


def float4_array_from_bytes(data):
    """The array('f') of little-endian float4 bytes (OpenAI's base64 payload)."""
    values = array("f", data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def vector_bytes(values):
    """Little-endian float4 bytes of a vector, for aidb._float4_vector()."""
    values = float4_array(values)
    if sys.byteorder == "big":
        values = array("f", values)
        values.byteswap()
    return values.tobytes()


def vector_literal(values):
    """'[x,y,...]' for a sequence of floats. Nine significant digits round-trip
    a float4 exactly, and '%' formatting costs a third of str() per float."""
    return "[" + ",".join(["%.9g" % x for x in values]) + "]"
