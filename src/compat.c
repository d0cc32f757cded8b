/*
 * compat.c — C entry points that an older release's SQL still names.
 *
 * The library is installed once for every version of the extension's SQL:
 * after `make install` of a new release, a database keeps the old SQL until
 * ALTER EXTENSION aidb UPDATE, and CREATE EXTENSION aidb VERSION '<old>'
 * must still work (docs/architecture.md, "Extension lifecycle"). So an
 * entry point a release's SQL used is kept here when the current SQL stops
 * using it, with the behaviour that SQL expects; and errors that an older
 * release's objects may meet here name the fix (aidb_outdated_sql_version).
 */
#include "aidb.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#ifndef AIDB_VERSION
#error "AIDB_VERSION (the release, from aidb.control) must be defined by the Makefile"
#endif

PG_FUNCTION_INFO_V1(aidb_worker_state);

/*
 * The version of aidb's SQL objects in this database when it is not this
 * library's release (ALTER EXTENSION aidb UPDATE is due), else NULL. For
 * error hints: the SQL of an older release may call into this library
 * with objects in the shape of that release.
 */
const char *
aidb_outdated_sql_version(void)
{
	Relation	extensions = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("aidb"));
	scan = systable_beginscan(extensions, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		value = heap_getattr(tuple, Anum_pg_extension_extversion,
										 RelationGetDescr(extensions), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(value));
	}
	systable_endscan(scan);
	table_close(extensions, AccessShareLock);
	if (version != NULL && strcmp(version, AIDB_VERSION) == 0)
		return NULL;
	return version;
}

/* The words of 0.1.0's aidb.pipem "worker state" (0.2.0 chooses them in SQL). */
static const char *
state_words_0_1(AidbWorkerState state)
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

/*
 * 0.1.0: aidb._worker_state(pipeline_id) -> (state, pid, last_batch,
 * rows_per_second), the state in words. 0.2.0 has aidb._worker_entry.
 */
Datum
aidb_worker_state(PG_FUNCTION_ARGS)
{
	return aidb_worker_record(fcinfo, state_words_0_1);
}
