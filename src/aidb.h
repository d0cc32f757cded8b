/*
 * aidb.h — declarations shared by the parts of aidb's C library.
 *
 * The C side is small on purpose: it finds the Python engine, and (with
 * shared_preload_libraries) runs the launcher and pipeline workers. All
 * pipeline logic lives in the Python engine and the extension's SQL.
 */
#ifndef AIDB_H
#define AIDB_H

#include "postgres.h"

/* True when aidb.so was loaded through shared_preload_libraries. */
extern bool aidb_loaded_at_startup;

#endif							/* AIDB_H */
