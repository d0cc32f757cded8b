/*
 * discovery.c — a short-lived worker that lists one database's Background
 * pipelines into shared memory for the launcher, then exits.
 */
#include "aidb.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"

typedef struct DiscoveryArgs
{
	uint64		generation;
} DiscoveryArgs;

typedef struct FoundPipeline
{
	int32		id;
	Oid			owner;
	bool		owner_can_login;
	char		name[NAMEDATALEN];
} FoundPipeline;

#define LIST_PIPELINES \
	"SELECT p.id, p.owner_role::oid, r.rolcanlogin, left(p.name, 63) " \
	"FROM aidb.pipeline_registry p JOIN pg_catalog.pg_roles r ON r.oid = p.owner_role " \
	"WHERE p.auto_processing = 'Background'"

/* Start the discovery of one database (from the launcher). */
bool
aidb_start_discovery_worker(Oid dboid, uint64 generation, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;
	DiscoveryArgs args = {generation};

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "aidb");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "aidb_discovery_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "aidb discovery");
	snprintf(worker.bgw_type, BGW_MAXLEN, "aidb discovery");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	memcpy(worker.bgw_extra, &args, sizeof(args));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* Read this database's Background pipelines (none if aidb is not installed). */
static int
read_pipelines(FoundPipeline *found, int max_found)
{
	int			n = 0;

	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'aidb' "
					"AND pg_catalog.to_regclass('aidb.pipeline_registry') IS NOT NULL",
					true, 1) != SPI_OK_SELECT || SPI_processed == 0)
		return 0;
	if (SPI_execute(LIST_PIPELINES, true, max_found) != SPI_OK_SELECT)
		elog(ERROR, "aidb: could not list pipelines");
	for (uint64 row = 0; row < SPI_processed; row++, n++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[row];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		found[n].id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		found[n].owner = DatumGetObjectId(SPI_getbinval(tuple, desc, 2, &isnull));
		found[n].owner_can_login = DatumGetBool(SPI_getbinval(tuple, desc, 3, &isnull));
		strlcpy(found[n].name, SPI_getvalue(tuple, desc, 4), NAMEDATALEN);
	}
	return n;
}

/*
 * Publish what we found: mark found pipelines wanted, the others of this
 * database not. Entries that a commit published after we read
 * `seen_publish_seq` (before our snapshot) are newer than what we read:
 * they stay as they are.
 */
static void
publish(FoundPipeline *found, int n, uint64 generation, uint64 seen_publish_seq,
		const char *dbname)
{
	int			no_room = -1;	/* a pipeline that found no free entry (warned, unlocked) */

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		AidbPipelineEntry *entry = aidb_find_or_add_entry(MyDatabaseId, found[i].id);

		if (entry == NULL)
		{
			no_room = i;
			continue;
		}
		entry->scan_generation = generation;
		if (entry->published_seq <= seen_publish_seq)
			aidb_set_entry(entry, found[i].owner, found[i].owner_can_login, found[i].name, dbname);
	}
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
	{
		AidbPipelineEntry *entry = &aidb_shared->entries[i];

		if (entry->in_use && entry->dboid == MyDatabaseId && entry->scan_generation != generation
			&& entry->published_seq <= seen_publish_seq)
			entry->wanted = false;
	}
	LWLockRelease(aidb_shared->lock);
	if (no_room >= 0)
		elog(WARNING, "aidb: more than %d Background pipelines; \"%s\" and maybe others get no worker",
			 AIDB_MAX_ENTRIES, found[no_room].name);
	aidb_wake_launcher();
}

/* Worker entry point: connect, read, publish, exit. */
void
aidb_discovery_main(Datum arg)
{
	DiscoveryArgs args;
	FoundPipeline *found = palloc(sizeof(FoundPipeline) * AIDB_MAX_ENTRIES);
	char		dbname[NAMEDATALEN];
	int			n;
	uint64		seen_publish_seq;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* as the bootstrap superuser: the registry is row-level protected */
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	pgstat_report_appname("aidb discovery");

	LWLockAcquire(aidb_shared->lock, LW_SHARED);
	seen_publish_seq = aidb_shared->publish_seq;
	LWLockRelease(aidb_shared->lock);

	/* One read-only transaction; an error exits without publishing anything. */
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	n = read_pipelines(found, AIDB_MAX_ENTRIES);
	strlcpy(dbname, get_database_name(MyDatabaseId), NAMEDATALEN);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();

	publish(found, n, args.generation, seen_publish_seq, dbname);
	proc_exit(0);
}
