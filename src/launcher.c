/*
 * launcher.c — the static launcher: keeps exactly one worker per Background
 * pipeline in every database that has aidb.
 *
 * The launcher is connected to no database, so it cannot read pipelines
 * itself. Commits that create, change or delete a pipeline publish it in
 * shared memory (shmem.c); at start and every aidb.launcher_naptime the
 * launcher also lists the databases (a shared catalog) and starts a
 * short-lived discovery worker per database (discovery.c), which catches
 * what no commit reported (DROP EXTENSION, restored databases, a crash
 * restart). It starts or stops pipeline workers (worker.c) until the running
 * set matches. It wakes up when a pipeline changes (at commit), when one of
 * its workers starts or stops (bgw_notify_pid), and at naptime.
 */
#include "aidb.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Launcher-local bookkeeping, indexed like aidb_shared->entries. */
static BackgroundWorkerHandle *worker_handles[AIDB_MAX_ENTRIES];
static TimestampTz worker_started_at[AIDB_MAX_ENTRIES];

/* One running discovery per database; a request during it runs it again after. */
typedef struct Discovery
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	bool		again;
} Discovery;

static List *discoveries = NIL;

#define RESTART_DELAY_MS 1000	/* between two starts of one pipeline's worker */
#define WAITING_RETRY_MS 1000	/* how often to look for a free slot */

/* Register the launcher at server start (from _PG_init). */
void
aidb_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "aidb");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "aidb_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "aidb launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "aidb launcher");
	RegisterBackgroundWorker(&worker);
}

/* Databases a pipeline could live in: every one that accepts connections. */
static List *
list_databases(void)
{
	List	   *dboids = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	MemoryContext caller_context = CurrentMemoryContext;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();	/* the catalog scan needs one */
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (db->datallowconn && !db->datistemplate)
		{
			/* the list must outlive the transaction */
			MemoryContext txn_context = MemoryContextSwitchTo(caller_context);

			dboids = lappend_oid(dboids, db->oid);
			MemoryContextSwitchTo(txn_context);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dboids;
}

/*
 * Start (or queue again) the discovery of one database. Without a free
 * worker slot the request goes back to shared memory and the launcher's
 * timer retries it.
 */
static void
discover(Oid dboid)
{
	ListCell   *cell;
	Discovery  *discovery;
	uint64		generation;

	if (dboid == aidb_shared->dropping_dboid)
		return;
	foreach(cell, discoveries)
	{
		discovery = lfirst(cell);
		if (discovery->dboid == dboid)
		{
			discovery->again = true;
			return;
		}
	}
	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	generation = ++aidb_shared->scan_generation;
	LWLockRelease(aidb_shared->lock);
	discovery = palloc0(sizeof(Discovery));
	discovery->dboid = dboid;
	if (aidb_start_discovery_worker(dboid, generation, &discovery->handle))
		discoveries = lappend(discoveries, discovery);
	else
	{
		pfree(discovery);
		aidb_request_rescan(dboid, false);
	}
}

/* Forget finished discoveries, rerunning those asked for meanwhile. */
static void
reap_discoveries(void)
{
	ListCell   *cell;
	List	   *rerun = NIL;
	pid_t		pid;

	foreach(cell, discoveries)
	{
		Discovery  *discovery = lfirst(cell);

		if (GetBackgroundWorkerPid(discovery->handle, &pid) != BGWH_STOPPED)
			continue;
		if (discovery->again)
			rerun = lappend_oid(rerun, discovery->dboid);
		discoveries = foreach_delete_current(discoveries, cell);
		pfree(discovery->handle);
		pfree(discovery);
	}
	foreach(cell, rerun)
		discover(lfirst_oid(cell));
}

/* Entries of databases that no longer exist are no longer wanted. */
static void
forget_dropped_databases(List *dboids)
{
	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
	{
		AidbPipelineEntry *entry = &aidb_shared->entries[i];

		if (entry->in_use && !list_member_oid(dboids, entry->dboid))
			entry->wanted = false;
	}
	LWLockRelease(aidb_shared->lock);
}

/* Run the discoveries asked for (by exiting workers, or retries), or all of them at naptime. */
static void
start_requested_discoveries(bool naptime_elapsed)
{
	Oid			requested[AIDB_MAX_RESCANS];
	int			n;
	bool		all;
	ListCell   *cell;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	all = aidb_shared->rescan_all || naptime_elapsed;
	n = aidb_shared->n_rescans;
	memcpy(requested, aidb_shared->rescan_dboids, sizeof(Oid) * n);
	aidb_shared->rescan_all = false;
	aidb_shared->n_rescans = 0;
	LWLockRelease(aidb_shared->lock);

	if (all)
	{
		List	   *dboids = list_databases();

		forget_dropped_databases(dboids);
		foreach(cell, dboids)
			discover(lfirst_oid(cell));
		list_free(dboids);
		return;
	}
	for (int i = 0; i < n; i++)
		discover(requested[i]);
}

/* Whether discoveries wait for a worker slot (or were asked for meanwhile). */
static bool
discoveries_requested(void)
{
	bool		requested;

	LWLockAcquire(aidb_shared->lock, LW_SHARED);
	requested = aidb_shared->rescan_all || aidb_shared->n_rescans > 0;
	LWLockRelease(aidb_shared->lock);
	return requested;
}

/* Count pipeline workers that exist or are being started. */
static int
running_workers(void)
{
	int			count = 0;

	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
		if (worker_handles[i] != NULL)
			count++;
	return count;
}

/*
 * Log, once per waiting spell, why a pipeline has no worker. Not while one
 * of our own discovery workers runs: it may be what holds the slot, for a
 * moment.
 */
static void
warn_no_slot(AidbPipelineEntry *entry, bool capped)
{
	if (entry->warned_no_slot || (!capped && discoveries != NIL))
		return;
	entry->warned_no_slot = true;
	if (capped)
		ereport(WARNING,
				(errmsg("aidb: pipeline \"%s\" waits for a worker: aidb.max_workers (%d) are running",
						entry->name, aidb_max_workers),
				 errhint("Raise aidb.max_workers; the worker starts as soon as one is free.")));
	else
		ereport(WARNING,
				(errmsg("aidb: pipeline \"%s\" waits for a worker: no free background worker slot",
						entry->name),
				 errhint("Raise max_worker_processes (now %d) and restart the server; "
						 "the worker starts as soon as a slot frees.", max_worker_processes)));
}

/* Stop the worker of an entry that is no longer wanted; free it once gone. */
static void
stop_worker(int i, AidbPipelineEntry *entry)
{
	pid_t		pid;

	if (worker_handles[i] != NULL)
	{
		TerminateBackgroundWorker(worker_handles[i]);
		if (GetBackgroundWorkerPid(worker_handles[i], &pid) != BGWH_STOPPED)
			return;				/* notified again when it is gone */
		pfree(worker_handles[i]);
		worker_handles[i] = NULL;
	}
	entry->in_use = false;
}

/* Start the worker of a wanted entry if it has none; returns whether it waits for one. */
static bool
ensure_worker(int i, AidbPipelineEntry *entry, TimestampTz now)
{
	pid_t		pid;

	if (worker_handles[i] != NULL)
	{
		if (GetBackgroundWorkerPid(worker_handles[i], &pid) != BGWH_STOPPED)
			return false;
		pfree(worker_handles[i]);	/* it died: start another below */
		worker_handles[i] = NULL;
		entry->state = AIDB_WORKER_NONE;
	}
	if (entry->state == AIDB_WORKER_CANNOT_LOGIN || !aidb_enable_background_workers)
		return false;
	if (!TimestampDifferenceExceeds(worker_started_at[i], now, RESTART_DELAY_MS))
		return true;
	if (running_workers() >= aidb_max_workers)
	{
		entry->state = AIDB_WORKER_WAITING;
		warn_no_slot(entry, true);
		return true;
	}
	if (!aidb_start_pipeline_worker(entry, &worker_handles[i]))
	{
		entry->state = AIDB_WORKER_WAITING;
		warn_no_slot(entry, false);
		return true;
	}
	worker_started_at[i] = now;
	entry->state = AIDB_WORKER_STARTING;
	entry->warned_no_slot = false;
	return false;
}

/* Make the running workers match the wanted entries; true if some wait. */
static bool
reconcile_workers(void)
{
	bool		waiting = false;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
	{
		AidbPipelineEntry *entry = &aidb_shared->entries[i];

		if (!entry->in_use)
			continue;
		if (!entry->wanted || !aidb_enable_background_workers)
		{
			if (!entry->wanted)
				stop_worker(i, entry);
			else if (worker_handles[i] != NULL)
				TerminateBackgroundWorker(worker_handles[i]);
			continue;
		}
		waiting |= ensure_worker(i, entry, now);
	}
	LWLockRelease(aidb_shared->lock);
	return waiting;
}

/* The launcher's main loop: discover, reconcile, sleep. */
void
aidb_launcher_main(Datum arg)
{
	TimestampTz last_full_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);	/* shared catalogs only */
	pgstat_report_appname("aidb launcher");

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	aidb_shared->launcher_pid = MyProcPid;
	aidb_shared->launcher_latch = MyLatch;
	aidb_shared->rescan_all = true;
	LWLockRelease(aidb_shared->lock);
	ereport(LOG, (errmsg("aidb launcher started")));

	for (;;)
	{
		bool		naptime_elapsed;
		bool		waiting;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		naptime_elapsed = TimestampDifferenceExceeds(last_full_scan, GetCurrentTimestamp(),
													 aidb_launcher_naptime * 1000);
		if (naptime_elapsed)
			last_full_scan = GetCurrentTimestamp();
		reap_discoveries();
		start_requested_discoveries(naptime_elapsed);
		waiting = reconcile_workers();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (waiting || discoveries != NIL || discoveries_requested())
						 ? WAITING_RETRY_MS : aidb_launcher_naptime * 1000L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
