/*
 * capture.c — the fast path of change capture: aidb._capture_keys(), the
 * AFTER INSERT / UPDATE triggers of a table pipeline that is not Live:
 *
 * - INSERT, for each row: holds the row's key (pending_keys.c);
 * - INSERT, for each statement: writes the keys its rows' triggers held;
 * - UPDATE, for each statement, with transition tables: compares old and
 *   new rows and writes the keys whose content changed.
 *
 * Why C: a single-row INSERT into a table with a PL/pgSQL capture trigger
 * (SECURITY DEFINER, fixed search_path, an INSERT ... SELECT from the
 * transition table) ran at about half the speed of the bare table. This
 * function appends the keys straight to the pipeline's backlog through the
 * table AM, without the executor, SPI, a user switch or a GUC change, and
 * costs the writer a few microseconds per statement. Why a row trigger for
 * INSERT: pending_keys.c.
 *
 * It only appends keys. Whatever needs more, it hands to the pipeline's
 * PL/pgSQL capture function aidb._capture_<id>() (pipeline/capture.py), as if
 * that had been the trigger function: an UPDATE that changes a key (its old
 * key's destination rows go at once). DELETE and TRUNCATE triggers, and every
 * trigger of a Live pipeline, call that function directly.
 *
 * Trigger arguments: pipeline id, key column, data column ('' = any column,
 * for pipelines with a source_filter). Only aidb._create_capture_triggers()
 * attaches this function (EXECUTE is revoked from PUBLIC), so the arguments
 * are aidb's own. The backlog, though, is checked at every call
 * (check_backlog): this code writes into it trusting its shape.
 */
#include "aidb.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(aidb_capture_keys);

/*
 * Keys are appended in groups of up to this many rows (table_multi_insert,
 * as COPY does): one WAL record and one buffer lock per page instead of per
 * row, for the INSERT ... SELECT and COPY statements that write thousands.
 */
#define KEYS_PER_GROUP 1000

/*
 * Held keys of an INSERT this many or more go into one backlog row, as an
 * array (column keys; key NULL), which a worker's claim splits into rows of
 * one key (docs/architecture.md, "The batch protocol"): the writer pays for
 * one row and its array instead of a row per key, a sixth of the WAL.
 */
#define KEYS_PER_SET 1000

/* Where one trigger call appends keys, and what it compares. */
typedef struct CaptureTarget
{
	int32		pipeline_id;
	Relation	backlog;
	List	   *indexes;		/* of Relation, the backlog's indexes */
	List	   *index_infos;	/* of IndexInfo, in the same order */
	BulkInsertState bulk;		/* for statements of many keys */
	TupleTableSlot *group[KEYS_PER_GROUP];	/* created as needed */
	int			grouped;		/* keys waiting in group[] */
	MemoryContext group_memory; /* their copies; reset after each group */
	AttrNumber	key_attnum;
	AttrNumber	data_attnum;	/* InvalidAttrNumber: compare every column */
	TimestampTz queued_at;
	int64		enqueued;
} CaptureTarget;

/*
 * Reject calls that are not one of aidb's own AFTER triggers: INSERT for each
 * row or statement (a statement trigger of an older release may still have a
 * transition table: its rows are captured too), UPDATE for each statement
 * with both transition tables.
 */
static void
check_trigger_call(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	int			event;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("aidb._capture_keys() may only be called as a trigger")));
	event = trigdata->tg_event;
	if (!TRIGGER_FIRED_AFTER(event) || trigdata->tg_trigger->tgnargs != 3 ||
		!(TRIGGER_FIRED_BY_INSERT(event) ||
		  (TRIGGER_FIRED_BY_UPDATE(event) && TRIGGER_FIRED_FOR_STATEMENT(event) &&
		   trigdata->tg_oldtable != NULL && trigdata->tg_newtable != NULL)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("aidb._capture_keys() must be an AFTER INSERT trigger or an AFTER UPDATE "
						"statement trigger with transition tables, created by aidb")));
}

/* The attribute number of a column of the trigger's table, by name. */
static AttrNumber
source_attnum(Relation source, const char *column)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(source), column);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of aidb's capture trigger is missing from table \"%s\"",
						column, RelationGetRelationName(source)),
				 errhint("Renaming a pipeline's key or data column breaks its capture: "
						 "rename it back, or delete and recreate the pipeline.")));
	return attnum;
}

#define BACKLOG_COLUMNS "its columns are not exactly (key, queued_at timestamptz, keys key[])"

/*
 * Why the backlog is not the table aidb made, or NULL. Written through the
 * table AM, it must be exactly that: a plain table of schema aidb owned by a
 * superuser (pipeline owners may add and remove rows, never alter it), with
 * nothing that would run code or hide rows (triggers, rules, row security),
 * and the columns (key, queued_at, keys) where key has the base type of the
 * source's key column as it is now and keys is an array of that type (both
 * checked by check_backlog). A datum written into a column of
 * another type corrupts the table or crashes the server: that is what
 * ALTER TABLE source ALTER COLUMN key TYPE ... would otherwise lead to.
 */
static const char *
backlog_problem(Relation backlog)
{
	Form_pg_class rel = backlog->rd_rel;
	TupleDesc	desc = RelationGetDescr(backlog);
	Form_pg_attribute key_attr;
	Form_pg_attribute queued_attr;
	Form_pg_attribute keys_attr;

	if (rel->relkind != RELKIND_RELATION)
		return "it is not a plain table";
	if (rel->relnamespace != get_namespace_oid("aidb", false))
		return "it is not in schema aidb";
	if (!superuser_arg(rel->relowner))
		return "it does not belong to a superuser";
	if (backlog->trigdesc != NULL || rel->relhasrules)
		return "it has triggers or rules";
	if (rel->relrowsecurity || rel->relforcerowsecurity)
		return "it has row-level security enabled";
	if (desc->natts != 3)		/* dropped columns count: their slots would be unset */
		return BACKLOG_COLUMNS;
	key_attr = TupleDescAttr(desc, 0);
	queued_attr = TupleDescAttr(desc, 1);
	keys_attr = TupleDescAttr(desc, 2);
	if (key_attr->attisdropped || queued_attr->attisdropped || keys_attr->attisdropped ||
		strcmp(NameStr(key_attr->attname), "key") != 0 ||
		strcmp(NameStr(queued_attr->attname), "queued_at") != 0 ||
		strcmp(NameStr(keys_attr->attname), "keys") != 0 ||
		queued_attr->atttypid != TIMESTAMPTZOID)
		return BACKLOG_COLUMNS;
	return NULL;
}

/* Refuse to write into a backlog that is not the table aidb made: why not. */
static void
refuse_backlog(Relation backlog, Relation source, int32 pipeline_id, const char *problem)
{
	/* After an install of a new release, an older release's backlog. */
	const char *sql_version = aidb_outdated_sql_version();

	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("aidb pipeline %d cannot capture changes of table \"%s\": "
					"its backlog aidb.%s is not the table aidb made: %s",
					pipeline_id, RelationGetRelationName(source),
					RelationGetRelationName(backlog), problem),
			 sql_version != NULL ?
			 errdetail("This database has the SQL objects of aidb %s; the installed "
					   "library is aidb %s.", sql_version, AIDB_VERSION) : 0,
			 sql_version != NULL ?
			 errhint("ALTER EXTENSION aidb UPDATE;") :
			 errhint("Delete the pipeline with aidb.delete_pipeline() and create it again.")));
}

/* Refuse to write into a backlog that is not the table aidb made. */
static void
check_backlog(Relation backlog, Relation source, AttrNumber key_attnum, int32 pipeline_id)
{
	Form_pg_attribute source_key = TupleDescAttr(RelationGetDescr(source), key_attnum - 1);
	const char *problem = backlog_problem(backlog);
	Oid			backlog_key_type;

	if (problem != NULL)
		refuse_backlog(backlog, source, pipeline_id, problem);
	backlog_key_type = TupleDescAttr(RelationGetDescr(backlog), 0)->atttypid;
	if (backlog_key_type != getBaseType(source_key->atttypid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("aidb pipeline %d cannot capture changes of table \"%s\": "
						"the key column's type changed",
						pipeline_id, RelationGetRelationName(source)),
				 errdetail("Its backlog aidb.%s holds keys of type %s; column \"%s\" is now "
						   "of type %s.", RelationGetRelationName(backlog),
						   format_type_be(backlog_key_type), NameStr(source_key->attname),
						   format_type_be(source_key->atttypid)),
				 errhint("Change the column back to type %s, or delete the pipeline with "
						 "aidb.delete_pipeline() and create it again.",
						 format_type_be(backlog_key_type))));
	/* Checked after the key's: a retyped key column is the clearer message. */
	if (TupleDescAttr(RelationGetDescr(backlog), 2)->atttypid != get_array_type(backlog_key_type))
		refuse_backlog(backlog, source, pipeline_id, BACKLOG_COLUMNS);
}

/* Open the pipeline's backlog and its indexes, ready to append keys. */
static void
open_target(CaptureTarget *target, TriggerData *trigdata, int64 expected_keys)
{
	char	  **args = trigdata->tg_trigger->tgargs;
	char		backlog_name[NAMEDATALEN];
	Oid			backlog_oid;
	List	   *index_oids;
	ListCell   *lc;

	memset(target, 0, sizeof(*target));
	target->pipeline_id = pg_strtoint32(args[0]);
	target->key_attnum = source_attnum(trigdata->tg_relation, args[1]);
	target->data_attnum = args[2][0] == '\0' ? InvalidAttrNumber
		: source_attnum(trigdata->tg_relation, args[2]);

	snprintf(backlog_name, sizeof(backlog_name), "_backlog_%d", target->pipeline_id);
	backlog_oid = get_relname_relid(backlog_name, get_namespace_oid("aidb", false));
	if (!OidIsValid(backlog_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the backlog of aidb pipeline %d is missing", target->pipeline_id),
				 errhint("Delete the pipeline with aidb.delete_pipeline() and create it again.")));
	target->backlog = table_open(backlog_oid, RowExclusiveLock);
	check_backlog(target->backlog, trigdata->tg_relation, target->key_attnum,
				  target->pipeline_id);

	/* The backlog's own index on key (CatalogIndexInsert does the same). */
	index_oids = RelationGetIndexList(target->backlog);
	foreach(lc, index_oids)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info = BuildIndexInfo(index);

		if (info->ii_Expressions != NIL || info->ii_Predicate != NIL)
			elog(ERROR, "aidb backlog \"%s\" has an unexpected index: %s",
				 backlog_name, RelationGetRelationName(index));
		target->indexes = lappend(target->indexes, index);
		target->index_infos = lappend(target->index_infos, info);
	}
	list_free(index_oids);

	/*
	 * BulkInsertState belongs to the heap AM (a backlog is heap unless
	 * default_table_access_method said otherwise).
	 */
	if (expected_keys > 1 && target->backlog->rd_tableam == GetHeapamTableAmRoutine())
		target->bulk = GetBulkInsertState();
	target->group_memory = AllocSetContextCreate(CurrentMemoryContext, "aidb capture",
												 ALLOCSET_DEFAULT_SIZES);
	target->queued_at = GetCurrentTransactionStartTimestamp();
}

/* The index entries of a backlog row just written from `slot`. */
static void
insert_index_entries(CaptureTarget *target, TupleTableSlot *slot)
{
	ListCell   *index_lc,
			   *info_lc;

	forboth(index_lc, target->indexes, info_lc, target->index_infos)
	{
		Relation	index = (Relation) lfirst(index_lc);
		IndexInfo  *info = (IndexInfo *) lfirst(info_lc);
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		FormIndexDatum(info, slot, NULL, values, isnull);
		index_insert(index, values, isnull, &slot->tts_tid, target->backlog,
					 info->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, info);
	}
}

/* Write the keys waiting in the group: backlog rows, then their index entries. */
static void
flush_group(CaptureTarget *target)
{
	MemoryContext old = MemoryContextSwitchTo(target->group_memory);

	if (target->grouped == 1)
		table_tuple_insert(target->backlog, target->group[0], GetCurrentCommandId(true), 0,
						   target->bulk);
	else if (target->grouped > 1)
		table_multi_insert(target->backlog, target->group, target->grouped,
						   GetCurrentCommandId(true), 0, target->bulk);
	for (int i = 0; i < target->grouped; i++)
	{
		insert_index_entries(target, target->group[i]);
		ExecClearTuple(target->group[i]);
	}
	target->enqueued += target->grouped;
	target->grouped = 0;
	MemoryContextSwitchTo(old);
	MemoryContextReset(target->group_memory);
}

/*
 * Write what is left, and release what open_target took (the locks stay
 * until the transaction ends).
 */
static void
close_target(CaptureTarget *target)
{
	ListCell   *lc;

	flush_group(target);
	foreach(lc, target->indexes)
		index_close((Relation) lfirst(lc), NoLock);
	if (target->bulk)
		FreeBulkInsertState(target->bulk);
	for (int i = 0; i < KEYS_PER_GROUP && target->group[i] != NULL; i++)
		ExecDropSingleTupleTableSlot(target->group[i]);
	table_close(target->backlog, NoLock);
	MemoryContextDelete(target->group_memory);
}

/*
 * Append one key to the backlog: a row (key, queued_at), written with its
 * group. The key is copied: it points into a transition table's current row.
 */
static void
enqueue_key(CaptureTarget *target, Datum key)
{
	Form_pg_attribute key_attr = TupleDescAttr(RelationGetDescr(target->backlog), 0);
	TupleTableSlot *slot;
	MemoryContext old;

	if (target->group[target->grouped] == NULL)
		target->group[target->grouped] = table_slot_create(target->backlog, NULL);
	slot = target->group[target->grouped++];
	ExecClearTuple(slot);
	old = MemoryContextSwitchTo(target->group_memory);
	slot->tts_values[0] = datumCopy(key, key_attr->attbyval, key_attr->attlen);
	MemoryContextSwitchTo(old);
	slot->tts_isnull[0] = false;
	slot->tts_values[1] = TimestampTzGetDatum(target->queued_at);
	slot->tts_isnull[1] = false;
	slot->tts_isnull[2] = true;	/* keys: this row holds one */
	ExecStoreVirtualTuple(slot);
	if (target->grouped == KEYS_PER_GROUP)
		flush_group(target);
}

/*
 * Append `count` keys as one backlog row: (NULL, queued_at, keys). The
 * array goes out of line, uncompressed: the column's storage is EXTERNAL
 * (aidb._create_bookkeeping says why).
 */
static void
enqueue_key_set(CaptureTarget *target, Datum *keys, int count)
{
	TupleDesc	desc = RelationGetDescr(target->backlog);
	Oid			key_type = TupleDescAttr(desc, 0)->atttypid;
	TupleTableSlot *slot = table_slot_create(target->backlog, NULL);
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(key_type, &typlen, &typbyval, &typalign);
	ExecClearTuple(slot);
	slot->tts_isnull[0] = true;
	slot->tts_values[1] = TimestampTzGetDatum(target->queued_at);
	slot->tts_isnull[1] = false;
	slot->tts_values[2] = PointerGetDatum(construct_array(keys, count, key_type, typlen,
														  typbyval, typalign));
	slot->tts_isnull[2] = false;
	ExecStoreVirtualTuple(slot);
	table_tuple_insert(target->backlog, slot, GetCurrentCommandId(true), 0, NULL);
	insert_index_entries(target, slot);
	ExecDropSingleTupleTableSlot(slot);
	target->enqueued += count;
}

/*
 * A private read pointer on a transition table, at its start: other triggers
 * of the same statement read the same tuplestore (as NamedTuplestoreScan does).
 */
static void
rewind_transition_table(Tuplestorestate *table)
{
	int			pointer = tuplestore_alloc_read_pointer(table, EXEC_FLAG_REWIND);

	tuplestore_select_read_pointer(table, pointer);
	tuplestore_rescan(table);
}

/* INSERT: every new row's key. */
static void
enqueue_new_rows(CaptureTarget *target, Tuplestorestate *new_rows, TupleDesc desc)
{
	TupleTableSlot *row = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	bool		isnull;

	rewind_transition_table(new_rows);
	while (tuplestore_gettupleslot(new_rows, true, false, row))
	{
		Datum		key = slot_getattr(row, target->key_attnum, &isnull);

		if (!isnull)			/* a unique column may hold NULLs: nothing to embed under */
			enqueue_key(target, key);
	}
	ExecDropSingleTupleTableSlot(row);
}

/*
 * Whether two values are the same TOASTed value: an UPDATE that leaves a
 * large column alone carries its TOAST pointer over unchanged. Comparing the
 * pointers spares fetching and comparing a whole document for every update
 * of some other column.
 */
static bool
same_toast_pointer(Datum a, Datum b)
{
	struct varatt_external a_pointer,
				b_pointer;

	if (!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(a)) ||
		!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(b)))
		return false;
	VARATT_EXTERNAL_GET_POINTER(a_pointer, DatumGetPointer(a));
	VARATT_EXTERNAL_GET_POINTER(b_pointer, DatumGetPointer(b));
	return a_pointer.va_valueid == b_pointer.va_valueid &&
		a_pointer.va_toastrelid == b_pointer.va_toastrelid;
}

/* Whether attribute `attnum` holds the same bytes in both rows (NULLs equal). */
static bool
same_attribute(TupleTableSlot *a, TupleTableSlot *b, AttrNumber attnum)
{
	Form_pg_attribute attr = TupleDescAttr(a->tts_tupleDescriptor, attnum - 1);
	bool		a_null,
				b_null;
	Datum		a_value = slot_getattr(a, attnum, &a_null);
	Datum		b_value = slot_getattr(b, attnum, &b_null);

	if (a_null || b_null)
		return a_null == b_null;
	if (attr->attlen == -1 && same_toast_pointer(a_value, b_value))
		return true;
	return datum_image_eq(a_value, b_value, attr->attbyval, attr->attlen);
}

/*
 * Whether the embedded content of an updated row may have changed: its data
 * column, or (with a source_filter, which may read any column) any column.
 * Equal bytes mean equal text; different bytes with equal text (rare) only
 * enqueue a key that the batch then skips by its content hash.
 */
static bool
row_changed(CaptureTarget *target, TupleTableSlot *old_row, TupleTableSlot *new_row)
{
	TupleDesc	desc = old_row->tts_tupleDescriptor;

	if (target->data_attnum != InvalidAttrNumber)
		return !same_attribute(old_row, new_row, target->data_attnum);
	for (int i = 0; i < desc->natts; i++)
	{
		if (!TupleDescAttr(desc, i)->attisdropped &&
			!same_attribute(old_row, new_row, i + 1))
			return true;
	}
	return false;
}

/*
 * UPDATE: the keys of rows whose content changed. The old and new transition
 * tables hold each updated row at the same position. If every pair has the
 * same key, no key vanished and we need only compare contents. Otherwise
 * (a key changed) returns false, having enqueued nothing: the caller hands
 * the statement to the general capture function.
 */
static bool
enqueue_changed_rows(CaptureTarget *target, Tuplestorestate *old_rows,
					 Tuplestorestate *new_rows, TupleDesc desc)
{
	Form_pg_attribute key_attr = TupleDescAttr(desc, target->key_attnum - 1);
	int64		rows = tuplestore_tuple_count(new_rows);
	TupleTableSlot *old_row;
	TupleTableSlot *new_row;
	Datum	   *changed;		/* keys to enqueue, once we know no key moved */
	int64		n_changed = 0;

	if (tuplestore_tuple_count(old_rows) != rows)
		return false;
	old_row = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	new_row = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	changed = palloc(Max(rows, 1) * sizeof(Datum));
	rewind_transition_table(old_rows);
	rewind_transition_table(new_rows);
	while (tuplestore_gettupleslot(old_rows, true, false, old_row) &&
		   tuplestore_gettupleslot(new_rows, true, false, new_row))
	{
		bool		isnull;
		Datum		key;

		if (!same_attribute(old_row, new_row, target->key_attnum))
			break;
		key = slot_getattr(new_row, target->key_attnum, &isnull);
		if (!isnull && row_changed(target, old_row, new_row))
			changed[n_changed++] = datumCopy(key, key_attr->attbyval, key_attr->attlen);
		rows--;
	}
	ExecDropSingleTupleTableSlot(old_row);
	ExecDropSingleTupleTableSlot(new_row);
	if (rows > 0)				/* stopped at a key change */
		return false;
	for (int64 i = 0; i < n_changed; i++)
		enqueue_key(target, changed[i]);
	return true;
}

/*
 * Append keys held for the pipeline (PendingKeysWriter) to its backlog, as
 * the trigger `arg` (a TriggerData) would append its own: the backlog is
 * checked against the trigger's table, and must hold keys of their type.
 */
static void
write_held_keys(void *arg, Datum *keys, int count, Oid key_type)
{
	TriggerData *trigdata = (TriggerData *) arg;
	CaptureTarget target;
	Oid			backlog_key_type;

	open_target(&target, trigdata, count);
	backlog_key_type = TupleDescAttr(RelationGetDescr(target.backlog), 0)->atttypid;
	if (backlog_key_type != key_type)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("aidb pipeline %d cannot capture changes of table \"%s\": its backlog "
						"holds keys of type %s, not %s", target.pipeline_id,
						RelationGetRelationName(trigdata->tg_relation),
						format_type_be(backlog_key_type), format_type_be(key_type))));
	if (count >= KEYS_PER_SET)
		enqueue_key_set(&target, keys, count);
	else
	{
		for (int i = 0; i < count; i++)
			enqueue_key(&target, keys[i]);
	}
	close_target(&target);
}

/* Write the keys held for the trigger's pipeline; asks for its worker if any. */
static void
write_pending_keys(TriggerData *trigdata)
{
	int32		pipeline_id = pg_strtoint32(trigdata->tg_trigger->tgargs[0]);

	if (aidb_pending_keys_write(pipeline_id, write_held_keys, trigdata) > 0)
		aidb_request_wakeup(pipeline_id, false);
}

/*
 * What the row trigger needs of its table, looked up on its first row and
 * kept while the same trigger fires on the same table with the key column
 * unchanged (same name, same type): not once per row of a bulk insert.
 */
static struct
{
	Oid			trigger_oid;
	Oid			relation_oid;
	AttrNumber	key_attnum;
	Oid			column_type;	/* the key column's type, domain or not */
	Oid			key_type;		/* its base type: what the backlog holds */
} row_trigger_facts;

/* The key column of the row trigger's table: its number and base type. */
static void
row_trigger_key(TriggerData *trigdata, AttrNumber *attnum, Oid *key_type)
{
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	const char *column = trigdata->tg_trigger->tgargs[1];
	AttrNumber	cached = row_trigger_facts.key_attnum;

	if (row_trigger_facts.trigger_oid != trigdata->tg_trigger->tgoid ||
		row_trigger_facts.relation_oid != RelationGetRelid(trigdata->tg_relation) ||
		cached < 1 || cached > desc->natts ||
		TupleDescAttr(desc, cached - 1)->attisdropped ||
		TupleDescAttr(desc, cached - 1)->atttypid != row_trigger_facts.column_type ||
		strcmp(NameStr(TupleDescAttr(desc, cached - 1)->attname), column) != 0)
	{
		AttrNumber	found = source_attnum(trigdata->tg_relation, column);

		row_trigger_facts.trigger_oid = trigdata->tg_trigger->tgoid;
		row_trigger_facts.relation_oid = RelationGetRelid(trigdata->tg_relation);
		row_trigger_facts.key_attnum = found;
		row_trigger_facts.column_type = TupleDescAttr(desc, found - 1)->atttypid;
		row_trigger_facts.key_type = getBaseType(row_trigger_facts.column_type);
	}
	*attnum = row_trigger_facts.key_attnum;
	*key_type = row_trigger_facts.key_type;
}

/*
 * INSERT, for each row: hold the new row's key until the statement trigger
 * writes it (or write the pipeline's held keys now, if they reached the
 * limit). A NULL key (a unique column may hold NULLs) has nothing to embed.
 */
static void
hold_row_key(TriggerData *trigdata)
{
	int32		pipeline_id = pg_strtoint32(trigdata->tg_trigger->tgargs[0]);
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	AttrNumber	attnum;
	Oid			key_type;
	bool		isnull;
	Datum		key;
	Form_pg_attribute attr;

	row_trigger_key(trigdata, &attnum, &key_type);
	key = slot_getattr(trigdata->tg_trigslot, attnum, &isnull);
	if (isnull)
		return;
	attr = TupleDescAttr(desc, attnum - 1);
	if (aidb_pending_keys_add(pipeline_id, key_type, attr->attbyval, attr->attlen, key))
		write_pending_keys(trigdata);
}

/*
 * Run the pipeline's general capture function aidb._capture_<id>() on this
 * statement, as if it were the trigger function: it sees the same trigger
 * data, transition tables included, and runs as the pipeline's owner
 * (SECURITY DEFINER) with its fixed search_path.
 */
static void
call_capture_function(FunctionCallInfo fcinfo, int32 pipeline_id)
{
	char		function_name[NAMEDATALEN];
	Oid			function_oid;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(capture_fcinfo, 0);

	snprintf(function_name, sizeof(function_name), "_capture_%d", pipeline_id);
	function_oid = LookupFuncName(list_make2(makeString("aidb"), makeString(function_name)),
								  0, NULL, false);
	fmgr_info(function_oid, &flinfo);
	InitFunctionCallInfoData(*capture_fcinfo, &flinfo, 0, InvalidOid, fcinfo->context, NULL);
	FunctionCallInvoke(capture_fcinfo);
}

/*
 * aidb._capture_keys(): trigger function (see the file header). Holds an
 * inserted row's key, or appends the statement's new or changed keys to the
 * backlog and asks for the pipeline's worker to wake when we commit.
 */
Datum
aidb_capture_keys(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	CaptureTarget target;
	bool		handled = true;

	check_trigger_call(fcinfo);
	if (TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
	{
		hold_row_key(trigdata);
		return PointerGetDatum(NULL);
	}
	/*
	 * Keys held by this statement's row triggers. An UPDATE that moves rows
	 * to another partition inserts them there, and fires its row triggers.
	 */
	write_pending_keys(trigdata);
	if (trigdata->tg_newtable == NULL)	/* INSERT: its rows' triggers did the rest */
		return PointerGetDatum(NULL);
	desc = RelationGetDescr(trigdata->tg_relation);
	open_target(&target, trigdata, tuplestore_tuple_count(trigdata->tg_newtable));
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		enqueue_new_rows(&target, trigdata->tg_newtable, desc);
	else
		handled = enqueue_changed_rows(&target, trigdata->tg_oldtable,
									   trigdata->tg_newtable, desc);
	close_target(&target);

	if (!handled)
		call_capture_function(fcinfo, target.pipeline_id);	/* it wakes the worker */
	else if (target.enqueued > 0)
		aidb_request_wakeup(target.pipeline_id, false);
	return PointerGetDatum(NULL);
}
