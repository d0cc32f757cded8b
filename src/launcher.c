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
 * its workers starts or stops (bgw_notify_pid), when any worker exits (the
 * worker sets our latch), and at naptime.
 *
 * The launcher may be killed and restarted while its workers run on: the
 * postmaster restarts it after SIGTERM (a SIGKILL is a crash, which resets
 * everything). A worker owns its shared entry (worker.c), so the new
 * launcher sees which pipelines already have a worker and adopts it, with
 * no handle: it stops it by pid and learns of its exit from the latch.
 * The shared lock is held for loads and stores only: each pass copies the
 * entries, acts on the copy, and writes back what changed under conditions
 * that respect what workers and commits wrote meanwhile. src/README.md draws
 * the states and transitions.
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
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Launcher-local bookkeeping, indexed like aidb_shared->entries. */
static BackgroundWorkerHandle *worker_handles[AIDB_MAX_ENTRIES];	/* workers we started */
static TimestampTz worker_started_at[AIDB_MAX_ENTRIES];
static bool adopted[AIDB_MAX_ENTRIES];	/* owned by a worker we did not start */
static bool warned_no_slot[AIDB_MAX_ENTRIES];	/* the WARNING about slots is logged once */

/* The entries as one pass of reconcile_workers saw them. */
static AidbPipelineEntry *entry_copies;

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

/* Copy the entries in use: a pass decides on this copy, with the lock released. */
static void
copy_entries(void)
{
	LWLockAcquire(aidb_shared->lock, LW_SHARED);
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
	{
		entry_copies[i].in_use = aidb_shared->entries[i].in_use;
		if (entry_copies[i].in_use)
			entry_copies[i] = aidb_shared->entries[i];
	}
	LWLockRelease(aidb_shared->lock);
}

/*
 * Forget the handles of our workers that have exited. Before the copy: a
 * worker releases its entry before it exits, so the copy then shows them gone.
 */
static void
reap_workers(void)
{
	pid_t		pid;

	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
	{
		if (worker_handles[i] == NULL ||
			GetBackgroundWorkerPid(worker_handles[i], &pid) != BGWH_STOPPED)
			continue;
		pfree(worker_handles[i]);
		worker_handles[i] = NULL;
	}
}

/* Count pipeline workers that exist or are being started, ours and adopted. */
static int
running_workers(void)
{
	int			count = 0;

	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
		if (worker_handles[i] != NULL || (entry_copies[i].in_use && entry_copies[i].pid != 0))
			count++;
	return count;
}

/*
 * Log, once per waiting spell, why a pipeline has no worker. Not while one
 * of our own discovery workers runs: it may be what holds the slot, for a
 * moment.
 */
static void
warn_no_slot(int i, AidbPipelineEntry *entry, bool capped)
{
	if (warned_no_slot[i] || (!capped && discoveries != NIL))
		return;
	warned_no_slot[i] = true;
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

/*
 * Write a state the launcher decided into entry i, unless a worker has
 * claimed the entry since the copy (the owner writes its own state) or the
 * owner role lost LOGIN meanwhile.
 */
static void
set_state(int i, AidbWorkerState state)
{
	AidbPipelineEntry *entry = &aidb_shared->entries[i];

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if (entry->in_use && entry->pid == 0 && entry->state != AIDB_WORKER_CANNOT_LOGIN)
		entry->state = state;
	LWLockRelease(aidb_shared->lock);
}

/* Free entry i if it is still unwanted and ownerless; true if freed. */
static bool
free_entry(int i)
{
	AidbPipelineEntry *entry = &aidb_shared->entries[i];
	bool		freed = false;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if (entry->in_use && !entry->wanted && entry->pid == 0)
	{
		entry->in_use = false;
		freed = true;
	}
	LWLockRelease(aidb_shared->lock);
	if (freed)
	{
		worker_started_at[i] = 0;
		adopted[i] = warned_no_slot[i] = false;
	}
	return freed;
}

/*
 * SIGTERM to the worker that owns entry i, read afresh just before: the
 * same small window as pg_terminate_backend's between a pid and its signal
 * (an owner releases its entry before it exits).
 */
static void
terminate_owner(int i)
{
	pid_t		pid;

	LWLockAcquire(aidb_shared->lock, LW_SHARED);
	pid = aidb_shared->entries[i].pid;
	LWLockRelease(aidb_shared->lock);
	if (pid != 0)
		(void) kill(pid, SIGTERM);
}

/*
 * Stop whatever worker entry i has: the one we started, through its
 * handle; an adopted one (or one that beat ours to the claim), by pid (ours
 * may get SIGTERM twice: harmless). Each exit wakes us again; `forget`:
 * free the entry once no worker is left.
 */
static void
stop_worker(int i, AidbPipelineEntry *copy, bool forget)
{
	if (worker_handles[i] != NULL)
		TerminateBackgroundWorker(worker_handles[i]);
	if (copy->pid != 0)
		terminate_owner(i);
	if (forget && worker_handles[i] == NULL && copy->pid == 0)
		(void) free_entry(i);
}

/*
 * Start the worker of a wanted entry if it has none; returns whether it
 * waits for one. A worker owns the entry it serves: one that owns it
 * without our handle was started by a previous launcher, and is adopted.
 */
static bool
ensure_worker(int i, AidbPipelineEntry *copy, TimestampTz now, int *running)
{
	if (copy->pid != 0 && worker_handles[i] == NULL && !adopted[i])
	{
		adopted[i] = true;
		ereport(LOG, (errmsg("aidb launcher: adopted the running worker of pipeline \"%s\" (pid %d)",
							 copy->name, (int) copy->pid)));
	}
	if (copy->pid == 0)
		adopted[i] = false;
	if (copy->pid != 0 || worker_handles[i] != NULL || copy->state == AIDB_WORKER_CANNOT_LOGIN)
		return false;
	if (!TimestampDifferenceExceeds(worker_started_at[i], now, RESTART_DELAY_MS))
	{
		/* ours exited without serving (lost its claim, could not connect) */
		if (copy->state == AIDB_WORKER_STARTING)
			set_state(i, AIDB_WORKER_NONE);
		return true;
	}
	if (*running >= aidb_max_workers)
	{
		if (copy->state != AIDB_WORKER_WAITING)
			set_state(i, AIDB_WORKER_WAITING);
		warn_no_slot(i, copy, true);
		return true;
	}
	if (!aidb_start_pipeline_worker(copy, &worker_handles[i]))
	{
		worker_handles[i] = NULL;
		if (copy->state != AIDB_WORKER_WAITING)
			set_state(i, AIDB_WORKER_WAITING);
		warn_no_slot(i, copy, false);
		return true;
	}
	(*running)++;
	worker_started_at[i] = now;
	set_state(i, AIDB_WORKER_STARTING);
	warned_no_slot[i] = false;
	return false;
}

/* Make the running workers match the wanted entries; true if some wait. */
static bool
reconcile_workers(void)
{
	bool		waiting = false;
	TimestampTz now = GetCurrentTimestamp();
	int			running;

	reap_workers();
	copy_entries();
	running = running_workers();
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
	{
		AidbPipelineEntry *copy = &entry_copies[i];

		if (!copy->in_use)
			continue;
		if (!copy->wanted)
			stop_worker(i, copy, true);
		else if (!aidb_enable_background_workers)
			stop_worker(i, copy, false);
		else
			waiting |= ensure_worker(i, copy, now, &running);
	}
	return waiting;
}

/* On exit: commits and workers must stop setting our latch. */
static void
launcher_exit(int code, Datum arg)
{
	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if (aidb_shared->launcher_latch == MyLatch)
		aidb_shared->launcher_latch = NULL;
	LWLockRelease(aidb_shared->lock);
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
	entry_copies = MemoryContextAllocZero(TopMemoryContext,
										  sizeof(AidbPipelineEntry) * AIDB_MAX_ENTRIES);

	on_shmem_exit(launcher_exit, 0);
	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
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
