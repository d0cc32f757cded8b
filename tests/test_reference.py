"""docs/reference.md stays in step with the installed extension.

Every public function and view of schema aidb (any name not starting with an
underscore) must have an entry there — a heading that names it, such as
    #### `aidb.run_pipeline(name text) → void`
— every argument of a function must appear in its entry, and every entry
must name something that exists (so a renamed or removed function cannot
linger in the documentation).
"""

import os
import re

import pytest

REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "reference.md")
ENTRY_HEADING = re.compile(r"^#{3,4} .*$", re.MULTILINE)


def sql_reference():
    """The text of docs/reference.md's '## Functions' and '## Views' sections."""
    with open(REFERENCE, encoding="utf-8") as reference:
        text = reference.read()
    sections = re.findall(r"^## (?:Functions|Views)\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert len(sections) == 2, "docs/reference.md lacks its '## Functions' or '## Views' section"
    return "".join(sections)


def reference_entries():
    """{name: entry text} for every heading of the reference that names aidb.<name>;
    an entry runs from its heading to the next heading."""
    reference = sql_reference()
    headings = list(ENTRY_HEADING.finditer(reference))
    entries = {}
    for heading, following in zip(headings, headings[1:] + [None]):
        body = reference[heading.start():following.start() if following else len(reference)]
        for name in re.findall(r"`aidb\.(\w+)", heading.group()):
            entries[name] = body
    return entries


def public_objects(conn):
    """{name: [argument names]} of the public functions of schema aidb, and
    {name: []} of its views."""
    rows = conn.execute("""
        SELECT p.proname, coalesce(p.proargnames, '{}')
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'aidb'::regnamespace
        UNION ALL
        SELECT c.relname, '{}'
        FROM pg_catalog.pg_class c
        WHERE c.relnamespace = 'aidb'::regnamespace AND c.relkind IN ('v', 'm')
    """).fetchall()
    objects = {name: arguments for name, arguments in rows if not name.startswith("_")}
    assert {"create_pipeline", "pipem"} <= set(objects), "the query found no aidb objects"
    return objects


@pytest.fixture
def entries():
    return reference_entries()


def test_every_public_function_and_view_has_an_entry(conn, entries):
    missing = sorted(set(public_objects(conn)) - set(entries))
    assert not missing, f"docs/reference.md lacks entries for: {', '.join(missing)}"


def test_every_entry_names_an_existing_object(conn, entries):
    stale = sorted(set(entries) - set(public_objects(conn)))
    assert not stale, f"docs/reference.md documents what does not exist: {', '.join(stale)}"


def test_every_argument_appears_in_its_entry(conn, entries):
    undocumented = [
        f"{name}({argument})"
        for name, arguments in sorted(public_objects(conn).items()) if name in entries
        for argument in arguments
        if not re.search(rf"\b{re.escape(argument)}\b", entries[name])
    ]
    assert not undocumented, f"arguments missing from docs/reference.md: {undocumented}"
