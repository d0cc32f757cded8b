/*
 * pending_keys.c — the keys that the row-level capture trigger collected,
 * held in memory until the statement-level trigger of the same statement
 * writes them to the backlog (capture.c).
 *
 * Why: a statement trigger sees a statement's rows only through a transition
 * table, which PostgreSQL fills with every whole inserted row (spilling to a
 * temporary file past work_mem) before the trigger runs. A bulk
 * INSERT ... SELECT of 100k rows kept 0.62-0.67 of its speed with statement
 * triggers that asked for one and did nothing else; with a row trigger in C
 * that did nothing, 0.93 (docs/benchmarks.md). The row trigger is handed the
 * row itself and keeps only its key.
 *
 * Keys are held per pipeline, in TopTransactionContext, each with the
 * subtransaction that queued it:
 * - an aborted subtransaction's keys go with it (its rows are gone);
 * - every key is written by the end of its statement: PostgreSQL fires a
 *   statement's AFTER row triggers before its AFTER statement triggers. A
 *   statement nested in between (run by some other trigger) writes only the
 *   keys queued in its own subtransaction or below: those of an outer
 *   statement in an enclosing subtransaction wait for its trigger;
 * - at the end of the transaction whatever is left is forgotten: left only
 *   if the table's owner disabled the statement trigger and not the row
 *   trigger, which turns capture off, as disabling a statement trigger did.
 */
#include "aidb.h"

#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"

/*
 * A pipeline's keys are written once this many are held, or this much
 * memory, even mid-statement: a statement of millions of rows never holds
 * more than this.
 */
#define PENDING_KEYS_LIMIT 10000
#define PENDING_BYTES_LIMIT (8 * 1024 * 1024)

/* One pipeline's held keys. */
typedef struct PendingKeys
{
	int32		pipeline_id;
	Oid			key_type;		/* every key's type: the first key's */
	int			count;
	int			capacity;
	Datum	   *keys;
	SubTransactionId *subxacts; /* the subtransaction that queued each key */
	MemoryContext memory;		/* copies of by-reference keys */
	struct PendingKeys *next;
} PendingKeys;

/* This transaction's held keys, by pipeline; NULL outside one. */
static PendingKeys *pending = NULL;
static bool callbacks_registered = false;

/* The transaction ended: its memory, and with it every held key, is gone. */
static void
pending_keys_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pending = NULL;
			break;
		default:
			break;
	}
}

/* The held keys of a pipeline, or NULL. */
static PendingKeys *
find_pending_keys(int32 pipeline_id)
{
	for (PendingKeys *held = pending; held != NULL; held = held->next)
	{
		if (held->pipeline_id == pipeline_id)
			return held;
	}
	return NULL;
}

/*
 * Forget the held keys queued in subtransaction `subxact` or later (its
 * children): those written, or those of a subtransaction that aborted.
 */
static void
keep_keys_before(PendingKeys *held, SubTransactionId subxact)
{
	int			kept = 0;

	for (int i = 0; i < held->count; i++)
	{
		if (held->subxacts[i] < subxact)
		{
			held->keys[kept] = held->keys[i];
			held->subxacts[kept] = held->subxacts[i];
			kept++;
		}
	}
	held->count = kept;
	if (kept == 0)
		MemoryContextReset(held->memory);
}

/* A subtransaction aborted: drop the keys it (or a child of it) queued. */
static void
pending_keys_subxact_callback(SubXactEvent event, SubTransactionId aborted,
							  SubTransactionId parent, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	/*
	 * Subtransaction ids grow: those started while `aborted` was open (its
	 * children) are larger, and no other can have queued keys meanwhile.
	 */
	for (PendingKeys *held = pending; held != NULL; held = held->next)
		keep_keys_before(held, aborted);
}

/* The held keys of a pipeline, created empty on first use. */
static PendingKeys *
pending_keys_of(int32 pipeline_id, Oid key_type)
{
	PendingKeys *held = find_pending_keys(pipeline_id);

	if (held == NULL)
	{
		if (!callbacks_registered)
		{
			RegisterXactCallback(pending_keys_xact_callback, NULL);
			RegisterSubXactCallback(pending_keys_subxact_callback, NULL);
			callbacks_registered = true;
		}
		held = MemoryContextAllocZero(TopTransactionContext, sizeof(PendingKeys));
		held->pipeline_id = pipeline_id;
		held->key_type = key_type;
		held->capacity = 64;
		held->keys = MemoryContextAlloc(TopTransactionContext, held->capacity * sizeof(Datum));
		held->subxacts = MemoryContextAlloc(TopTransactionContext,
											held->capacity * sizeof(SubTransactionId));
		held->memory = AllocSetContextCreate(TopTransactionContext, "aidb pending keys",
											 ALLOCSET_DEFAULT_SIZES);
		held->next = pending;
		pending = held;
	}
	/* One pipeline's keys share a type; a trigger that says otherwise is not aidb's. */
	if (held->key_type != key_type)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("aidb pipeline %d captured keys of types %s and %s in one transaction",
						pipeline_id, format_type_be(held->key_type), format_type_be(key_type)),
				 errhint("Only aidb attaches its capture triggers.")));
	return held;
}

/*
 * Hold a copy of `key` (of type `key_type`) for pipeline `pipeline_id`.
 * Returns true when the pipeline's held keys reached the limit: the caller
 * writes them now (aidb_pending_keys_write).
 */
bool
aidb_pending_keys_add(int32 pipeline_id, Oid key_type, bool key_byval, int16 key_len,
					  Datum key)
{
	PendingKeys *held = pending_keys_of(pipeline_id, key_type);

	if (held->count == held->capacity)
	{
		held->capacity *= 2;
		held->keys = repalloc(held->keys, held->capacity * sizeof(Datum));
		held->subxacts = repalloc(held->subxacts, held->capacity * sizeof(SubTransactionId));
	}
	if (key_byval)
		held->keys[held->count] = key;
	else
	{
		/* The key points into the trigger's row, gone after this call. */
		MemoryContext old = MemoryContextSwitchTo(held->memory);

		held->keys[held->count] = datumCopy(key, false, key_len);
		MemoryContextSwitchTo(old);
	}
	held->subxacts[held->count] = GetCurrentSubTransactionId();
	held->count++;
	return held->count >= PENDING_KEYS_LIMIT ||
		MemoryContextMemAllocated(held->memory, false) >= PENDING_BYTES_LIMIT;
}

/*
 * Write pipeline `pipeline_id`'s keys held by this subtransaction (and its
 * committed children) with `write`, which appends them to the backlog, then
 * forget them. Keys an enclosing subtransaction holds stay held: a statement
 * nested in a trigger of an outer statement may run in a subtransaction that
 * aborts, and would take the outer statement's keys with it. Keys stay held
 * if `write` fails: the error aborts the (sub)transaction, whose callback
 * drops what it queued. Returns how many keys were written.
 */
int
aidb_pending_keys_write(int32 pipeline_id, PendingKeysWriter write, void *arg)
{
	SubTransactionId current = GetCurrentSubTransactionId();
	PendingKeys *held = find_pending_keys(pipeline_id);
	Datum	   *chosen;
	int			written = 0;

	if (held == NULL || held->count == 0)
		return 0;
	chosen = palloc(held->count * sizeof(Datum));
	for (int i = 0; i < held->count; i++)
	{
		if (held->subxacts[i] >= current)
			chosen[written++] = held->keys[i];
	}
	if (written > 0)
		write(arg, chosen, written, held->key_type);
	pfree(chosen);
	keep_keys_before(held, current);
	return written;
}
