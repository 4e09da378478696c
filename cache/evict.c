/* evict — see evict.h. */
#include "cache/evict.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "cache/catalog.h"
#include "cache/index.h"
#include "cache/stats.h"
#include "cache/store.h"

#define EVICT_BATCH 256
/* Blobs removed per piece of pool work: the loop then tells the catalog of
 * that many at most in one turn, and queues the next slice, so that an
 * eviction of 100k blobs never holds the loop for long. */
#define EVICT_SLICE 2048

struct evictor {
    struct evict_env env;
    uint64_t budget;
    uv_work_t work;
    int running;
    int closing;
    uint64_t to_free;               /* the job's target */
    uint64_t freed_bytes, freed_objects;
    int exhausted;                  /* nothing unpinned left, or the index failed */
    uint64_t told_bytes, told_objects;  /* of the freed ones, counted in stats */
    unsigned slices;                /* pieces of pool work so far */
    struct removed *freed;          /* the job's removed blobs, for the catalog */
    size_t n_freed, cap_freed;
};

struct removed {
    char sha256[65];
    uint64_t seq;                   /* the store's number of the removal */
};

/* Remembers a removed blob (thread pool; the loop reads it after). */
static void remember(struct evictor *ev, const char *sha256, uint64_t seq)
{
    if (ev->n_freed == ev->cap_freed) {
        size_t cap = ev->cap_freed ? 2 * ev->cap_freed : 256;
        struct removed *p = realloc(ev->freed, cap * sizeof *p);
        if (!p)
            return;                 /* the catalog finds the blob missing at its next use */
        ev->freed = p;
        ev->cap_freed = cap;
    }
    memcpy(ev->freed[ev->n_freed].sha256, sha256, 65);
    ev->freed[ev->n_freed++].seq = seq;
}

struct drop_ctx {
    struct index *index;
    const char *sha256;
};

static int drop_rows(void *ctx)
{
    struct drop_ctx *d = ctx;
    return index_drop_object(d->index, d->sha256);
}

int evict_open(struct evictor **out, const struct evict_env *env, char *err, size_t errlen)
{
    uint64_t bytes;
    unsigned percent;
    struct statvfs fs;
    if (cfg_parse_budget(env->cfg->cache_size, &bytes, &percent, err, errlen) != 0)
        return -1;
    if (percent) {
        if (statvfs(env->cfg->cache_dir, &fs) != 0) {
            snprintf(err, errlen, "cache_size: cannot read the size of %s's file system",
                     env->cfg->cache_dir);
            return -1;
        }
        bytes = (uint64_t)fs.f_blocks * fs.f_frsize / 100 * percent;
    }
    struct evictor *ev = calloc(1, sizeof *ev);
    if (!ev) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ev->env = *env;
    ev->budget = bytes;
    ev->work.data = ev;
    *out = ev;
    return 0;
}

uint64_t evict_budget(const struct evictor *ev)
{
    return ev->budget;
}

/* Thread pool: the oldest unpinned blobs go until to_free bytes are gone. */
static void evict_work(uv_work_t *w)
{
    struct evictor *ev = w->data;
    struct index_lru_entry batch[EVICT_BATCH];
    size_t n = 0;
    size_t slice = 0;
    index_flush_touches(ev->env.index);     /* recent reads count */
    while (ev->freed_bytes < ev->to_free && slice < EVICT_SLICE) {
        if (index_lru(ev->env.index, EVICT_BATCH, batch, &n) != 0 || n == 0) {
            ev->exhausted = 1;              /* nothing unpinned left (or the index failed) */
            return;
        }
        for (size_t i = 0; i < n && ev->freed_bytes < ev->to_free; i++, slice++) {
            /* file and rows together, never between a commit's two halves */
            struct drop_ctx d = {ev->env.index, batch[i].sha256};
            uint64_t seq = 0;
            int rc = store_blob_remove_recorded(ev->env.store, batch[i].sha256, drop_rows, &d,
                                                &seq);
            if (rc == -EIO) {
                ev->exhausted = 1;          /* the index failed (logged) */
                return;
            }
            if (rc == 0 || rc == -ENOENT) {     /* -ENOENT: the row was all there was */
                ev->freed_bytes += batch[i].size;
                ev->freed_objects++;
                remember(ev, batch[i].sha256, seq);
            }
        }
    }
}

static void evict_after(uv_work_t *w, int status)
{
    struct evictor *ev = w->data;
    struct stats *st = ev->env.stats;
    ev->running = 0;
    ev->slices++;
    for (size_t i = 0; ev->env.catalog && i < ev->n_freed; i++)
        catalog_blob_removed_at(ev->env.catalog, ev->freed[i].sha256, ev->freed[i].seq);
    ev->n_freed = 0;
    st->evicted_objects += ev->freed_objects - ev->told_objects;
    st->evicted_bytes += ev->freed_bytes - ev->told_bytes;
    ev->told_objects = ev->freed_objects;
    ev->told_bytes = ev->freed_bytes;
    if (!ev->closing && status == 0 && !ev->exhausted && ev->freed_bytes < ev->to_free) {
        ev->running = 1;            /* the next slice */
        if (uv_queue_work(ev->env.loop, &ev->work, evict_work, evict_after) == 0)
            return;
        ev->running = 0;
    }
    log_msg(ev->env.log, ev->freed_bytes < ev->to_free ? LOG_WARN : LOG_INFO, "evict",
            "evicted %llu blobs, %llu bytes (wanted %llu) in %u slices%s",
            (unsigned long long)ev->freed_objects, (unsigned long long)ev->freed_bytes,
            (unsigned long long)ev->to_free, ev->slices,
            ev->freed_bytes < ev->to_free ? ": the rest is pinned or could not be removed" : "");
    if (ev->closing) {
        free(ev->freed);
        free(ev);
    }
}

static void evict_start(struct evictor *ev, uint64_t to_free)
{
    ev->to_free = to_free;
    ev->freed_bytes = ev->freed_objects = 0;
    ev->told_bytes = ev->told_objects = 0;
    ev->slices = 0;
    ev->exhausted = 0;
    ev->running = 1;
    if (uv_queue_work(ev->env.loop, &ev->work, evict_work, evict_after) != 0)
        ev->running = 0;
}

void evict_check(struct evictor *ev)
{
    if (!ev || ev->running || ev->closing)
        return;
    uint64_t stored = ev->env.stats->stored_bytes;
    if (stored <= ev->budget)
        return;
    evict_start(ev, stored - ev->budget / 10 * 9);
}

void evict_pressure(struct evictor *ev, uint64_t need)
{
    if (!ev || ev->running || ev->closing || ev->env.stats->stored_bytes == 0)
        return;
    uint64_t tenth = ev->budget / 10;
    log_msg(ev->env.log, LOG_WARN, "evict", "the disk of %s is full: evicting at least %llu "
            "bytes (the budget, cache_size, is larger than the free space)",
            ev->env.cfg->cache_dir, (unsigned long long)(need > tenth ? need : tenth));
    evict_start(ev, need > tenth ? need : tenth);
}

void evict_close(struct evictor **evp)
{
    struct evictor *ev = *evp;
    if (!ev)
        return;
    *evp = NULL;
    ev->closing = 1;
    if (!ev->running) {
        free(ev->freed);
        free(ev);
    }
}
