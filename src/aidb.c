/*
 * aidb.c — module entry point: GUCs, shared memory and the launcher when
 * preloaded, and the SQL-callable helpers that locate the Python engine.
 */
#include "aidb.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

bool		aidb_enable_background_workers = true;
int			aidb_max_workers = 16;
int			aidb_launcher_naptime = 60;
int			aidb_worker_memory_limit = 2048;

/*
 * Security bounds, read by the Python engine through the functions below.
 * Only superusers may change them (PGC_SUSET): they limit what the server
 * itself reaches on a user's behalf.
 */
static char *aidb_allowed_model_hosts = NULL;
static char *aidb_allowed_local_paths = NULL;
static char *aidb_allowed_credentials_env = NULL;
/* read by the engine (current_setting) at each background worker transaction */
static int	worker_batches_in_flight = 8;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(aidb_engine_dir);
PG_FUNCTION_INFO_V1(aidb_preloaded);
PG_FUNCTION_INFO_V1(aidb_allowed_model_hosts_value);
PG_FUNCTION_INFO_V1(aidb_allowed_local_paths_value);
PG_FUNCTION_INFO_V1(aidb_allowed_credentials_env_value);

/* Settings; each is documented in docs/reference.md ("Settings"), which
 * tests/test_reference.py checks against pg_settings. */
static void
define_gucs(void)
{
	DefineCustomBoolVariable("aidb.enable_background_workers",
							 "Runs a background worker for each Background pipeline.",
							 "Turn off where only external workers (aidb worker) should run.",
							 &aidb_enable_background_workers, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("aidb.max_workers",
							"Most pipeline workers aidb runs at once, across all databases.",
							"They also need free max_worker_processes slots.",
							&aidb_max_workers, 16, 0, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("aidb.launcher_naptime",
							"Seconds between the launcher's full rescans of all databases.",
							"Pipeline changes wake it at once; the rescan catches the rest "
							"(DROP EXTENSION, restored databases).",
							&aidb_launcher_naptime, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("aidb.worker_memory_limit",
							"Resident memory above which a pipeline worker restarts itself.",
							"Checked after each batch; 0 disables the check.",
							&aidb_worker_memory_limit, 2048, 0, INT_MAX / 1024,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomIntVariable("aidb.worker_batches_in_flight",
							"Batches a background worker keeps between claim and write at once.",
							"While the model computes the next batches, the worker writes the "
							"oldest: model latency is hidden up to this many batches; 1 runs "
							"one batch at a time.",
							&worker_batches_in_flight, 8, 1, 64,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("aidb.allowed_model_hosts",
							   "Hosts that model URLs may reach: * (any), or a comma-separated "
							   "list of host names, IP addresses and *.domain wildcards.",
							   "Checked when a model is created and before each request; "
							   "empty: no remote model may be used.",
							   &aidb_allowed_model_hosts, "*",
							   PGC_SUSET, GUC_LIST_INPUT, NULL, NULL, NULL);
	DefineCustomStringVariable("aidb.allowed_local_paths",
							   "Directories that file:// volumes may read: a comma-separated "
							   "list of absolute paths.",
							   "Empty (the default): no local directory may be read.",
							   &aidb_allowed_local_paths, "",
							   PGC_SUSET, GUC_LIST_INPUT, NULL, NULL, NULL);
	DefineCustomStringVariable("aidb.allowed_credentials_env",
							   "Environment variables that a model's credentials_env may name: "
							   "a comma-separated list of variable names.",
							   "Checked when a model is created and before each use; "
							   "empty (the default): no variable may be read.",
							   &aidb_allowed_credentials_env, "",
							   PGC_SUSET, GUC_LIST_INPUT, NULL, NULL, NULL);
	MarkGUCPrefixReserved("aidb");
}

/* Module load. The launcher and shared memory exist only when preloaded. */
void
_PG_init(void)
{
	define_gucs();
	if (!process_shared_preload_libraries_in_progress)
		return;
	aidb_shmem_init();
	aidb_install_dropdb_hook();
	aidb_register_launcher();
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
	PG_RETURN_BOOL(aidb_shared != NULL);
}

/*
 * The security bounds as this module holds them. Reading them through a
 * function of the module (rather than current_setting()) loads it first, so
 * the value is never a placeholder that a non-superuser SET before the
 * module was loaded in the session.
 */
Datum
aidb_allowed_model_hosts_value(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(aidb_allowed_model_hosts ? aidb_allowed_model_hosts : ""));
}

Datum
aidb_allowed_local_paths_value(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(aidb_allowed_local_paths ? aidb_allowed_local_paths : ""));
}

Datum
aidb_allowed_credentials_env_value(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(aidb_allowed_credentials_env ?
									 aidb_allowed_credentials_env : ""));
}
