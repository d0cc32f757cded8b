/*
 * shmem.c — the shared table of Background pipelines, and the wake-ups
 * that let a commit reach the launcher or a pipeline's worker at once.
 *
 * Discovery workers fill the table; the launcher starts and stops workers
 * from it; workers publish their pid, latch and progress in it; commits that
 * add to a backlog set the worker's latch. One LWLock guards it all: every
 * critical section is a few loads and stores.
 */
#include "aidb.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

AidbShared *aidb_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Pipelines (ids) of this database whose backlog this transaction added to. */
static List *pending_pipeline_wakeups = NIL;
static bool pending_launcher_wakeup = false;
static bool xact_callback_registered = false;

PG_FUNCTION_INFO_V1(aidb_wake_pipeline);
PG_FUNCTION_INFO_V1(aidb_wake_launcher);
PG_FUNCTION_INFO_V1(aidb_worker_state);

/* Ask for our shared memory and our lock (PostgreSQL 15+: in this hook). */
static void
aidb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(AidbShared));
	RequestNamedLWLockTranche("aidb", 1);
}

/* Create (or, in a backend, attach to) the shared table. */
static void
aidb_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	aidb_shared = ShmemInitStruct("aidb", sizeof(AidbShared), &found);
	if (!found)
	{
		memset(aidb_shared, 0, sizeof(AidbShared));
		aidb_shared->lock = &(GetNamedLWLockTranche("aidb"))->lock;
		aidb_shared->rescan_all = true;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the hooks; called from _PG_init when preloaded. */
void
aidb_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = aidb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = aidb_shmem_startup;
}

/* The entry of a pipeline, or NULL. Caller holds the lock. */
AidbPipelineEntry *
aidb_find_entry(Oid dboid, int32 pipeline_id)
{
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
	{
		AidbPipelineEntry *entry = &aidb_shared->entries[i];

		if (entry->in_use && entry->dboid == dboid && entry->pipeline_id == pipeline_id)
			return entry;
	}
	return NULL;
}

/* The entry of a pipeline, created if missing (NULL if the table is full). */
AidbPipelineEntry *
aidb_find_or_add_entry(Oid dboid, int32 pipeline_id)
{
	AidbPipelineEntry *entry = aidb_find_entry(dboid, pipeline_id);

	for (int i = 0; entry == NULL && i < AIDB_MAX_ENTRIES; i++)
	{
		if (!aidb_shared->entries[i].in_use)
		{
			entry = &aidb_shared->entries[i];
			memset(entry, 0, sizeof(AidbPipelineEntry));
			entry->in_use = true;
			entry->dboid = dboid;
			entry->pipeline_id = pipeline_id;
		}
	}
	return entry;
}

/* Ask the launcher to look at one database again (InvalidOid: all of them). */
void
aidb_request_rescan(Oid dboid)
{
	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if (dboid == InvalidOid || aidb_shared->n_rescans >= AIDB_MAX_RESCANS)
		aidb_shared->rescan_all = true;
	else
		aidb_shared->rescan_dboids[aidb_shared->n_rescans++] = dboid;
	LWLockRelease(aidb_shared->lock);
	if (aidb_shared->launcher_latch)
		SetLatch(aidb_shared->launcher_latch);
}

const char *
aidb_worker_state_name(AidbWorkerState state)
{
	switch (state)
	{
		case AIDB_WORKER_WAITING:
			return "WaitingForWorker";
		case AIDB_WORKER_STARTING:
			return "starting";
		case AIDB_WORKER_RUNNING:
			return "running";
		case AIDB_WORKER_BACKOFF:
			return "backing off after errors";
		case AIDB_WORKER_CANNOT_LOGIN:
			return "owner role cannot log in";
		default:
			return NULL;
	}
}

/* At commit, deliver the wake-ups this transaction asked for; on abort, drop them. */
static void
aidb_xact_callback(XactEvent event, void *arg)
{
	ListCell   *cell;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) && aidb_shared)
	{
		LWLockAcquire(aidb_shared->lock, LW_SHARED);
		foreach(cell, pending_pipeline_wakeups)
		{
			AidbPipelineEntry *entry = aidb_find_entry(MyDatabaseId, lfirst_int(cell));

			if (entry && entry->worker_latch)
				SetLatch(entry->worker_latch);
		}
		LWLockRelease(aidb_shared->lock);
		if (pending_launcher_wakeup)
			aidb_request_rescan(MyDatabaseId);
	}
	list_free(pending_pipeline_wakeups);
	pending_pipeline_wakeups = NIL;
	pending_launcher_wakeup = false;
}

static void
register_xact_callback_once(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(aidb_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * aidb._wake_pipeline(pipeline_id): the capture triggers call this after
 * adding to a backlog, so the pipeline's worker wakes when we commit.
 * Without shared memory (aidb not preloaded) there is nobody to wake.
 */
Datum
aidb_wake_pipeline(PG_FUNCTION_ARGS)
{
	int32		pipeline_id = PG_GETARG_INT32(0);
	MemoryContext old;

	if (aidb_shared == NULL)
		PG_RETURN_VOID();
	register_xact_callback_once();
	if (!list_member_int(pending_pipeline_wakeups, pipeline_id))
	{
		old = MemoryContextSwitchTo(TopTransactionContext);
		pending_pipeline_wakeups = lappend_int(pending_pipeline_wakeups, pipeline_id);
		MemoryContextSwitchTo(old);
	}
	PG_RETURN_VOID();
}

/* aidb._wake_launcher(): a pipeline was created, changed or deleted. */
Datum
aidb_wake_launcher(PG_FUNCTION_ARGS)
{
	if (aidb_shared == NULL)
		PG_RETURN_VOID();
	register_xact_callback_once();
	pending_launcher_wakeup = true;
	PG_RETURN_VOID();
}

/* aidb._worker_state(pipeline_id) -> (state, pid), for aidb.pipem. */
Datum
aidb_worker_state(PG_FUNCTION_ARGS)
{
	int32		pipeline_id = PG_GETARG_INT32(0);
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {true, true, true, true};
	AidbPipelineEntry copy;
	AidbPipelineEntry *entry;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "aidb._worker_state must return a record");
	if (aidb_shared != NULL)
	{
		LWLockAcquire(aidb_shared->lock, LW_SHARED);
		entry = aidb_find_entry(MyDatabaseId, pipeline_id);
		if (entry)
			copy = *entry;
		LWLockRelease(aidb_shared->lock);
		if (entry && copy.wanted && aidb_worker_state_name(copy.state))
		{
			values[0] = CStringGetTextDatum(aidb_worker_state_name(copy.state));
			nulls[0] = false;
			if (copy.pid > 0)
			{
				values[1] = Int32GetDatum(copy.pid);
				nulls[1] = false;
			}
			if (copy.last_batch != 0)
			{
				values[2] = TimestampTzGetDatum(copy.last_batch);
				nulls[2] = false;
				values[3] = Float8GetDatum(copy.rows_per_second);
				nulls[3] = false;
			}
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
