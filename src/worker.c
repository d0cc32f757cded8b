/*
 * worker.c — one background worker per Background pipeline.
 *
 * It connects to the pipeline's database as the pipeline's owner and loops:
 * run one step of the Python engine's pipelined batches (aidb._run_batch:
 * start a batch, write the oldest in flight) in its own transaction; after
 * a failure roll back, record it (which releases the leases of the batches
 * in flight), back off and go on;
 * when there is nothing to do, sleep on its latch for
 * background_sync_interval — a commit that adds to its backlog sets that
 * latch, so changes are picked up at once.
 *
 * Before it serves, a worker claims its pipeline's shared entry; a worker
 * that finds the entry owned by another exits at once, so that a pipeline
 * never has two workers, whoever started them (a launcher that was
 * restarted cannot tell what its predecessor started). Only the owner
 * writes the entry, and it releases the entry as it exits. src/README.md
 * draws the states.
 */
#include "aidb.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

typedef struct WorkerArgs
{
	Oid			dboid;
	int32		pipeline_id;
	Oid			owner;
	char		name[NAMEDATALEN];
} WorkerArgs;

/* Outcome of one pass of the loop. */
typedef enum BatchOutcome
{
	BATCH_DID_WORK,				/* keys processed: look for more at once */
	BATCH_IDLE,					/* nothing pending: sleep for the sync interval */
	BATCH_FAILED,				/* back off */
	BATCH_CANCELLED,			/* pg_cancel_backend: pause briefly, then go on */
	BATCH_PIPELINE_GONE			/* deleted, not Background any more, or aidb dropped */
} BatchOutcome;

#define MIN_BACKOFF_MS 1000
#define MAX_BACKOFF_MS (300 * 1000)

static WorkerArgs args;
static long sync_interval_ms = 30000;

/* Start the worker of a pipeline (from the launcher, on its copy of the entry). */
bool
aidb_start_pipeline_worker(AidbPipelineEntry *entry, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;
	WorkerArgs	worker_args;

	memset(&worker_args, 0, sizeof(worker_args));
	worker_args.dboid = entry->dboid;
	worker_args.pipeline_id = entry->pipeline_id;
	worker_args.owner = entry->owner;
	strlcpy(worker_args.name, entry->name, NAMEDATALEN);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "aidb");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "aidb_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "aidb pipeline %s", entry->name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "aidb pipeline worker");
	memcpy(worker.bgw_extra, &worker_args, sizeof(worker_args));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * Take our pipeline's entry: true if it is ours now. False if the launcher
 * no longer wants a worker for it, or another worker owns it — say one that
 * a previous launcher started and the current one adopted.
 */
static bool
claim_entry(pid_t *other)
{
	AidbPipelineEntry *entry;
	bool		claimed = false;

	*other = 0;
	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	entry = aidb_find_entry(args.dboid, args.pipeline_id);
	if (entry && entry->wanted && entry->pid == 0)
	{
		entry->pid = MyProcPid;
		entry->worker_latch = MyLatch;
		entry->state = AIDB_WORKER_STARTING;
		claimed = true;
	}
	else if (entry)
		*other = entry->pid;
	LWLockRelease(aidb_shared->lock);
	return claimed;
}

/* Our entry, if we still own it (lock held). */
static AidbPipelineEntry *
own_entry(void)
{
	AidbPipelineEntry *entry = aidb_find_entry(args.dboid, args.pipeline_id);

	return entry && entry->pid == MyProcPid ? entry : NULL;
}

/* Publish our state and, after a batch that did work, our progress. */
static void
publish_state(AidbWorkerState state, double keys_per_second)
{
	AidbPipelineEntry *entry;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if ((entry = own_entry()) != NULL)
	{
		entry->state = state;
		if (keys_per_second >= 0)
		{
			entry->last_batch = now;
			entry->keys_per_second = keys_per_second;
		}
	}
	LWLockRelease(aidb_shared->lock);
}

/*
 * Our pipeline is gone (deleted, no longer Background, aidb dropped): stop
 * wanting a worker for it, so that the launcher does not start another, and
 * have the database looked at again in case it came back meanwhile.
 */
static void
unpublish_self(void)
{
	AidbPipelineEntry *entry;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	entry = aidb_find_entry(args.dboid, args.pipeline_id);
	if (entry)
	{
		entry->wanted = false;
		entry->published_seq = ++aidb_shared->publish_seq;
	}
	LWLockRelease(aidb_shared->lock);
	aidb_request_rescan(args.dboid, true);
}

/* Whether our errors were cleared since we last looked (and forget that they were). */
static bool
take_urgent_wakeup(void)
{
	AidbPipelineEntry *entry;
	bool		urgent = false;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if ((entry = own_entry()) != NULL)
	{
		urgent = entry->urgent_wakeup;
		entry->urgent_wakeup = false;
	}
	LWLockRelease(aidb_shared->lock);
	return urgent;
}

/*
 * On exit, whatever the reason: release our entry, so that nobody sets our
 * latch any more and the launcher may start our successor, and wake the
 * launcher — it may not be the one that started us, and only that one is
 * notified by the postmaster.
 */
static void
release_entry(int code, Datum arg)
{
	AidbPipelineEntry *entry;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if ((entry = own_entry()) != NULL)
	{
		entry->pid = 0;
		entry->worker_latch = NULL;
		entry->state = AIDB_WORKER_NONE;
	}
	LWLockRelease(aidb_shared->lock);
	aidb_wake_launcher();
}

/* Run one SQL statement returning one int8-compatible value; -1 if no row. */
static int64
query_int(const char *sql)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(args.pipeline_id)};
	bool		isnull;
	Datum		result;

	if (SPI_execute_with_args(sql, 1, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "aidb: query failed: %s", sql);
	if (SPI_processed == 0)
		return -1;
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? -1 : DatumGetInt64(result);
}

/* The body of one pass, inside a transaction: still wanted? then one batch. */
static BatchOutcome
run_batch_in_transaction(int64 *processed)
{
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'aidb'", true, 1)
		!= SPI_OK_SELECT || SPI_processed == 0)
		return BATCH_PIPELINE_GONE;
	sync_interval_ms = query_int(
		"SELECT (extract(epoch FROM background_sync_interval) * 1000)::int8 "
		"FROM aidb.pipeline_registry WHERE id = $1 AND auto_processing = 'Background'");
	if (sync_interval_ms < 0)
		return BATCH_PIPELINE_GONE;
	pgstat_report_activity(STATE_RUNNING, "SELECT aidb._run_batch(...)");
	*processed = query_int("SELECT aidb._run_batch($1)::int8");
	if (*processed < 0)
		return BATCH_FAILED;
	return *processed > 0 ? BATCH_DID_WORK : BATCH_IDLE;
}

/* Record an error that escaped the engine, in a transaction of its own. */
static void
record_error(const char *message)
{
	PG_TRY();
	{
		Oid			argtypes[2] = {INT4OID, TEXTOID};
		Datum		values[2] = {Int32GetDatum(args.pipeline_id), CStringGetTextDatum(message)};

		SetCurrentStatementStartTimestamp();	/* now() of this transaction */
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_execute_with_args("SELECT aidb._record_worker_error($1, $2)", 2, argtypes, values,
							  NULL, false, 0);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		/* the database may be unusable for us right now: the log has it anyway */
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}

/*
 * One pass: a transaction around run_batch_in_transaction. An ERROR rolls
 * the batch back (its keys return to the backlog) and is recorded; a query
 * cancel (pg_cancel_backend) only cancels this batch: it is no failure of
 * the pipeline, and its keys are processed by the next one.
 */
static BatchOutcome
run_one_pass(int64 *processed)
{
	BatchOutcome outcome = BATCH_FAILED;
	MemoryContext loop_context = CurrentMemoryContext;

	PG_TRY();
	{
		/*
		 * No client message sets it in a worker: without this, now() would
		 * stay the time of its first transaction (errors, runs, queued_at).
		 */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		outcome = run_batch_in_transaction(processed);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(loop_context);
		error = CopyErrorData();
		EmitErrorReport();		/* before FlushErrorState, which forgets the error */
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(loop_context);
		if (error->sqlerrcode != ERRCODE_QUERY_CANCELED)
			record_error(error->message);
		outcome = error->sqlerrcode == ERRCODE_QUERY_CANCELED ? BATCH_CANCELLED : BATCH_FAILED;
		FreeErrorData(error);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return outcome;
}

/* Resident memory of this process in MB, from /proc (0 where unknown). */
static long
resident_mb(void)
{
	FILE	   *statm = fopen("/proc/self/statm", "r");
	long		size,
				resident = 0;

	if (statm == NULL)
		return 0;
	if (fscanf(statm, "%ld %ld", &size, &resident) != 2)
		resident = 0;
	fclose(statm);
	return resident * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

/* Apply a configuration reload (SIGHUP) if one is pending. */
static void
reload_config_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * Recycle the process when it grew past aidb.worker_memory_limit — the
 * limit as it is now: the SIGHUP that changed it may be what woke us.
 */
static void
recycle_if_too_big(void)
{
	long		mb;

	reload_config_if_asked();
	mb = resident_mb();

	if (aidb_worker_memory_limit > 0 && mb > aidb_worker_memory_limit)
	{
		ereport(LOG, (errmsg("aidb pipeline \"%s\": restarting, resident memory %ld MB is over "
							 "aidb.worker_memory_limit (%d MB)", args.name, mb,
							 aidb_worker_memory_limit)));
		proc_exit(1);			/* the launcher starts a fresh one */
	}
}

/* Sleep on our latch; commits that add to our backlog set it. */
static void
wait_for(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Wait before retrying a failed batch. Commits that add to the backlog do
 * not end the wait (under steady writes the worker would retry at every
 * insert and hammer a failing provider); clearing the pipeline's errors
 * (retry_pipeline_errors) does.
 */
static void
back_off(long backoff_ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_ms);
	long		remaining;

	while ((remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until)) > 0)
	{
		wait_for(remaining);
		if (take_urgent_wakeup())
			return;
	}
}

/* Worker entry point: the loop of batches. */
void
aidb_worker_main(Datum arg)
{
	char		title[NAMEDATALEN + 16];
	long		backoff_ms = 0;
	pid_t		other;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);		/* exits at the next interrupt check: the batch rolls back */
	BackgroundWorkerUnblockSignals();

	/* Before connecting: a worker that is not needed never shows in pg_stat_activity. */
	on_shmem_exit(release_entry, 0);
	if (!claim_entry(&other))
	{
		if (other != 0)
			ereport(LOG, (errmsg("aidb pipeline \"%s\": worker %d already serves it; exiting",
								 args.name, (int) other)));
		proc_exit(0);
	}
	BackgroundWorkerInitializeConnectionByOid(args.dboid, args.owner, 0);

	snprintf(title, sizeof(title), "aidb pipeline %s", args.name);
	SetConfigOption("application_name", title, PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname(title);
	/*
	 * The owner's own search_path (ALTER ROLE ... SET) may start with a schema
	 * other roles can create in: this process's SQL resolves nothing there.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION);
	publish_state(AIDB_WORKER_RUNNING, -1);

	for (;;)
	{
		int64		processed = 0;
		TimestampTz started = GetCurrentTimestamp();
		BatchOutcome outcome;

		CHECK_FOR_INTERRUPTS();
		reload_config_if_asked();
		ResetLatch(MyLatch);	/* wake-ups from now on are for the next pass */
		(void) take_urgent_wakeup();
		outcome = run_one_pass(&processed);
		switch (outcome)
		{
			case BATCH_PIPELINE_GONE:
				unpublish_self();
				proc_exit(0);
				break;
			case BATCH_DID_WORK:
				backoff_ms = 0;
				publish_state(AIDB_WORKER_RUNNING, processed /
							  Max(0.001, (GetCurrentTimestamp() - started) / 1000000.0));
				break;
			case BATCH_IDLE:
				backoff_ms = 0;
				publish_state(AIDB_WORKER_RUNNING, -1);
				wait_for(sync_interval_ms);
				break;
			case BATCH_CANCELLED:
				publish_state(AIDB_WORKER_RUNNING, -1);
				back_off(MIN_BACKOFF_MS);	/* a canceller repeating itself gets no busy loop */
				break;
			case BATCH_FAILED:
				backoff_ms = Min(Max(backoff_ms * 2, MIN_BACKOFF_MS), MAX_BACKOFF_MS);
				publish_state(AIDB_WORKER_BACKOFF, -1);
				back_off(backoff_ms);
				break;
		}
		recycle_if_too_big();
	}
}
