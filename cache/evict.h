/*
 * evict — keeps the store within cache_size (DESIGN.md §6).
 *
 * The budget is cache_size in bytes, or that share of the size of the file
 * system that holds cache_dir. When the stored bytes pass it, the least
 * recently used unpinned blobs are deleted (file, then index rows) until
 * the store is at 90% of it. A blob being read stays readable: its reader
 * holds the inode. Pinned blobs (prefetched deployments) are never evicted.
 * One eviction runs at a time, on the libuv thread pool.
 *
 * Thread: loop thread (the work itself on the pool).
 */
#ifndef EDGECACHE_EVICT_H
#define EDGECACHE_EVICT_H

#include <stdint.h>
#include <uv.h>
#include "config/cfg.h"
#include "config/log.h"

struct store;
struct index;
struct stats;
struct catalog;
struct evictor;

struct evict_env {
    uv_loop_t *loop;
    const struct cfg *cfg;
    const struct logger *log;
    struct store *store;
    struct index *index;
    struct catalog *catalog;    /* told of each blob removed; may be NULL */
    struct stats *stats;
};

int evict_open(struct evictor **out, const struct evict_env *env, char *err, size_t errlen);
/* Starts an eviction when the store is over budget and none runs. */
void evict_check(struct evictor *ev);
/* The disk is full (a write failed with ENOSPC): evicts at least need
 * bytes (and a tenth of the budget), within budget or not. */
void evict_pressure(struct evictor *ev, uint64_t need);
/* The budget in bytes (for /status). */
uint64_t evict_budget(const struct evictor *ev);
/* Frees once a running eviction has finished; sets *ev NULL. */
void evict_close(struct evictor **ev);

#endif
