/*
 * prefetch — deployments whose files are fetched ahead of time and pinned.
 *
 * A deployment (an ADU workflow, a firmware twin section, or a plain list of
 * URLs given to /api/v1/prefetch) is a list of files, each a cache key and
 * its origin URL, with the SHA-256 and size a manifest declared. Its files
 * wait in one FIFO queue; at most prefetch_concurrency of them are being
 * fetched at a time. A file is fetched the way a device's request would be:
 * a hit or a hit by hash ends it at once; else it joins the key's running
 * fill or starts one, and waits on it as a fill_waiter (no client needed).
 * A file that ends stored is pinned (objects.pinned += 1) when the
 * deployment pins; removing the deployment unpins what it pinned.
 *
 * Deployments are kept in the index (deployments table, a JSON body) so a
 * restart keeps them, their pins, and queues again what was not fetched.
 *
 * Ownership: the prefetch owns its deployments and files; a file being
 * fetched holds one reference to its fill. Thread: loop thread (index
 * writes go to the thread pool).
 */
#ifndef EDGECACHE_PREFETCH_H
#define EDGECACHE_PREFETCH_H

struct peers;

#include <stdint.h>
#include <uv.h>
#include "config/cfg.h"
#include "config/log.h"

struct store;
struct index;
struct fills;
struct stats;
struct catalog;
struct prefetch;

struct prefetch_env {
    uv_loop_t *loop;
    const struct cfg *cfg;
    const struct logger *log;
    struct store *store;
    struct index *index;
    struct catalog *catalog;
    struct fills *fills;
    struct stats *stats;
    struct peers *peers;        /* this layer's nodes (NULL: none): a file is fetched
                                   and pinned by its owner and the next peer_replicas - 1 */
};

enum prefetch_state { PREFETCH_QUEUED, PREFETCH_FETCHING, PREFETCH_DONE, PREFETCH_FAILED };

/* One file to fetch, as a caller hands it over (copied). */
struct prefetch_item {
    const char *key;
    const char *url;
    const char *name;
    const char *sha256;         /* expected, 64 hex, or NULL */
    int64_t size;               /* expected, or -1 */
    /* Called once when the file ends (stored_sha NULL when it failed or was
     * dropped with its deployment). */
    void (*done)(void *arg, const char *key, const char *stored_sha);
    void *done_arg;
};

/* A file's progress, for /status. Strings owned by the prefetch. */
struct prefetch_file_info {
    const char *name;
    const char *url;
    enum prefetch_state state;
    uint64_t bytes;
    uint64_t total;             /* 0 when unknown */
    const char *error;          /* FAILED: why */
    const char *sha256;         /* DONE: the stored blob */
};

int prefetch_open(struct prefetch **out, const struct prefetch_env *env);
/* Reloads deployments kept in the index (start-up, before the loop runs
 * its first request) and queues their unfinished files. */
int prefetch_restore(struct prefetch *p);
void prefetch_close(struct prefetch **p);

/* Adds (or replaces) deployment id and queues its files. Returns 0, or -1. */
int prefetch_add(struct prefetch *p, const char *id, const struct prefetch_item *items,
                 size_t n, int pin);
/* Unpins and forgets deployment id: 0, or -1 when there is none. */
int prefetch_remove(struct prefetch *p, const char *id);

/* For /status: every deployment with its files. */
typedef void (*prefetch_deployment_cb)(void *ctx, const char *id, int64_t created, int pinned,
                                       const struct prefetch_file_info *files, size_t n);
void prefetch_foreach(struct prefetch *p, prefetch_deployment_cb cb, void *ctx);

const char *prefetch_state_name(enum prefetch_state s);

#endif
