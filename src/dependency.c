/*
 * dependency.c — ties a pipeline's own objects (backlog and state tables,
 * capture functions, ...) to the extension, so that DROP EXTENSION aidb
 * refuses while they exist and DROP EXTENSION aidb CASCADE removes them.
 *
 * They are not members of the extension: pg_dump must dump them, as it
 * does any user data. A normal dependency on the extension is what core
 * records for a table that uses an extension's type: dropped with it only
 * on CASCADE. (pg_dump does not carry such a dependency over: a restore
 * must record it again.)
 */
#include "aidb.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "storage/lmgr.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(aidb_depend_on_extension);

/*
 * The schema of a relation or function, locked against a concurrent DROP
 * until the end of the transaction; an error for any other kind of object
 * and for one that does not exist.
 */
static Oid
locked_object_namespace(Oid classid, Oid objid)
{
	Oid			namespace = InvalidOid;

	if (classid == RelationRelationId)
	{
		LockRelationOid(objid, AccessShareLock);
		namespace = get_rel_namespace(objid);
	}
	else if (classid == ProcedureRelationId)
	{
		LockDatabaseObject(ProcedureRelationId, objid, 0, AccessShareLock);
		namespace = get_func_namespace(objid);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("aidb._depend_on_extension: only relations (pg_class) and functions "
						"(pg_proc) can depend on extension aidb")));
	if (!OidIsValid(namespace))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("aidb._depend_on_extension: object %u of %s does not exist",
						objid, get_rel_name(classid))));
	return namespace;
}

/* Whether `object` already has a dependency of kind `deptype` on `referenced`. */
static bool
has_dependency(const ObjectAddress *object, const ObjectAddress *referenced, char deptype)
{
	Relation	depend = table_open(DependRelationId, AccessShareLock);
	ScanKeyData keys[3];
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	ScanKeyInit(&keys[0], Anum_pg_depend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(object->classId));
	ScanKeyInit(&keys[1], Anum_pg_depend_objid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(object->objectId));
	ScanKeyInit(&keys[2], Anum_pg_depend_objsubid, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(object->objectSubId));
	scan = systable_beginscan(depend, DependDependerIndexId, true, NULL, 3, keys);
	while (!found && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_depend row = (Form_pg_depend) GETSTRUCT(tuple);

		found = row->refclassid == referenced->classId &&
			row->refobjid == referenced->objectId && row->deptype == deptype;
	}
	systable_endscan(scan);
	table_close(depend, AccessShareLock);
	return found;
}

/*
 * Take an object out of extension `extension_oid` if it is a member; for a
 * relation also its row type and that type's array type. PostgreSQL 18
 * (not 15) makes a table's row types members along with the table (ALTER
 * EXTENSION ADD TABLE); a row type left a member would make the table half
 * a member: pg_dump would skip the type, and ALTER EXTENSION UPDATE of a
 * later release would fail on it ("... is a member of an extension").
 */
static void
leave_extension(Oid classid, Oid objid, Oid extension_oid)
{
	if (getExtensionOfObject(classid, objid) == extension_oid)
		deleteDependencyRecordsForSpecific(classid, objid, DEPENDENCY_EXTENSION,
										   ExtensionRelationId, extension_oid);
	if (classid == RelationRelationId)
	{
		Oid			row_type = get_rel_type_id(objid);

		if (OidIsValid(row_type))
		{
			leave_extension(TypeRelationId, row_type, extension_oid);
			if (OidIsValid(get_array_type(row_type)))
				leave_extension(TypeRelationId, get_array_type(row_type), extension_oid);
		}
	}
}

/*
 * aidb._depend_on_extension(classid, objid): record that a relation or
 * function of schema aidb depends (normally) on extension aidb; calling it
 * again changes nothing. Only objects in schema aidb: anything else could
 * be attached to the extension and removed by a DROP EXTENSION ... CASCADE
 * that its owner never expected. Members of an extension are refused too,
 * except members of aidb that aidb's own script just made (see below).
 * Revoked from PUBLIC (20_pipelines.sql).
 */
Datum
aidb_depend_on_extension(PG_FUNCTION_ARGS)
{
	ObjectAddress object;
	ObjectAddress extension;
	Oid			aidb_schema = get_namespace_oid("aidb", false);

	ObjectAddressSet(object, PG_GETARG_OID(0), PG_GETARG_OID(1));
	ObjectAddressSet(extension, ExtensionRelationId, get_extension_oid("aidb", false));

	if (locked_object_namespace(object.classId, object.objectId) != aidb_schema)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("aidb._depend_on_extension: %s is not in schema aidb",
						getObjectDescription(&object, false))));
	/*
	 * An object created by aidb's own extension script (an upgrade rebuilding
	 * a pipeline's objects, sql/upgrade/) became a member of aidb on the way:
	 * it gets the normal dependency instead.
	 */
	if (creating_extension && CurrentExtensionObject == extension.objectId)
	{
		leave_extension(object.classId, object.objectId, extension.objectId);
		CommandCounterIncrement();
	}
	if (OidIsValid(getExtensionOfObject(object.classId, object.objectId)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("aidb._depend_on_extension: %s is a member of an extension",
						getObjectDescription(&object, false))));
	if (!has_dependency(&object, &extension, DEPENDENCY_NORMAL))
		recordDependencyOn(&object, &extension, DEPENDENCY_NORMAL);
	PG_RETURN_VOID();
}
