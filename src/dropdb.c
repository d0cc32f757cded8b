/*
 * dropdb.c — DROP DATABASE refuses to run while other sessions are
 * connected, and our workers are. This ProcessUtility hook stops a
 * database's pipeline workers first, and keeps the launcher from starting
 * new ones there while the drop runs.
 *
 * Any role that can connect may type DROP DATABASE, so the workers are
 * stopped only for a command that PostgreSQL's own checks would let reach
 * the "other sessions" check: run by the database's owner (or a
 * superuser), outside a transaction block, on a database other than the
 * current one. Anything else passes through untouched and fails there.
 */
#include "aidb.h"

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/timestamp.h"

#include <signal.h>

static ProcessUtility_hook_type prev_process_utility = NULL;

#define STOP_WAIT_MS 10000

/*
 * Ask every worker of the database to exit; wait (bounded) until they have.
 * The pids are read under the lock and signalled after it (the lock is for
 * loads and stores): the small window between is pg_terminate_backend's.
 */
static void
stop_database_workers(Oid dboid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_WAIT_MS);
	pid_t		pids[AIDB_MAX_ENTRIES];
	int			n_pids = 1;

	LWLockAcquire(aidb_shared->lock, LW_EXCLUSIVE);
	aidb_shared->dropping_dboid = dboid;
	for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
		if (aidb_shared->entries[i].in_use && aidb_shared->entries[i].dboid == dboid)
			aidb_shared->entries[i].wanted = false;
	LWLockRelease(aidb_shared->lock);
	aidb_wake_launcher();

	while (n_pids > 0 && GetCurrentTimestamp() < deadline)
	{
		n_pids = 0;
		LWLockAcquire(aidb_shared->lock, LW_SHARED);
		for (int i = 0; i < AIDB_MAX_ENTRIES; i++)
		{
			AidbPipelineEntry *entry = &aidb_shared->entries[i];

			if (entry->in_use && entry->dboid == dboid && entry->pid > 0)
				pids[n_pids++] = entry->pid;
		}
		LWLockRelease(aidb_shared->lock);
		for (int i = 0; i < n_pids; i++)
			(void) kill(pids[i], SIGTERM);
		if (n_pids > 0)
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

/* Whether the current user owns the database (superusers own everything). */
static bool
owns_database(Oid dboid)
{
#if PG_VERSION_NUM >= 160000
	return object_ownercheck(DatabaseRelationId, dboid, GetUserId());
#else
	return pg_database_ownercheck(dboid, GetUserId());
#endif
}

/*
 * The database whose workers this statement may stop: a DROP DATABASE that
 * passes PostgreSQL's own permission and transaction-block checks.
 * InvalidOid for any other statement, for a database that does not exist,
 * is the current one, or is not the current user's; they reach
 * standard_ProcessUtility, which reports the error as always.
 */
static Oid
database_to_drop(PlannedStmt *pstmt, ProcessUtilityContext context)
{
	Oid			dboid;

	if (aidb_shared == NULL || !IsA(pstmt->utilityStmt, DropdbStmt))
		return InvalidOid;
	dboid = get_database_oid(((DropdbStmt *) pstmt->utilityStmt)->dbname, true);
	if (!OidIsValid(dboid) || dboid == MyDatabaseId || !owns_database(dboid))
		return InvalidOid;
	/* Raises the very error standard_ProcessUtility would, before we act. */
	PreventInTransactionBlock(context == PROCESS_UTILITY_TOPLEVEL, "DROP DATABASE");
	return dboid;
}

static void
aidb_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Oid			dboid = database_to_drop(pstmt, context);

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
