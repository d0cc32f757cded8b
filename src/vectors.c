/*
 * vectors.c — aidb._float4_vector(bytea): a pgvector value from the engine's
 * little-endian float4 bytes.
 *
 * Why: a batch writes one vector per part, 1,536 floats and more each. As
 * text ('[0.1,...]') the engine spent a third of a batch formatting floats
 * and the server parsed them back; as bytes (what OpenAI sends in base64
 * anyway) both costs go. The bytes go through the vector type's binary
 * input function, pgvector's documented wire format (int16 dimensions,
 * int16 zero, float4s in network order), so nothing here depends on how
 * pgvector lays a vector out in memory.
 */
#include "aidb.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/lsyscache.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"				/* VARDATA_ANY, VARSIZE_ANY_EXHDR moved here in 16 */
#endif

PG_FUNCTION_INFO_V1(aidb_float4_vector);

/* The return type's binary input function, looked up once per call site. */
typedef struct VectorReceiver
{
	FmgrInfo	receive;
	Oid			ioparam;
} VectorReceiver;

/* The binary input of the function's declared return type (pgvector's vector). */
static VectorReceiver *
vector_receiver(FunctionCallInfo fcinfo)
{
	VectorReceiver *receiver = (VectorReceiver *) fcinfo->flinfo->fn_extra;

	if (receiver == NULL)
	{
		Oid			vector_type = get_func_rettype(fcinfo->flinfo->fn_oid);
		Oid			receive_oid;

		receiver = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(VectorReceiver));
		getTypeBinaryInputInfo(vector_type, &receive_oid, &receiver->ioparam);
		fmgr_info_cxt(receive_oid, &receiver->receive, fcinfo->flinfo->fn_mcxt);
		fcinfo->flinfo->fn_extra = receiver;
	}
	return receiver;
}

/*
 * aidb._float4_vector(bytes): bytes holds n little-endian IEEE float4s;
 * returns the n-dimensional vector. Byte order is explicit, so the engine
 * and the server need not share a CPU architecture (external workers).
 */
Datum
aidb_float4_vector(PG_FUNCTION_ARGS)
{
	bytea	   *bytes = PG_GETARG_BYTEA_PP(0);
	const unsigned char *data = (const unsigned char *) VARDATA_ANY(bytes);
	int			length = VARSIZE_ANY_EXHDR(bytes);
	int			dimensions = length / 4;
	VectorReceiver *receiver = vector_receiver(fcinfo);
	StringInfoData wire;
	Datum		vector;

	if (length % 4 != 0 || dimensions < 1 || dimensions > PG_INT16_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("a vector needs 1 to %d float4 values, got %d bytes", PG_INT16_MAX, length)));

	initStringInfo(&wire);
	enlargeStringInfo(&wire, 4 + length);
	pq_sendint16(&wire, (uint16) dimensions);
	pq_sendint16(&wire, 0);
	for (int i = 0; i < length; i += 4)
		pq_sendint32(&wire, (uint32) data[i] | (uint32) data[i + 1] << 8 |
					 (uint32) data[i + 2] << 16 | (uint32) data[i + 3] << 24);

	vector = ReceiveFunctionCall(&receiver->receive, &wire, receiver->ioparam, -1);
	pfree(wire.data);
	PG_RETURN_DATUM(vector);
}
