/*
 * shmem.c — the shared table of Background pipelines, and the wake-ups
 * that let a commit reach the launcher or a pipeline's worker at once.
 *
 * Commits that change the pipeline registry publish the change here (so a
 * new pipeline needs no free worker slot to be noticed: it can say
 * WaitingForWorker); discovery workers fill it at start and at each full
 * rescan; the launcher starts and stops workers from it; workers publish
 * their pid, latch and progress in it; commits that add to a backlog set the
 * worker's latch. One LWLock guards it all: every critical section is a few
 * loads and stores.
 */
#include "aidb.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

AidbShared *aidb_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * A pipeline registry change of this transaction, published at commit. It
 * carries the row as the change left it: the commit callback cannot read
 * catalogs or tables any more.
 */
typedef struct PendingPublish
{
	int32		pipeline_id;
	Oid			owner;
	bool		can_login;
	bool		background;
	int			nest_level;		/* (sub)transaction that made the change */
	char		name[NAMEDATALEN];
	char		dbname[NAMEDATALEN];
} PendingPublish;

/* Wake-ups and publishes this transaction delivers at commit. */
static List *pending_pipeline_wakeups = NIL;	/* ids of this database */
static List *pending_urgent_wakeups = NIL;	/* ids whose back-off ends too */
static List *pending_publishes = NIL;	/* of PendingPublish */
static bool xact_callback_registered = false;

PG_FUNCTION_INFO_V1(aidb_wake_pipeline);
PG_FUNCTION_INFO_V1(aidb_publish_pipeline);
PG_FUNCTION_INFO_V1(aidb_worker_entry);

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

/*
 * Fill in a wanted entry from its registry row (caller holds the lock). An
 * owner role without LOGIN gets no worker until it has it again.
 */
void
aidb_set_entry(AidbPipelineEntry *entry, Oid owner, bool can_login, const char *name,
			   const char *dbname)
{
	entry->wanted = true;
	entry->owner = owner;
	strlcpy(entry->name, name, NAMEDATALEN);
	strlcpy(entry->dbname, dbname, NAMEDATALEN);
	if (!can_login)
		entry->state = AIDB_WORKER_CANNOT_LOGIN;
	else if (entry->state == AIDB_WORKER_CANNOT_LOGIN)
		entry->state = AIDB_WORKER_NONE;
}

/*
 * Ask the launcher to look at one database again (InvalidOid: all of them).
 * The launcher re-queues a discovery it could not start without waking
 * itself: it retries on its timer.
 */
void
aidb_request_rescan(Oid dboid, bool wake_launcher)
{
	bool		queued = false;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < aidb_shared->n_rescans; i++)
		queued |= aidb_shared->rescan_dboids[i] == dboid;
	if (dboid == InvalidOid || (!queued && aidb_shared->n_rescans >= AIDB_MAX_RESCANS))
		aidb_shared->rescan_all = true;
	else if (!queued)
		aidb_shared->rescan_dboids[aidb_shared->n_rescans++] = dboid;
	LWLockRelease(aidb_shared->lock);
	if (wake_launcher)
		aidb_wake_launcher();
}

/*
 * Set the launcher's latch, if a launcher runs. The pointer is read once: a
 * launcher that exits clears it. (A latch set just after its launcher left
 * wakes whichever process took over that PGPROC: a spurious wake-up, which
 * every latch user tolerates.)
 */
void
aidb_wake_launcher(void)
{
	Latch	   *latch = ((volatile AidbShared *) aidb_shared)->launcher_latch;

	if (latch)
		SetLatch(latch);
}

/* The code by which a worker state crosses to SQL (NULL: no state to show). */
const char *
aidb_worker_state_code(AidbWorkerState state)
{
	switch (state)
	{
		case AIDB_WORKER_WAITING:
			return "waiting";
		case AIDB_WORKER_STARTING:
			return "starting";
		case AIDB_WORKER_RUNNING:
			return "running";
		case AIDB_WORKER_BACKOFF:
			return "backoff";
		case AIDB_WORKER_CANNOT_LOGIN:
			return "cannot_login";
		default:
			return NULL;
	}
}

/*
 * Write one registry change into the shared table (lock held); false if a
 * Background pipeline found no free entry (the caller warns, unlocked).
 */
static bool
apply_publish(PendingPublish *change)
{
	AidbPipelineEntry *entry = change->background
		? aidb_find_or_add_entry(MyDatabaseId, change->pipeline_id)
		: aidb_find_entry(MyDatabaseId, change->pipeline_id);

	if (entry == NULL)
		return !change->background;
	/* a discovery that read the registry before this commit must not undo it */
	entry->published_seq = ++aidb_shared->publish_seq;
	if (change->background)
		aidb_set_entry(entry, change->owner, change->can_login, change->name, change->dbname);
	else
		entry->wanted = false;
	return true;
}

/*
 * Deliver this transaction's publishes and wake-ups. Under the lock only
 * loads and stores: the latches to set and the publishes that found no room
 * are collected, and set or reported once it is released.
 */
static void
deliver_at_commit(void)
{
	int			n_wakeups = list_length(pending_pipeline_wakeups);
	Latch	  **latches = palloc0(sizeof(Latch *) * Max(n_wakeups, 1));
	bool	   *no_room = palloc0(sizeof(bool) * Max(list_length(pending_publishes), 1));
	int			n_latches = 0;
	ListCell   *cell;

	LWLockAcquire(aidb_shared->lock, (pending_urgent_wakeups != NIL || pending_publishes != NIL)
				  ? LW_EXCLUSIVE : LW_SHARED);
	foreach(cell, pending_publishes)
		no_room[foreach_current_index(cell)] = !apply_publish(lfirst(cell));
	foreach(cell, pending_pipeline_wakeups)
	{
		AidbPipelineEntry *entry = aidb_find_entry(MyDatabaseId, lfirst_int(cell));

		if (entry && list_member_int(pending_urgent_wakeups, entry->pipeline_id))
			entry->urgent_wakeup = true;
		if (entry && entry->worker_latch)
			latches[n_latches++] = entry->worker_latch;
	}
	LWLockRelease(aidb_shared->lock);

	/* A latch whose worker exited meanwhile wakes its PGPROC's next owner: harmless. */
	for (int i = 0; i < n_latches; i++)
		SetLatch(latches[i]);
	foreach(cell, pending_publishes)
		if (no_room[foreach_current_index(cell)])
			elog(WARNING, "aidb: more than %d Background pipelines; \"%s\" gets no worker",
				 AIDB_MAX_ENTRIES, ((PendingPublish *) lfirst(cell))->name);
	if (pending_publishes != NIL)
		aidb_wake_launcher();
}

/* At commit, deliver the wake-ups and publishes asked for; otherwise drop them. */
static void
aidb_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT && event != XACT_EVENT_PREPARE &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	/* (PREPARE: nothing is delivered at COMMIT PREPARED; the next full rescan sees it.) */
	if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) && aidb_shared &&
		(pending_pipeline_wakeups != NIL || pending_publishes != NIL))
		deliver_at_commit();
	/* the lists live in TopTransactionContext, which goes away now */
	pending_pipeline_wakeups = NIL;
	pending_urgent_wakeups = NIL;
	pending_publishes = NIL;
}

/*
 * A subtransaction's publishes go with it when it aborts; when it commits,
 * they belong to its parent (whose abort then drops them).
 */
static void
aidb_subxact_callback(SubXactEvent event, SubTransactionId subid, SubTransactionId parent,
					  void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *cell;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	foreach(cell, pending_publishes)
	{
		PendingPublish *change = lfirst(cell);

		if (change->nest_level < level)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			pending_publishes = foreach_delete_current(pending_publishes, cell);
		else
			change->nest_level = level - 1;
	}
}

static void
register_xact_callback_once(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(aidb_xact_callback, NULL);
		RegisterSubXactCallback(aidb_subxact_callback, NULL);
		xact_callback_registered = true;
	}
}

/* Append to a transaction-lifetime list of ids, once. */
static List *
add_pipeline_id(List *ids, int32 pipeline_id)
{
	MemoryContext old;

	if (list_member_int(ids, pipeline_id))
		return ids;
	old = MemoryContextSwitchTo(TopTransactionContext);
	ids = lappend_int(ids, pipeline_id);
	MemoryContextSwitchTo(old);
	return ids;
}

/*
 * Wake the worker of this database's pipeline `pipeline_id` when the current
 * transaction commits. A worker backing off after errors keeps waiting
 * unless the wake-up is urgent (its errors were cleared): retrying at every
 * insert would hammer a failing provider. Without shared memory (aidb not
 * preloaded) there is nobody to wake.
 */
void
aidb_request_wakeup(int32 pipeline_id, bool urgent)
{
	if (aidb_shared == NULL)
		return;
	register_xact_callback_once();
	pending_pipeline_wakeups = add_pipeline_id(pending_pipeline_wakeups, pipeline_id);
	if (urgent)
		pending_urgent_wakeups = add_pipeline_id(pending_urgent_wakeups, pipeline_id);
}

/*
 * aidb._wake_pipeline(pipeline_id, urgent): aidb_request_wakeup for SQL. Its
 * callers act as the pipeline's owner (its capture functions, members of
 * the owner clearing its errors); anyone else could end a failing
 * pipeline's back-off at will and have it hammer its provider. Pipelines
 * without a worker have no entry, and nothing to wake.
 */
Datum
aidb_wake_pipeline(PG_FUNCTION_ARGS)
{
	int32		pipeline_id = PG_GETARG_INT32(0);
	Oid			owner = InvalidOid;

	if (aidb_shared != NULL)
	{
		AidbPipelineEntry *entry;

		LWLockAcquire(aidb_shared->lock, LW_SHARED);
		entry = aidb_find_entry(MyDatabaseId, pipeline_id);
		if (entry)
			owner = entry->owner;
		LWLockRelease(aidb_shared->lock);
	}
	if (OidIsValid(owner) && !has_privs_of_role(GetUserId(), owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to wake the worker of aidb pipeline %d", pipeline_id),
				 errdetail("Only members of its owner role may.")));
	aidb_request_wakeup(pipeline_id, PG_GETARG_BOOL(1));
	PG_RETURN_VOID();
}

/*
 * aidb._publish_pipeline(id, owner, can_login, name, background): the
 * registry's row trigger reports a created, changed or deleted pipeline; at
 * commit the launcher's table says whether it wants a worker, and the
 * launcher wakes. Not callable by users (see 35_workers.sql).
 */
Datum
aidb_publish_pipeline(PG_FUNCTION_ARGS)
{
	PendingPublish *change;
	MemoryContext old;

	if (aidb_shared == NULL)
		PG_RETURN_VOID();
	register_xact_callback_once();
	old = MemoryContextSwitchTo(TopTransactionContext);
	change = palloc0(sizeof(PendingPublish));
	change->pipeline_id = PG_GETARG_INT32(0);
	change->owner = PG_GETARG_OID(1);
	change->can_login = PG_GETARG_BOOL(2);
	text_to_cstring_buffer(PG_GETARG_TEXT_PP(3), change->name, NAMEDATALEN);
	change->background = PG_GETARG_BOOL(4);
	change->nest_level = GetCurrentTransactionNestLevel();
	strlcpy(change->dbname, get_database_name(MyDatabaseId), NAMEDATALEN);
	pending_publishes = lappend(pending_publishes, change);
	MemoryContextSwitchTo(old);
	PG_RETURN_VOID();
}

/*
 * The (state, pid, last_batch, keys_per_second) record of a pipeline's
 * worker as the shared table knows it, the state named by `name` (NULL: no
 * row values); shared by aidb._worker_entry and 0.1.0's aidb._worker_state.
 */
Datum
aidb_worker_record(FunctionCallInfo fcinfo, const char *(*name) (AidbWorkerState))
{
	int32		pipeline_id = PG_GETARG_INT32(0);
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {true, true, true, true};
	AidbPipelineEntry copy;
	AidbPipelineEntry *entry = NULL;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE || tupdesc->natts != 4)
		elog(ERROR, "aidb's worker state function must return a record of 4 columns");
	if (aidb_shared != NULL)
	{
		LWLockAcquire(aidb_shared->lock, LW_SHARED);
		entry = aidb_find_entry(MyDatabaseId, pipeline_id);
		if (entry)
			copy = *entry;
		LWLockRelease(aidb_shared->lock);
	}
	if (entry && copy.wanted && name(copy.state))
	{
		values[0] = CStringGetTextDatum(name(copy.state));
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
			values[3] = Float8GetDatum(copy.keys_per_second);
			nulls[3] = false;
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * aidb._worker_entry(pipeline_id) -> (code, pid, last_batch, keys_per_second):
 * the worker of a Background pipeline as the shared table knows it. The
 * state goes out as its code (aidb_worker_state_code); aidb._worker_state
 * (35_workers.sql) turns it into the words of aidb.pipem and aidb.workers.
 */
Datum
aidb_worker_entry(PG_FUNCTION_ARGS)
{
	return aidb_worker_record(fcinfo, aidb_worker_state_code);
}
