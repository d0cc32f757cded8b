"""docs/reference.md holds to the code, and the README's examples run.

What is checked, against the installed extension and the engine's own
declarations (never against a copy kept here):

- every public function of schema aidb (a name not starting with "_") has
  an entry whose signature block is exactly what PostgreSQL prints for it:
  argument names, types and defaults, and the result;
- every view's column table lists its columns, in order, with their types;
- every setting aidb defines (pg_settings, "aidb.%") has a row with its type,
  unit, default, allowed values and context;
- every option of every model provider, credential, step type, vector index
  and volume kind has a row with its default and allowed values, worded as
  the option checker words them, and the checker keeps those bounds;
- every option of `aidb worker` has a row with its environment variable and
  default, and the command honours them;
- whatever the reference documents must exist: a removed function, view,
  setting, option or flag fails here until its entry is removed;
- the README's quick start and worked example run on a real cluster, with
  the test model server standing in for minilm.

The formats are described in docs/reference.md itself; every failure says
which section of it to change and what to write there.
"""

import argparse
import csv
import json
import os
import re

import pytest

from tests.support.common import ROOT
from tests.support.pipeline_checks import MODEL

REFERENCE = os.path.join(ROOT, "docs", "reference.md")
README = os.path.join(ROOT, "README.md")
CORPUS = os.path.join(ROOT, "demo", "corpus.csv")


# ------------------------------------------------------------ reading the docs

def read(path):
    """The text of the file at `path`."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def section(text, title, level=2):
    """The body of the heading `title` (at `level`) up to the next heading of
    that level or higher."""
    hashes = "#" * level
    match = re.search(rf"^{hashes} {re.escape(title)}\n(.*?)(?=^#{{1,{level}}} |\Z)",
                      text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/reference.md has no '{hashes} {title}' section"
    return match.group(1)


def entries(body, level=4):
    """[(heading text, entry body)] for every heading of `level` in `body`; an
    entry runs to the next heading of any level."""
    headings = list(re.finditer(rf"^{'#' * level} (.*)$", body, re.MULTILINE))
    found = []
    for heading in headings:
        rest = body[heading.end():]
        following = re.search(r"^#{1,6} ", rest, re.MULTILINE)
        found.append((heading.group(1), rest[:following.start()] if following else rest))
    return found


def named_entries(body):
    """{name: entry} for every entry whose heading names `aidb.<name>`."""
    named = {}
    for heading, text in entries(body):
        for name in re.findall(r"`aidb\.(\w+)`", heading):
            named[name] = text
    return named


def table_rows(text):
    """The data rows of the first Markdown table in `text`, as lists of
    stripped cells (header and separator dropped)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break           # the first table ended
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]


def code_blocks(text):
    """The bodies of the fenced code blocks in `text`."""
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def unquote(cell):
    """A cell's text without the backticks around it."""
    return cell.strip().strip("`")


def normalised_signature(text):
    """A signature with white space collapsed, as PostgreSQL would print it."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", re.sub(r"\s+,", ",", text)))


@pytest.fixture(scope="module")
def reference():
    """The text of docs/reference.md."""
    return read(REFERENCE)


# ------------------------------------------------------------------- functions

def public_functions(conn):
    """{name: [signature as the reference must print it]} of schema aidb."""
    rows = conn.execute("""
        SELECT p.proname,
               format('aidb.%s(%s) RETURNS %s', p.proname, pg_get_function_arguments(p.oid),
                      pg_get_function_result(p.oid))
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'aidb'::regnamespace AND p.proname !~ '^_'
        ORDER BY 1, 2""").fetchall()
    functions = {}
    for name, signature in rows:
        functions.setdefault(name, []).append(signature)
    assert {"create_pipeline", "retrieve_text"} <= set(functions), "the query found no aidb functions"
    return functions


def public_views(conn):
    """{name: [(column, type)]} of the views of schema aidb."""
    rows = conn.execute("""
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace = 'aidb'::regnamespace AND c.relkind IN ('v', 'm')
          AND c.relname !~ '^_'
        ORDER BY c.relname, a.attnum""").fetchall()
    views = {}
    for view, column, type_name in rows:
        views.setdefault(view, []).append((column, type_name))
    assert "pipem" in views, "the query found no aidb views"
    return views


def test_every_function_is_documented_with_its_exact_signature(conn, reference):
    """Each public function has an entry with its exact signature and who may call it."""
    documented = named_entries(section(reference, "Functions"))
    problems = []
    for name, signatures in public_functions(conn).items():
        if name not in documented:
            problems.append(f"aidb.{name} has no entry: add one under '## Functions' (heading "
                            f"'#### `aidb.{name}`', then a ``` block holding exactly:\n    "
                            + "\n    ".join(signatures) + "\n  then what it does, its errors, "
                            "and a line '**Who may call:** ...')")
            continue
        blocks = {normalised_signature(block) for block in code_blocks(documented[name])
                  if block.lstrip().startswith(f"aidb.{name}(")}
        for signature in signatures:
            if signature not in blocks:
                problems.append(f"aidb.{name}: the entry's signature block is not what PostgreSQL "
                                f"prints; it must read (line breaks allowed):\n    {signature}\n"
                                f"  documented: {sorted(blocks) or 'no block'}")
        stale = blocks - set(signatures)
        if stale:
            problems.append(f"aidb.{name}: the entry documents signatures that do not exist: "
                            f"{sorted(stale)}")
        if "**Who may call:**" not in documented[name]:
            problems.append(f"aidb.{name}: the entry lacks its '**Who may call:** ...' line")
    assert not problems, "docs/reference.md, '## Functions':\n" + "\n".join(problems)


def test_every_view_is_documented_with_its_columns_and_types(conn, reference):
    """Each view has an entry whose table lists its columns and types, in order."""
    documented = named_entries(section(reference, "Views"))
    problems = []
    for view, columns in public_views(conn).items():
        expected = "\n".join(f"    | `{column}` | {type_name} | ... |" for column, type_name in columns)
        if view not in documented:
            problems.append(f"aidb.{view} has no entry: add one under '## Views' (heading "
                            f"'#### `aidb.{view}`', a sentence, then the table\n"
                            f"    | column | type | |\n    |---|---|---|\n{expected})")
            continue
        rows = [(unquote(row[0]), row[1]) for row in table_rows(documented[view])]
        if rows != columns:
            problems.append(f"aidb.{view}: its column table must list, in order:\n{expected}\n"
                            f"  documented: {rows}")
    assert not problems, "docs/reference.md, '## Views':\n" + "\n".join(problems)


def test_every_function_is_executable_by_public_as_documented(conn, reference):
    """The reference says EXECUTE on every public function is granted to
    PUBLIC, and that each function checks its caller itself."""
    assert "granted to\nPUBLIC" in section(reference, "Functions")
    revoked = [name for (name,) in conn.execute("""
        SELECT p.proname FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'aidb'::regnamespace AND p.proname !~ '^_'
          AND NOT has_function_privilege('public', p.oid, 'EXECUTE')""").fetchall()]
    assert not revoked, ("docs/reference.md, '## Functions', says every function below is "
                         f"granted to PUBLIC, but these are not: {revoked}; say who may call them")


def test_create_pipelines_documented_ranges_are_what_it_accepts(conn, reference, fake_model):
    """The allowed values create_pipeline's entry gives for batch_size,
    background_sync_interval and auto_processing (update_pipeline takes the
    same) are accepted at their edges and refused one step past them."""
    import psycopg
    entry = named_entries(section(reference, "Functions"))["create_pipeline"]
    batch = re.search(r"`batch_size`: [^.]*?(\d+) to (\d+)", entry)
    interval = re.search(r"`background_sync_interval`: (\d+ \w+) to (\d+ \w+)", entry)
    modes = re.search(r"`auto_processing`: ([^(]*)", entry)
    assert batch and interval and modes, ("docs/reference.md, aidb.create_pipeline: write "
                                          "'`batch_size`: ... A to B', '`background_sync_interval`: "
                                          "A unit to B unit' and '`auto_processing`: 'X', 'Y' or 'Z''")
    low, high = int(batch.group(1)), int(batch.group(2))
    conn.execute("CREATE TABLE ranges (id int PRIMARY KEY, body text)")
    conn.execute("SELECT aidb.create_pipeline('ranges', 'ranges', source_data_column => 'body', "
                 "step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config(%s))",
                 (MODEL,))
    probes = [("batch_size", value, ok) for value, ok in
              ((low, True), (high, True), (low - 1, False), (high + 1, False))]
    probes += [("background_sync_interval", f"{value}", ok) for value, ok in (
        (interval.group(1), True), (interval.group(2), True),
        (f"{interval.group(1)} - 1 millisecond", False), (f"{interval.group(2)} 1 second", False))]
    probes += [("auto_processing", mode, True) for mode in re.findall(r"'(\w+)'", modes.group(1))]
    probes += [("auto_processing", "Sometimes", False)]
    wrong = []
    for argument, value, accepted in probes:
        try:
            conn.execute(f"SELECT aidb.update_pipeline('ranges', {argument} => %s)", (value,))
            outcome = True
        except psycopg.errors.InvalidParameterValue:
            outcome = False
        if outcome != accepted:
            wrong.append(f"{argument} => {value!r} was {'accepted' if outcome else 'refused'}")
    assert len(re.findall(r"'(\w+)'", modes.group(1))) == 3, modes.group(1)
    assert not wrong, ("docs/reference.md, aidb.create_pipeline, documents ranges the function "
                       "does not keep: " + "; ".join(wrong))


def test_every_view_is_readable_by_everyone_as_documented(conn, reference):
    """The reference says every view is readable by everyone."""
    assert "Every view is readable by\neveryone" in section(reference, "Views")
    closed = [name for (name,) in conn.execute("""
        SELECT c.relname FROM pg_catalog.pg_class c
        WHERE c.relnamespace = 'aidb'::regnamespace AND c.relkind IN ('v', 'm')
          AND c.relname !~ '^_' AND NOT has_table_privilege('public', c.oid, 'SELECT')""").fetchall()]
    assert not closed, ("docs/reference.md, '## Views', says every view is readable by everyone, "
                        f"but PUBLIC may not SELECT: {closed}; say who may read them")


def test_everything_documented_exists(conn, reference):
    """No entry documents a function or view the extension no longer has."""
    functions = named_entries(section(reference, "Functions"))
    views = named_entries(section(reference, "Views"))
    stale = sorted(set(functions) - set(public_functions(conn))) + \
        sorted(set(views) - set(public_views(conn)))
    assert not stale, ("docs/reference.md documents functions or views that do not exist "
                       f"(remove their entries): {', '.join('aidb.' + n for n in stale)}")


# -------------------------------------------------------------------- settings

def allowed_values(setting):
    """What the Settings table must say a setting allows (None: free text, said in words)."""
    if setting["vartype"] == "bool":
        return "`on`, `off`"
    if setting["vartype"] == "enum":
        return ", ".join(f"`{value}`" for value in setting["enumvals"])
    if setting["vartype"] in ("integer", "real"):
        return f"{setting['min_val']} to {setting['max_val']}"
    return None     # a string: the reference says what it holds, in words


def test_every_setting_is_documented_with_its_default_range_and_context(conn, reference):
    """Each aidb.* setting has a row matching pg_settings; no row outlives its setting."""
    settings = {row[0]: dict(zip(("vartype", "unit", "boot_val", "min_val", "max_val",
                                  "enumvals", "context"), row[1:]))
                for row in conn.execute("""
                    SELECT name, vartype, coalesce(unit, ''), boot_val, min_val, max_val,
                           enumvals, context
                    FROM pg_catalog.pg_settings WHERE name LIKE 'aidb.%'""").fetchall()}
    assert "aidb.max_workers" in settings, "the cluster does not preload aidb"
    rows = {unquote(row[0]): row for row in table_rows(section(reference, "Settings"))}
    problems = []
    for name, setting in sorted(settings.items()):
        allowed = allowed_values(setting)
        default = setting["boot_val"] or "''"     # an empty string is written ''
        wanted = [f"`{name}`", setting["vartype"], setting["unit"], f"`{default}`",
                  allowed or "(in words)", setting["context"]]
        row = rows.get(name)
        if row is None:
            problems.append(f"{name} is not documented: add the row\n    | "
                            + " | ".join(wanted) + " | what it does |")
            continue
        documented = row[:6]
        if allowed is None:
            wanted[4] = documented[4] if documented[4] else "(in words)"
        if documented != wanted:
            problems.append(f"{name}: the row must begin\n    | " + " | ".join(wanted)
                            + f" |\n  documented: | {' | '.join(documented)} |")
    stale = sorted(set(rows) - set(settings))
    if stale:
        problems.append(f"rows for settings that do not exist (remove them): {', '.join(stale)}")
    assert not problems, ("docs/reference.md, '## Settings' (columns: setting, type, unit, "
                          "default, allowed values, context, what it does):\n" + "\n".join(problems))


# --------------------------------------------------------------------- options

def declared_options():
    """{(kind, owner): (Option, ...)} from the engine's one declaration of
    every option (aidb.options.declarations())."""
    from aidb.options import declarations
    declared = {}
    for kind, owners in declarations().items():
        for owner, options in owners.items():
            declared[(kind, owner)] = tuple(options)
    return declared


# Where each kind of option is documented: (### section, how a #### heading names its owner).
OPTION_SECTIONS = {"Step types": "step", "Model providers": "model", "Volume options": "volume"}


def documented_options(reference):
    """{(kind, owner): {option: (default cell, allowed cell)}} from the option
    tables of '## Options'. A '#### Owner' heading names a step type, a
    provider or a volume kind by its first word ('#### s3 volumes');
    '#### credentials' under Model providers holds the model credentials,
    '##### vector_index hnsw' (under KnowledgeBase) an index type's settings."""
    options = section(reference, "Options")
    found = {}
    for title, kind in OPTION_SECTIONS.items():
        body = section(options, title, level=3)
        for heading, text in entries(body, level=4) + entries(body, level=5):
            words = heading.replace("`", "").split()
            if words[0] == "vector_index":
                key = ("vector_index", words[1])
            elif kind == "model" and words[0] == "credentials":
                key = ("model credentials", "*")
            else:
                key = (kind, words[0])
            rows = table_rows(text)
            if rows:
                found[key] = {unquote(row[0]): (row[1], row[2]) for row in rows}
    return found


def default_cell(option):
    """How the reference writes an option's default."""
    if option.required:
        return "required"
    if option.default_from:
        return f"same as {option.default_from}"
    if option.default is None:
        return "none"
    return f"`{json.dumps(option.default)}`"


def test_every_option_is_documented_with_its_default_and_allowed_values(reference):
    """Each declared option has a row with its default and allowed values; no stale rows."""
    declared = declared_options()
    documented = documented_options(reference)
    problems = []
    for key, options in sorted(declared.items()):
        if key not in documented:
            problems.append(f"{key[0]} {key[1]} has no options table: add a heading naming it "
                            "(see how the others are named) with the table "
                            "| option | default | allowed values | |")
        rows = documented.get(key, {})
        for option in options:
            wanted = (default_cell(option), option.must_be())
            if option.name not in rows:
                problems.append(f"{key[0]} {key[1]}: option {option.name} is not documented; add "
                                f"the row | `{option.name}` | {wanted[0]} | {wanted[1]} | what it does |")
            elif rows[option.name] != wanted:
                problems.append(f"{key[0]} {key[1]}: option {option.name} must read "
                                f"| `{option.name}` | {wanted[0]} | {wanted[1]} |, not "
                                f"| `{option.name}` | {' | '.join(rows[option.name])} |")
        stale = sorted(set(rows) - {option.name for option in options})
        if stale:
            problems.append(f"{key[0]} {key[1]}: documented options that do not exist "
                            f"(remove their rows): {', '.join(stale)}")
    for key in sorted(set(documented) - set(declared)):
        problems.append(f"an options table for {key[0]} {key[1]}, which does not exist (remove it)")
    assert not problems, ("docs/reference.md, '## Options' (a table per step type, provider, "
                          "volume kind; the formats are described there):\n" + "\n".join(problems))


def option_probes(option):
    """(value, accepted?) pairs at the edges of what the option allows."""
    if option.type in ("integer", "number"):
        probes = []
        step = 1 if option.type == "integer" else 1e-9
        if option.minimum is not None:
            low = option.minimum
            probes += [(low, not option.above_minimum), (low - step, False)]
            if option.above_minimum:
                probes.append((low + step, True))
        if option.maximum is not None:
            probes += [(option.maximum, True), (option.maximum + step, False)]
        return probes + [("1", False), (True, False)]
    if option.type == "choice":
        return [(value, True) for value in option.allowed] + [("no such value", False)]
    if option.type == "boolean":
        return [(True, True), (False, True), ("yes", False)]
    if option.type == "url":
        return [("http://127.0.0.1:8000", True), ("ftp://127.0.0.1", False)]
    return [("", False)]


def test_the_option_checker_keeps_the_documented_bounds():
    """What the tables say is allowed is allowed, and one step past it is
    refused: the checker applies the declarations the docs are held to."""
    from aidb.errors import InvalidInput
    from aidb.options import check_options
    wrong = []
    for (kind, owner), options in sorted(declared_options().items()):
        for option in options:
            for value, accepted in option_probes(option):
                try:
                    check_options(f"{kind} {owner}", {option.name: value}, (option,))
                    outcome = True
                except InvalidInput:
                    outcome = False
                if outcome != accepted:
                    wrong.append(f"{kind} {owner} {option.name}={value!r}: "
                                 f"{'accepted' if outcome else 'refused'}")
    assert not wrong, "the option checker disagrees with the declared bounds: " + "; ".join(wrong)


def documented_defaults(reference, key):
    """{option: default} of the options table `key` that have a JSON default."""
    return {name: json.loads(unquote(default)) for name, (default, _) in
            documented_options(reference).get(key, {}).items() if default.startswith("`")}


def test_stored_model_and_volume_options_hold_the_documented_defaults(conn, reference):
    """create_model and create_volume store their options with the defaults
    filled in: those must be the documented ones, for every provider (given
    only its required options) and for an s3 volume."""
    cases = {}
    for (kind, provider), options in declared_options().items():
        if kind != "model":
            continue
        required = {option.name: option.example if option.example is not None else "m"
                    for option in options if option.required}
        name = f"docs_{provider}"
        conn.execute("SELECT aidb.create_model(%s, %s, %s::jsonb)",
                     (name, provider, json.dumps(required)))
        cases[name] = ("model", provider)
    conn.execute("SELECT aidb.create_volume('docs_s3', 's3://bucket/prefix')")
    cases["docs_s3"] = ("volume", "s3")
    stored = dict(conn.execute("SELECT name, config FROM aidb.models WHERE name LIKE 'docs_%' "
                               "UNION ALL SELECT name, options FROM aidb.volumes").fetchall())
    wrong = [f"{key[0]} {key[1]}: {option} is stored as {stored[name].get(option)!r}, "
             f"documented {default!r}"
             for name, key in cases.items()
             for option, default in documented_defaults(reference, key).items()
             if stored[name].get(option) != default]
    assert len(cases) > 4, "declarations() lists fewer providers than aidb has"
    assert not wrong, "docs/reference.md, '## Options': " + "; ".join(wrong)


def test_stored_step_options_hold_the_documented_defaults(conn, reference, fake_model):
    """A pipeline's normalised steps (aidb.pipelines.steps) hold the documented
    defaults of every option the SQL builders leave out."""
    conn.execute("CREATE TABLE pages (id int PRIMARY KEY, html text)")
    conn.execute("""SELECT aidb.create_pipeline('docs_steps', 'pages', source_data_column => 'html',
                        step_1 => 'ParseHtml', step_1_options => aidb.html_parse_config(),
                        step_2 => 'ChunkText', step_2_options => aidb.chunk_text_config(100),
                        step_3 => 'KnowledgeBase', step_3_options => aidb.knowledge_base_config(%s))""",
                 (MODEL,))
    steps = conn.execute("SELECT steps FROM aidb.pipelines WHERE name = 'docs_steps'").fetchone()[0]
    wrong = []
    for step in steps:
        for option, default in documented_defaults(reference, ("step", step["operation"])).items():
            if step["options"].get(option) != default:
                wrong.append(f"{step['operation']}: {option} is {step['options'].get(option)!r}, "
                             f"documented {default!r}")
    assert steps[1]["options"]["max_length"] == 100, "ChunkText's max_length is not desired_length's"
    assert not wrong, "docs/reference.md, 'Step types': " + "; ".join(wrong)


# ------------------------------------------------------------------ aidb worker

def worker_parser():
    """The `aidb worker` subcommand's parser, built now (defaults come from
    the environment at build time)."""
    from aidb.worker.cli import build_parser
    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    return commands.choices["worker"]


def worker_options(parser):
    """The actions of `parser` that are options, --help aside."""
    return [action for action in parser._actions if action.option_strings
            and not isinstance(action, argparse._HelpAction)]


def worker_rows(reference):
    """{set of flags: row} of the reference's `aidb worker` table."""
    rows = table_rows(section(reference, "External worker: `aidb worker`"))
    return {frozenset(re.findall(r"`(-[-\w]+)`", row[0])): row for row in rows}


@pytest.fixture
def worker_environment(monkeypatch):
    """No AIDB_WORKER_* variable of the test's own environment leaks in."""
    for name in list(os.environ):
        if name.startswith("AIDB_WORKER_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_worker_option_is_documented_and_honoured(reference, worker_environment):
    """Each `aidb worker` flag has a row whose default, variable and choices the command honours."""
    rows = worker_rows(reference)
    parser = worker_parser()
    defaults = parser.parse_args([])
    problems = []
    for action in worker_options(parser):
        flags = frozenset(action.option_strings)
        row = rows.get(flags)
        if row is None:
            problems.append(f"{', '.join(sorted(flags))} is not documented: add the row "
                            f"| {', '.join(f'`{f}`' for f in sorted(flags))} | AIDB_WORKER_... "
                            "| default | allowed values |")
            continue
        problems += worker_row_problems(action, row, getattr(defaults, action.dest),
                                        worker_environment)
    stale = sorted(", ".join(sorted(flags)) for flags in set(rows) - {
        frozenset(action.option_strings) for action in worker_options(parser)})
    if stale:
        problems.append(f"documented options that `aidb worker` does not have: {stale}")
    assert not problems, ("docs/reference.md, 'External worker: `aidb worker`' (columns: option, "
                          "environment, default, allowed values):\n" + "\n".join(problems))


def worker_row_problems(action, row, default, environment):
    """What is wrong with one documented worker option: its default (with no
    environment), its environment variable, its choices."""
    name = action.option_strings[-1]
    problems = []
    cell = row[2]
    if cell.startswith("`"):
        value = unquote(cell)
        converted = action.type(value) if action.type else value
        if converted != default:
            problems.append(f"{name}: default {cell} is {converted!r}, but the command's is {default!r}")
    elif default not in (None, False):
        problems.append(f"{name}: the default is {default!r}: write it as `...` in backticks, not {cell!r}")
    variables = re.findall(r"`(AIDB_WORKER_\w+)`", row[1])
    if len(variables) != 1:
        problems.append(f"{name}: name its one environment variable in backticks, not {row[1]!r}")
    elif not environment_honoured(action, variables[0], environment):
        problems.append(f"{name}: setting {variables[0]} changes nothing; name the variable "
                        "the command reads")
    if action.choices:
        wanted = ", ".join(f"`{choice}`" for choice in action.choices)
        if row[3] != wanted:
            problems.append(f"{name}: allowed values must read {wanted!r}, not {row[3]!r}")
    return problems


def environment_honoured(action, variable, environment):
    """Whether `variable` sets the option: as the parser's default, or (for
    an option main() reads from the environment itself) as its help says."""
    if isinstance(action, argparse._StoreTrueAction):
        probe, expected = "true", True
    elif action.choices:
        probe = expected = list(action.choices)[-1]
    elif action.type is not None:
        probe, expected = "7", action.type("7")
    else:
        probe = expected = "probe-value"
    environment.setenv(variable, probe)
    try:
        value = getattr(worker_parser().parse_args([]), action.dest)
    finally:
        environment.delenv(variable)
    return value == expected or variable in (action.help or "")


# ------------------------------------------------- the README's examples, run

def readme_sql(title):
    """The ```sql blocks of the README section `title`, with minilm replaced by
    the test server's model and psql's meta-commands left out."""
    body = section(read(README), title)
    blocks = re.findall(r"^```sql\n(.*?)^```", body, re.MULTILINE | re.DOTALL)
    assert blocks, f"README.md's '{title}' has no ```sql block"
    return [re.sub(r"^\\.*$", "", block.replace("'minilm'", f"'{MODEL}'"), flags=re.MULTILINE)
            .replace("CREATE EXTENSION aidb", "CREATE EXTENSION IF NOT EXISTS aidb")
            for block in blocks]


def run_collecting_notices(conn, statement):
    """(rows of the statement's last result or None, its NOTICE messages)."""
    notices = []

    def collect(diagnostic):
        """Keeps one NOTICE's message."""
        notices.append(diagnostic.message_primary)
    conn.add_notice_handler(collect)
    try:
        cursor = conn.execute(statement)
        rows = None
        while True:
            if cursor.description:
                rows = cursor.fetchall()
            if not cursor.nextset():
                break
    finally:
        conn.remove_notice_handler(collect)
    return rows, notices


def test_the_quick_start_runs(conn, fake_model):
    """The quick start's SQL runs, the Live pipeline embeds every note, and the search answers."""
    rows = None
    for block in readme_sql("Quick start"):
        rows, _ = run_collecting_notices(conn, block)
    assert rows is not None and len(rows) == 2, f"the quick start's search returned {rows}"
    keys = conn.execute("SELECT count(DISTINCT source_key) FROM notes_embeddings").fetchone()[0]
    assert keys == 3, "the Live pipeline of the quick start did not embed all three notes"


def test_the_worked_example_runs_as_shown(conn, fake_model):
    """The worked example's SQL runs on the demo's articles and shows what the README prints."""
    conn.execute("CREATE TABLE articles (id integer PRIMARY KEY, title text, body text)")
    with open(CORPUS, encoding="utf-8") as f:
        articles = [(int(r["id"]), r["title"], r["body"]) for r in csv.DictReader(f)]
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO articles VALUES (%s, %s, %s)", articles)
    readme = section(read(README), "A worked example")
    outputs = []
    for block in readme_sql("A worked example"):
        outputs.append(run_collecting_notices(conn, block))
    created, ran = " ".join(outputs[0][1]), " ".join(outputs[1][1])
    assert f"created with {len(articles)} keys to process" in created, created
    assert (f"{len(articles)} keys processed ({len(articles)} embedded, 0 removed, 0 failed)"
            in ran), ran
    for notice in outputs[0][1] + outputs[1][1]:
        if "already exists" not in notice:     # the test's database has aidb already
            shown = re.sub(r" in [0-9.]+ s$", "", notice)
            assert f"NOTICE:  {shown}" in readme, f"the worked example does not show: {notice}"
    status = conn.execute("SELECT \"Status\", \"count(source records)\" FROM aidb.pipem "
                          "WHERE pipeline = 'articles'").fetchone()
    assert status == ("UpToDate", len(articles)) and "UpToDate" in readme
    record = conn.execute("SELECT * FROM aidb.pipem WHERE pipeline = 'articles'")
    for column in record.description:
        assert re.search(rf"^{re.escape(column.name)} +\|", readme, re.MULTILINE), \
            f"the worked example's aidb.pipem record lacks the column {column.name!r}"
    assert len(outputs[3][0]) == 3, "the worked example's search did not return 3 rows"
    assert conn.execute("SELECT auto_processing FROM aidb.pipelines").fetchone()[0] == "Live"
    columns = conn.execute("""SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
                              WHERE attrelid = 'articles_embeddings'::regclass AND attnum > 0
                                AND NOT attisdropped""").fetchone()[0]
    for column in columns.split(","):
        assert re.search(rf"^ {column} +\|", readme, re.MULTILINE), \
            f"the worked example's \\d output lacks column {column}"


def test_the_readme_lists_every_status_in_the_order_it_is_decided(conn):
    """README.md, 'Errors and statuses': aidb.pipem's Status is the first of
    the table's rows that applies, so the table must hold every status the
    deciding function returns, in its order."""
    definition = conn.execute(
        "SELECT pg_get_functiondef('aidb._pipeline_status'::regproc)").fetchone()[0]
    decided = re.findall(r"(?:THEN|ELSE) '(\w+)'", definition)
    assert "UpToDate" in decided, "aidb._pipeline_status no longer reads as expected"
    body = section(read(README), "Errors and statuses", level=3)
    tables = re.findall(r"^\| Status \|.*?(?=^[^|]|\Z)", body, re.MULTILINE | re.DOTALL)
    assert tables, "README.md's 'Errors and statuses' has no '| Status |' table"
    listed = [row[0] for row in table_rows(tables[0])]
    assert listed == decided, (f"README.md, 'Errors and statuses': the Status table must list "
                               f"{decided} in this order, not {listed}")


def test_the_readme_explains_every_error_category():
    """README.md, 'Errors and statuses': one row per failure category the
    engine records (aidb.errors), each with its consequence."""
    from aidb import errors
    categories = {value for name, value in vars(errors).items()
                  if re.fullmatch(r"(RECORD|PIPELINE)_(TEMPORARY|PERMANENT)", name)}
    assert len(categories) == 4, "aidb.errors no longer names the four categories as expected"
    body = section(read(README), "Errors and statuses", level=3)
    listed = {row[0] for row in table_rows(body)}
    assert listed == categories, (f"README.md, 'Errors and statuses': the category table must "
                                  f"list {sorted(categories)}, not {sorted(listed)}")


def test_the_readmes_performance_figures_are_the_latest_benchmarks():
    """README.md's 'Performance' quotes docs/benchmarks.md's latest table:
    its date and every figure it gives must be there, so new figures there
    cannot leave old ones here."""
    quoted = section(read(README), "Performance")
    latest = section(read(os.path.join(ROOT, "docs", "benchmarks.md")), "Latest figures")
    dates = re.findall(r"\d{4}-\d{2}-\d{2}", quoted)
    figures = set(re.findall(r"\d[\d,]*\.?\d*", re.sub(r"\d{4}-\d{2}-\d{2}|1,536|2 CPUs|0\.12\.1",
                                                       "", quoted)))
    assert dates and figures, "README.md's 'Performance' quotes no dated figures"
    missing = [value for value in dates + sorted(figures) if value not in latest]
    assert not missing, ("README.md, 'Performance', quotes figures that docs/benchmarks.md's "
                         f"'Latest figures' does not hold (update them from there): {missing}")


# ----------------------------------------------------- the threat model's tests

def test_every_test_the_security_document_names_exists():
    """docs/security.md names, for each boundary, the test that attacks it:
    each named test file and test function must exist."""
    text = read(os.path.join(ROOT, "docs", "security.md"))
    tests_dir = os.path.join(ROOT, "tests")
    sources = "\n".join(read(os.path.join(tests_dir, name)) for name in os.listdir(tests_dir)
                        if name.startswith("test_") and name.endswith(".py"))
    files = set(re.findall(r"`(tests/test_\w+\.py)`", text))
    # `test_a_superuser_*` stands for every test whose name begins so.
    names = {name for name in re.findall(r"`(test_\w+(?:_\*)?)`", text)
             if f"tests/{name}.py" not in files}
    assert len(names) > 15, "docs/security.md names fewer tests than its threat model has"
    missing = sorted(path for path in files if not os.path.exists(os.path.join(ROOT, path)))
    for name in sorted(names):
        pattern = (rf"def {re.escape(name[:-1])}\w" if name.endswith("*")
                   else rf"def {re.escape(name)}\(")
        if not re.search(rf"^\s*(?:async )?{pattern}", sources, re.MULTILINE):
            missing.append(name)
    assert not missing, ("docs/security.md names tests that do not exist (rename them there, "
                         f"or name the test that now attacks that boundary): {missing}")
