"""Keys as Python dict keys, matching PostgreSQL's equality for them.

A batch matches the keys it claimed, locked, read and wrote in Python
dicts and sets. Python's == agrees with the key types' own equality except
for NaN: float8 and numeric NaN equal themselves in PostgreSQL (a unique
index holds one), while float('nan') != float('nan'), so a NaN key was
never found again: it stayed in the backlog forever and its destination
rows were treated as gone. Dicts and sets compare by identity first, so
every NaN becomes one shared object.
"""

import decimal
import math

_FLOAT_NAN = float("nan")
_DECIMAL_NAN = decimal.Decimal("NaN")


def canonical_key(key):
    """`key`, or the shared NaN object of its type."""
    if isinstance(key, float) and math.isnan(key):
        return _FLOAT_NAN
    if isinstance(key, decimal.Decimal) and key.is_nan():
        return _DECIMAL_NAN
    return key
