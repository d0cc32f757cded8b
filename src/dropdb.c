/*
 * dropdb.c — DROP DATABASE refuses to run while other sessions are
 * connected, and our workers are. This ProcessUtility hook stops a
 * database's pipeline workers first, and keeps the launcher from starting
 * new ones there while the drop runs.
 */
#include "aidb.h"

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/timestamp.h"

#include <signal.h>

static ProcessUtility_hook_type prev_process_utility = NULL;

#define STOP_WAIT_MS 10000

/* Ask every worker of the database to exit; wait (bounded) until they have. */
static void
stop_database_workers(Oid dboid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_WAIT_MS);
	bool		any_left = true;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	aidb_shared->dropping_dboid = dboid;
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
		if (aidb_shared->entries[i].in_use && aidb_shared->entries[i].dboid == dboid)
			aidb_shared->entries[i].wanted = false;
	LWLockRelease(aidb_shared->lock);
	if (aidb_shared->launcher_latch)
		SetLatch(aidb_shared->launcher_latch);

	while (any_left && GetCurrentTimestamp() < deadline)
	{
		any_left = false;
		LWLockAcquire(aidb_shared->lock, LW_SHARED);
		for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
		{
			AidbPipelineEntry *entry = &aidb_shared->entries[i];

			if (entry->in_use && entry->dboid == dboid && entry->pid > 0)
			{
				kill(entry->pid, SIGTERM);
				any_left = true;
			}
		}
		LWLockRelease(aidb_shared->lock);
		if (any_left)
			pg_usleep(50 * 1000L);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The drop is over: the launcher may start workers there again. If it
 * failed (other sessions were connected, say), the database's pipelines get
 * their workers back through a discovery.
 */
static void
end_database_drop(Oid dboid, bool failed)
{
	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	if (aidb_shared->dropping_dboid == dboid)
		aidb_shared->dropping_dboid = InvalidOid;
	LWLockRelease(aidb_shared->lock);
	if (failed)
		aidb_request_rescan(dboid, true);
}

static void
call_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);
}

static void
aidb_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Oid			dboid = InvalidOid;

	if (aidb_shared != NULL && IsA(pstmt->utilityStmt, DropdbStmt))
		dboid = get_database_oid(((DropdbStmt *) pstmt->utilityStmt)->dbname, true);
	if (!OidIsValid(dboid))
	{
		call_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
							 dest, qc);
		return;
	}
	stop_database_workers(dboid);
	PG_TRY();
	{
		call_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
							 dest, qc);
	}
	PG_CATCH();
	{
		end_database_drop(dboid, true);
		PG_RE_THROW();
	}
	PG_END_TRY();
	end_database_drop(dboid, false);
}

void
aidb_install_dropdb_hook(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = aidb_process_utility;
}
