/*
 * aidb.h — declarations shared by the parts of aidb's C library.
 *
 * The C side is small on purpose: it finds the Python engine, (with
 * shared_preload_libraries) runs the launcher and the pipeline workers, and
 * appends captured keys to backlogs, the one hot path of writers.
 * All other pipeline logic lives in the Python engine and the extension's
 * SQL; a worker only calls aidb._run_batch() in a loop.
 *
 *   aidb.c       module entry point, GUCs, SQL-callable helpers
 *   shmem.c      the shared table of Background pipelines and wake-ups
 *   launcher.c   the static launcher: finds pipelines, keeps one worker each
 *   discovery.c  short-lived worker listing one database's Background pipelines
 *   worker.c     the per-pipeline worker loop
 *   dropdb.c     stops a database's workers before DROP DATABASE
 *   capture.c    the capture trigger's fast path: keys straight into a backlog
 *   pending_keys.c  keys held from a statement's row trigger to its statement trigger
 *   dependency.c ties per-pipeline objects to the extension (DROP EXTENSION)
 *
 * src/README.md draws the launcher's and a worker's states and transitions.
 */
#ifndef AIDB_H
#define AIDB_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/* ---- GUCs (aidb.c) ---- */
extern bool aidb_enable_background_workers;
extern int	aidb_max_workers;
extern int	aidb_launcher_naptime;	/* seconds between full rescans */
extern int	aidb_worker_memory_limit;	/* MB of resident memory */

/* ---- shared state (shmem.c) ---- */

/*
 * What a Background pipeline's worker is doing. Crosses to SQL as the code
 * that aidb_worker_state_code() gives (aidb._worker_entry); the words users
 * read are chosen in SQL alone (aidb._worker_state, 35_workers.sql).
 */
typedef enum AidbWorkerState
{
	AIDB_WORKER_NONE = 0,		/* no worker yet: code NULL */
	AIDB_WORKER_WAITING,		/* 'waiting': no free background worker slot */
	AIDB_WORKER_STARTING,		/* 'starting': registered, not yet serving */
	AIDB_WORKER_RUNNING,		/* 'running': processing or sleeping on its latch */
	AIDB_WORKER_BACKOFF,		/* 'backoff': last batch failed; waiting to retry */
	AIDB_WORKER_CANNOT_LOGIN	/* 'cannot_login': the owner role has no LOGIN */
} AidbWorkerState;

/*
 * One Background pipeline of one database. Publishers and discoveries say
 * whether it is wanted; the launcher starts and stops its worker. `pid` is
 * the worker that owns the entry: a worker claims it (pid 0 -> its own) before
 * it serves, and only the owner changes pid, worker_latch, the RUNNING and
 * BACKOFF states and the progress fields, releasing the entry as it exits.
 * So an entry has at most one worker, and an old worker leaving never
 * clears a newer one's latch. Only the launcher frees an entry (in_use).
 */
typedef struct AidbPipelineEntry
{
	bool		in_use;
	bool		wanted;			/* false: the launcher must stop its worker */
	Oid			dboid;
	int32		pipeline_id;
	Oid			owner;
	char		name[NAMEDATALEN];
	char		dbname[NAMEDATALEN];
	uint64		scan_generation;	/* discovery scan that last saw it */
	AidbWorkerState state;
	pid_t		pid;			/* the worker that owns the entry, or 0 */
	Latch	   *worker_latch;	/* its latch: set by commits that add to the backlog */
	bool		urgent_wakeup;	/* errors were cleared: end a back-off now */
	uint64		published_seq;	/* publish_seq of the last change written here */
	TimestampTz last_batch;
	double		keys_per_second;
} AidbPipelineEntry;

#define AIDB_MAX_ENTRIES 1024
#define AIDB_MAX_RESCANS 32

typedef struct AidbShared
{
	LWLock	   *lock;			/* held for loads and stores only */
	Latch	   *launcher_latch; /* NULL while no launcher runs */
	uint64		scan_generation;
	uint64		publish_seq;	/* counts commit-time publishes of registry changes */
	bool		rescan_all;
	int			n_rescans;		/* databases whose pipelines changed */
	Oid			rescan_dboids[AIDB_MAX_RESCANS];
	Oid			dropping_dboid; /* DROP DATABASE in progress: start nothing there */
	AidbPipelineEntry entries[AIDB_MAX_ENTRIES];
} AidbShared;

extern AidbShared *aidb_shared;

extern void aidb_shmem_init(void);
extern AidbPipelineEntry *aidb_find_entry(Oid dboid, int32 pipeline_id);
extern AidbPipelineEntry *aidb_find_or_add_entry(Oid dboid, int32 pipeline_id);
extern void aidb_set_entry(AidbPipelineEntry *entry, Oid owner, bool can_login,
						   const char *name, const char *dbname);
extern void aidb_request_rescan(Oid dboid, bool wake_launcher);
extern void aidb_wake_launcher(void);
extern const char *aidb_worker_state_code(AidbWorkerState state);
extern Datum aidb_worker_record(FunctionCallInfo fcinfo,
								const char *(*name) (AidbWorkerState));
extern void aidb_request_wakeup(int32 pipeline_id, bool urgent);

/* ---- background workers ---- */
extern void aidb_register_launcher(void);
extern bool aidb_start_discovery_worker(Oid dboid, uint64 generation,
										BackgroundWorkerHandle **handle);
extern bool aidb_start_pipeline_worker(AidbPipelineEntry *entry, BackgroundWorkerHandle **handle);
extern void aidb_install_dropdb_hook(void);

/* ---- keys held between a statement's row and statement triggers (pending_keys.c) ---- */

/* Appends `count` keys of type `key_type` to a pipeline's backlog. */
typedef void (*PendingKeysWriter) (void *arg, Datum *keys, int count, Oid key_type);
extern bool aidb_pending_keys_add(int32 pipeline_id, Oid key_type, bool key_byval,
								  int16 key_len, Datum key);
extern int	aidb_pending_keys_write(int32 pipeline_id, PendingKeysWriter write, void *arg);

/* ---- older releases' SQL (compat.c) ---- */
extern const char *aidb_outdated_sql_version(void);

PGDLLEXPORT void aidb_launcher_main(Datum arg);
PGDLLEXPORT void aidb_discovery_main(Datum arg);
PGDLLEXPORT void aidb_worker_main(Datum arg);

#endif							/* AIDB_H */
