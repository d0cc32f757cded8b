/*
 * keys.c — aidb._key_type_facts(regtype): how aidb may store and compare the
 * keys of a source column of a given type.
 *
 * Why in C: the operator that compares two keys is the one PostgreSQL's own
 * type cache picks (the default btree operator class, with domains, enums,
 * arrays and records resolved), which SQL cannot ask for directly. aidb's
 * bookkeeping tables hold keys in the BASE type (domain checks are the
 * source's business, and a domain's CHECK could run a user's function with
 * someone else's rights), and every comparison names that operator with its
 * schema, so no search_path can substitute another one.
 *
 * A key type is trusted when its equality and ordering operators and their
 * functions belong to a superuser: aidb compares keys with the rights of
 * whoever runs a batch (a superuser's run_pipeline too), so a comparison must
 * never be a function some other user wrote.
 */
#include "aidb.h"

#include "access/htup_details.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(aidb_key_type_facts);

/* Whether operator `opr` and the function behind it belong to superusers. */
static bool
operator_is_trusted(Oid opr)
{
	HeapTuple	tuple;
	Form_pg_operator form;
	bool		trusted;

	if (!OidIsValid(opr))
		return false;
	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opr));
	if (!HeapTupleIsValid(tuple))
		return false;
	form = (Form_pg_operator) GETSTRUCT(tuple);
	trusted = superuser_arg(form->oprowner);
	if (trusted)
	{
		HeapTuple	proc = SearchSysCache1(PROCOID, ObjectIdGetDatum(form->oprcode));

		trusted = HeapTupleIsValid(proc) &&
			superuser_arg(((Form_pg_proc) GETSTRUCT(proc))->proowner);
		if (HeapTupleIsValid(proc))
			ReleaseSysCache(proc);
	}
	ReleaseSysCache(tuple);
	return trusted;
}

/*
 * (base_type regtype, equality regoperator, trusted boolean) of a key type:
 * the equality is NULL when the type has no default btree operator class.
 */
Datum
aidb_key_type_facts(PG_FUNCTION_ARGS)
{
	Oid			type = PG_GETARG_OID(0);
	Oid			base = getBaseType(type);
	TypeCacheEntry *cache = lookup_type_cache(base, TYPECACHE_EQ_OPR | TYPECACHE_LT_OPR |
											  TYPECACHE_BTREE_OPFAMILY);
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	bool		sortable = OidIsValid(cache->btree_opf) && OidIsValid(cache->lt_opr);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "aidb._key_type_facts must return a record");
	values[0] = ObjectIdGetDatum(base);
	values[1] = ObjectIdGetDatum(cache->eq_opr);
	nulls[1] = !sortable || !OidIsValid(cache->eq_opr);
	values[2] = BoolGetDatum(!nulls[1] && operator_is_trusted(cache->eq_opr) &&
							 operator_is_trusted(cache->lt_opr));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
