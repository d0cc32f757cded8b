# The code part of an upgrade script: the install-script parts (sql/ext/*.sql,
# given in order) without their table sections.
#
#   awk -f sql/upgrade/code-only.awk sql/ext/*.sql
#
# A table section is marked in its part by two lines
#     -- upgrade: skip begin
#     -- upgrade: skip end
# around what an existing database already has and must keep: CREATE TABLE /
# INDEX, their row-level security and the policies that call no aidb
# function, GRANTs on tables, pg_extension_config_dump of existing tables,
# seed rows, CREATE ROLE. Everything else is re-run over a database whose
# aidb functions, views and event triggers the upgrade's pre-step dropped
# (sql/upgrade/*-pre.sql), so it must be valid there.
#
# Fails (exit 1, no output used) on unbalanced markers, and on a statement
# outside them that would create data-holding objects again: a new table of
# a later version needs its own CREATE in the upgrade script, so its author
# must mark the install part's CREATE TABLE and write that step.

function fail(message) {
    printf "%s:%d: %s\n", FILENAME, FNR, message > "/dev/stderr"
    failed = 1
    exit 1
}

FNR == 1 && NR > 1 && skipping { fail("previous part ends inside an upgrade skip section") }

/^-- upgrade: skip begin[ \t]*$/ {
    if (skipping) fail("nested '-- upgrade: skip begin'")
    skipping = 1
    next
}
/^-- upgrade: skip end[ \t]*$/ {
    if (!skipping) fail("'-- upgrade: skip end' without a begin")
    skipping = 0
    next
}
skipping { next }

# Only statements at the start of a line: function bodies indent theirs.
/^CREATE (UNLOGGED |TEMP |TEMPORARY )?TABLE/ || /^CREATE (UNIQUE )?INDEX/ ||
/^CREATE (SEQUENCE|TYPE)/ || /^(INSERT INTO|COPY) / || /^[ \t]*CREATE ROLE/ {
    fail("outside '-- upgrade: skip begin/end': " $0 \
         " (an upgrade must not run this over an existing database; mark it, and " \
         "write what the upgrade needs in sql/upgrade/)")
}

{ print }

END {
    if (!failed && skipping) fail("the last part ends inside an upgrade skip section")
}
