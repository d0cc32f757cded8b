# aidb: PGXS build of the C library, the extension script and the Python engine.
#
#   make && make install    build and install (the engine's dependencies are
#                           pip-installed only when python/requirements-engine.txt
#                           changed since the last install)
#   make installcheck       pg_regress against a temporary instance that preloads aidb

EXTENSION   = aidb
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" aidb.control)

MODULE_big  = aidb
# Warnings are errors on every supported major, as pg_cron builds
# (PostgreSQL's own headers trip -Wunused-parameter). A packager whose newer
# compiler warns about something new can build with WERROR= meanwhile.
WERROR     ?= -Werror
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter $(WERROR)
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))
# The release the library belongs to (src/compat.c: the SQL may be older).
PG_CPPFLAGS = -DAIDB_VERSION='"$(EXTVERSION)"'

# The install script is assembled from the numbered parts in sql/ext/, so that
# each area (models, pipelines, ...) keeps its own file.
DATA_built  = aidb--$(EXTVERSION).sql $(UPGRADES)
EXT_PARTS   = $(sort $(wildcard sql/ext/*.sql))

# Releases: each one's install script is kept as shipped (sql/versions/),
# and an upgrade script leads from the previous one to this version. An
# upgrade script is built from a hand-written pre-step, the install parts
# without their table sections (sql/upgrade/code-only.awk, which fails on an
# unmarked CREATE TABLE) and a post-step: sql/upgrade/<from>--<to>-{pre,post}.sql.
# Starting the next version: copy this release's aidb--X.sql and
# aidb--W--X.sql as built into sql/versions/, bump aidb.control and
# python/aidb/__init__.py, and set UPGRADES to aidb--X--$(EXTVERSION).sql.
DATA        = $(wildcard sql/versions/aidb--*.sql)
UPGRADES    = aidb--0.1.0--$(EXTVERSION).sql

# pg_regress files live in test/sql and test/expected, as pgvector lays them out.
REGRESS      = $(sort $(basename $(notdir $(wildcard test/sql/*.sql))))
REGRESS_OPTS = --inputdir=test --temp-instance=tmp_check --temp-config=test/regress.conf \
               --load-extension=plpython3u --load-extension=vector

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PL/Python embeds the system interpreter, so the engine's dependencies are
# installed for it, not for whatever python3 is first on PATH.
ENGINE_PYTHON ?= /usr/bin/python3
ENGINE_DIR     = $(DESTDIR)$(pkglibdir)/aidb/python

aidb--$(EXTVERSION).sql: $(EXT_PARTS)
	cat $^ > $@

aidb--%--$(EXTVERSION).sql: sql/upgrade/%--$(EXTVERSION)-pre.sql sql/upgrade/code-only.awk $(EXT_PARTS) sql/upgrade/%--$(EXTVERSION)-post.sql
	{ cat sql/upgrade/$*--$(EXTVERSION)-pre.sql && \
	  awk -f sql/upgrade/code-only.awk $(EXT_PARTS) && \
	  cat sql/upgrade/$*--$(EXTVERSION)-post.sql; } > $@.tmp || { rm -f $@.tmp; exit 1; }
	mv $@.tmp $@

install: install-engine

# The engine itself is copied on every install; its dependencies (hundreds of
# MB with the local model) only when the pinned requirements changed.
# The engine is swapped in by rename, so a session loading it meanwhile never
# sees a half-copied package.
#
# ENGINE_DEPS_ROOT shares the dependencies between PostgreSQL majors
# (scripts/setup.sh sets it): they are installed once into
# $(ENGINE_DEPS_ROOT)/<hash of the requirements>, never changed after, and
# each major's deps/ is a symlink to it. Left empty (packaging, the Docker
# image, a plain `make install`), deps/ is kept while it matches the
# requirements (setup.sh's symlink included), else pip-installed in place.
ENGINE_DEPS_ROOT ?=
ENGINE_REQUIREMENTS = python/requirements-engine.txt
PIP_ENGINE_DEPS = $(ENGINE_PYTHON) -m pip install --quiet --disable-pip-version-check \
	--no-warn-script-location -r $(ENGINE_REQUIREMENTS) --target

# The local model's ONNX backend: exported from the bundled weights by the
# engine's own exporter, offline (docs/architecture.md, "The local model").
# It stamps what it exported from, so a reinstall with the same engine
# dependencies and exporter costs a fraction of a second. -P: the
# repository's aidb.so must not shadow the engine package `aidb`.
ENGINE_ONNX_EXPORT = PYTHONPATH='$(ENGINE_DIR)/engine:$(ENGINE_DIR)/deps' \
	$(ENGINE_PYTHON) -P -m aidb.models.onnx_export '$(ENGINE_DIR)/onnx'

install-engine:
	rm -rf '$(ENGINE_DIR)/engine.new' '$(ENGINE_DIR)/engine.old'
	$(MKDIR_P) '$(ENGINE_DIR)/engine.new'
	cp -R python/aidb '$(ENGINE_DIR)/engine.new/'
	find '$(ENGINE_DIR)/engine.new' -name __pycache__ -prune -exec rm -rf {} +
	if [ -d '$(ENGINE_DIR)/engine' ]; then mv '$(ENGINE_DIR)/engine' '$(ENGINE_DIR)/engine.old'; fi
	mv '$(ENGINE_DIR)/engine.new' '$(ENGINE_DIR)/engine'
	rm -rf '$(ENGINE_DIR)/engine.old'
ifeq ($(ENGINE_DEPS_ROOT),)
	@if cmp -s $(ENGINE_REQUIREMENTS) '$(ENGINE_DIR)/deps/.requirements'; then \
		echo "engine dependencies are up to date"; \
	else \
		rm -rf '$(ENGINE_DIR)/deps' && \
		$(PIP_ENGINE_DEPS) '$(ENGINE_DIR)/deps' && \
		cp $(ENGINE_REQUIREMENTS) '$(ENGINE_DIR)/deps/.requirements'; \
	fi
else
	@set -e; \
	shared='$(ENGINE_DEPS_ROOT)'/$$(sha256sum $(ENGINE_REQUIREMENTS) | cut -c1-16); \
	if ! cmp -s $(ENGINE_REQUIREMENTS) "$$shared/.requirements"; then \
		$(MKDIR_P) '$(ENGINE_DEPS_ROOT)'; \
		tmp=$$(mktemp -d '$(ENGINE_DEPS_ROOT)/.new.XXXXXX'); \
		if [ ! -L '$(ENGINE_DIR)/deps' ] && cmp -s $(ENGINE_REQUIREMENTS) '$(ENGINE_DIR)/deps/.requirements'; then \
			echo "sharing this major's engine dependencies in $$shared"; \
			cp -a '$(ENGINE_DIR)/deps/.' "$$tmp/"; \
		else \
			echo "installing the engine's dependencies into $$shared"; \
			$(PIP_ENGINE_DEPS) "$$tmp" || { rm -rf "$$tmp"; exit 1; }; \
			cp $(ENGINE_REQUIREMENTS) "$$tmp/.requirements"; \
		fi; \
		chmod 755 "$$tmp"; \
		mv -T "$$tmp" "$$shared" 2>/dev/null || rm -rf "$$tmp"; \
	fi; \
	if [ "$$(readlink '$(ENGINE_DIR)/deps')" = "$$shared" ]; then \
		echo "engine dependencies are up to date ($$shared)"; \
	else \
		ln -sfn "$$shared" '$(ENGINE_DIR)/deps.new'; \
		if [ -d '$(ENGINE_DIR)/deps' ] && [ ! -L '$(ENGINE_DIR)/deps' ]; then \
			rm -rf '$(ENGINE_DIR)/deps.old'; mv '$(ENGINE_DIR)/deps' '$(ENGINE_DIR)/deps.old'; \
		fi; \
		mv -T '$(ENGINE_DIR)/deps.new' '$(ENGINE_DIR)/deps'; \
		rm -rf '$(ENGINE_DIR)/deps.old'; \
		echo "engine dependencies: $(ENGINE_DIR)/deps -> $$shared"; \
	fi
endif
	$(ENGINE_ONNX_EXPORT)

uninstall: uninstall-engine
uninstall-engine:
	rm -rf '$(DESTDIR)$(pkglibdir)/aidb'

.PHONY: install-engine uninstall-engine
