"""The one way the engine builds SQL text (docs/architecture.md, "Building SQL").

A statement is written in the code as a template: SQL in which `%s` marks a
parameter and `{name}` a slot. A slot takes only what this module makes:
an identifier quoted by `ident()`, a name PostgreSQL quoted itself
(`quoted()`, e.g. format('%I.%I') or a regclass), or another composed
statement; a plain string is refused. A composed statement keeps the code's
text apart from the names put into it, so a table called `pct%s` or a column
called `id{x}` stays text inside a quoted identifier: never a parameter
marker, never a slot, whichever database adapter renders it.
"""

import re

_SLOT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_MARKER = re.compile(r"%[s%]")


class Name:
    """An identifier (or schema-qualified name) that is already quoted."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text

    def __eq__(self, other):
        return isinstance(other, Name) and other.text == self.text

    def __hash__(self):
        return hash(self.text)


def ident(*parts):
    """A quoted identifier, or a qualified name from several parts."""
    return Name(".".join('"' + part.replace('"', '""') + '"' for part in parts))


def quoted(text):
    """A name that PostgreSQL quoted itself (format %I, regclass, regtype output)."""
    return Name(text)


class Sql:
    """A composed statement: ("code", text) fragments whose %s are parameters
    and %% a percent sign, and ("name", text) fragments copied as they are."""

    __slots__ = ("fragments",)

    def __init__(self, fragments):
        self.fragments = tuple(fragments)

    def render(self, placeholder, percent):
        """The statement's text: the n-th %s (from 0) becomes placeholder(n);
        a literal percent sign, in code or in a name, becomes `percent`."""
        out, counter = [], iter(range(1 << 30))
        for kind, text in self.fragments:
            if kind == "code":
                out.append(_MARKER.sub(
                    lambda m: percent if m.group() == "%%" else placeholder(next(counter)), text))
            else:
                out.append(text.replace("%", percent))
        return "".join(out)

    def __add__(self, other):
        return Sql(self.fragments + as_sql(other).fragments)

    def __eq__(self, other):
        return isinstance(other, Sql) and other.fragments == self.fragments

    def __hash__(self):
        return hash(self.fragments)


def sql(template, **slots):
    """Compose `template` (the code's own text) with the named slots filled."""
    fragments, position = [], 0
    for match in _SLOT.finditer(template):
        fragments.append(("code", template[position:match.start()]))
        fragments.extend(_fragments_of(match.group(1), slots))
        position = match.end()
    fragments.append(("code", template[position:]))
    return Sql(fragment for fragment in fragments if fragment[1])


def as_sql(statement):
    """A statement as Sql; a plain string is code (its %s are parameters)."""
    return statement if isinstance(statement, Sql) else Sql([("code", statement)])


def _fragments_of(slot, slots):
    if slot not in slots:
        raise KeyError(f"SQL template slot {{{slot}}} has no value")
    value = slots[slot]
    if isinstance(value, Sql):
        return value.fragments
    if isinstance(value, Name):
        return [("name", value.text)]
    raise TypeError(f"SQL slot {{{slot}}} takes ident(), quoted() or sql(), "
                    f"not {type(value).__name__}")
