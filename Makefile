# aidb: PGXS build of the C library, the extension script and the Python engine.
#
#   make && make install    build and install (the engine's dependencies are
#                           pip-installed only when python/requirements-engine.txt
#                           changed since the last install)
#   make installcheck       pg_regress against a temporary instance that preloads aidb

EXTENSION   = aidb
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" aidb.control)

MODULE_big  = aidb
PG_CFLAGS   = -Werror=implicit-function-declaration
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))

# The install script is assembled from the numbered parts in sql/ext/, so that
# each area (models, pipelines, ...) keeps its own file.
DATA_built  = aidb--$(EXTVERSION).sql
EXT_PARTS   = $(sort $(wildcard sql/ext/*.sql))

REGRESS      = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf \
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

install: install-engine

# The engine itself is copied on every install; its dependencies (hundreds of
# MB with the local model) only when the pinned requirements changed.
# The engine is swapped in by rename, so a session loading it meanwhile never
# sees a half-copied package.
install-engine:
	rm -rf '$(ENGINE_DIR)/engine.new' '$(ENGINE_DIR)/engine.old'
	$(MKDIR_P) '$(ENGINE_DIR)/engine.new'
	cp -R python/aidb '$(ENGINE_DIR)/engine.new/'
	find '$(ENGINE_DIR)/engine.new' -name __pycache__ -prune -exec rm -rf {} +
	if [ -d '$(ENGINE_DIR)/engine' ]; then mv '$(ENGINE_DIR)/engine' '$(ENGINE_DIR)/engine.old'; fi
	mv '$(ENGINE_DIR)/engine.new' '$(ENGINE_DIR)/engine'
	rm -rf '$(ENGINE_DIR)/engine.old'
	@if cmp -s python/requirements-engine.txt '$(ENGINE_DIR)/deps/.requirements'; then \
		echo "engine dependencies are up to date"; \
	else \
		rm -rf '$(ENGINE_DIR)/deps' && \
		$(ENGINE_PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
			--target '$(ENGINE_DIR)/deps' -r python/requirements-engine.txt && \
		cp python/requirements-engine.txt '$(ENGINE_DIR)/deps/.requirements'; \
	fi

uninstall: uninstall-engine
uninstall-engine:
	rm -rf '$(DESTDIR)$(pkglibdir)/aidb'

.PHONY: install-engine uninstall-engine
