/*
 * aidb.c — module entry point and the SQL-callable helpers of the C library.
 */
#include "aidb.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;

bool		aidb_loaded_at_startup = false;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(aidb_engine_dir);
PG_FUNCTION_INFO_V1(aidb_preloaded);

/* Module load: remember whether we were preloaded (workers need that). */
void
_PG_init(void)
{
	aidb_loaded_at_startup = process_shared_preload_libraries_in_progress;
}

/*
 * Directory holding the Python engine ("engine/") and its pinned
 * dependencies ("deps/"). Derived from the server's own pkglib path so that
 * the installation stays relocatable, like every PGXS module.
 */
Datum
aidb_engine_dir(PG_FUNCTION_ARGS)
{
	char		path[MAXPGPATH];

	snprintf(path, sizeof(path), "%s/aidb/python", pkglib_path);
	PG_RETURN_TEXT_P(cstring_to_text(path));
}

/* Whether aidb is in shared_preload_libraries (background workers need it). */
Datum
aidb_preloaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(aidb_loaded_at_startup);
}
