/*
 * catalog — what the store holds, in memory, for the loop thread.
 *
 * Data model:
 *  - a key (the cache key of a URL) holds its stored responses, one per
 *    variant: the secondary key that the response's Vary makes of the
 *    request that fetched it ("" without Vary), newest first; and the
 *    key's expectation (SHA-256, size, source), if one is registered;
 *  - a blob (by SHA-256) is known with its size, whether or not a response
 *    names it (an adopted or sideloaded blob serves hits by hash);
 *  - a stored response (struct cat_resp) is an immutable snapshot: status,
 *    header block, body blob, freshness. A change (a 304, a new body)
 *    replaces it with a new snapshot. Snapshots are reference counted: the
 *    catalog holds one reference while it lists one, and whoever keeps one
 *    past the current call (a request waiting on its revalidation, a fill)
 *    holds another.
 *
 * The index (cache/index.h) is the durable copy. The catalog is loaded from
 * it at start-up; afterwards every change is made here first, at once, and
 * written to the index behind, on the thread pool, in the order made (one
 * job at a time, each a batch). Requests never read SQLite. A fill's commit
 * writes its own row on the pool (with the blob's rename), then enters the
 * catalog (catalog_put), so what the catalog lists always has its blob and
 * row. A blob that eviction or a purge removes leaves the catalog once its
 * rows are gone (catalog_blob_removed); a request that meanwhile finds the
 * blob missing treats it as a miss.
 *
 * Counters: the catalog keeps stats->objects and stats->stored_bytes equal
 * to the blobs it knows.
 *
 * Thread: loop thread only (the write-behind runs on the pool and touches
 * only its own copies).
 */
#ifndef EDGECACHE_CATALOG_H
#define EDGECACHE_CATALOG_H

#include <stdint.h>
#include <uv.h>

#include "cache/hdrs.h"
#include "config/log.h"

struct index;
struct stats;
struct index_response;
struct catalog;

/* cat_resp.flags (stored in the index as they are) */
#define CAT_NO_STALE 0x1            /* never served stale (must-revalidate and kin) */
#define CAT_ALWAYS_REVALIDATE 0x2   /* revalidated before every use (no-cache, a rule) */

struct cat_resp {
    unsigned refs;
    char *key;
    char *variant;                  /* "" without Vary */
    char *vary;                     /* the Vary names, "" none, "*" never reused */
    char *origin_url;
    long status;
    char sha256[65];
    uint64_t size;
    struct hdrs hdrs;               /* the stored header block */
    const char *etag;               /* the origin's ETag (in hdrs), or NULL */
    int64_t last_modified;          /* from Last-Modified, 0 none */
    int64_t stored_at;              /* when its answer came, or was last revalidated */
    int64_t initial_age;            /* seconds */
    int64_t fresh_until;            /* Unix seconds; INT64_MAX: immutable */
    int64_t stale_if_error;         /* the response's own bound, -1 none */
    unsigned flags;
    /* the catalog's links (valid while it lists the snapshot) */
    struct cat_resp *next;          /* the key's other variants */
    struct cat_resp *blob_next;     /* the other responses of its blob */
    int listed;
};

struct cat_expect {
    char sha256[65];
    int64_t size;                   /* -1 unknown */
    char source[32];
};

struct catalog_env {
    uv_loop_t *loop;
    struct index *index;
    const struct logger *log;
    struct stats *stats;
};

int catalog_open(struct catalog **out, const struct catalog_env *env);
/* Start-up, before the loop serves: every response, expectation and blob
 * the index holds. 0, or -1 (logged). */
int catalog_load(struct catalog *c);
/* Waits (running the loop) for a write-behind batch on the pool, writes
 * what is still queued to the index (blocking), frees, sets *c NULL.
 * Snapshots still referenced stay valid. */
void catalog_close(struct catalog **c);

/* ---- reading ---------------------------------------------------------------- */

/* The newest stored response of key whose variant matches the request
 * (req may be NULL: a request without fields). *vary_miss is set when the
 * key has responses but none for this request (may be NULL). Borrowed:
 * valid until the catalog changes; take a reference to keep it. */
const struct cat_resp *catalog_select(struct catalog *c, const char *key,
                                      const struct hdr_source *req, int *vary_miss);
/* The key's expectation, or NULL (borrowed, as above). */
const struct cat_expect *catalog_expectation(struct catalog *c, const char *key);
/* 1 and *size when the blob is known, else 0. */
int catalog_blob(struct catalog *c, const char *sha256, uint64_t *size);
/* How many keys and responses it lists (for tests and /status). */
void catalog_counts(const struct catalog *c, uint64_t *keys, uint64_t *responses);

void cat_resp_ref(const struct cat_resp *r);
void cat_resp_unref(const struct cat_resp **r);

/* ---- changes (each made now, written behind) ----------------------------------- */

/* A response a fill committed (its row and blob are written): it replaces
 * the key's response of the same variant. seq: the commit's number in the
 * store's order of commits and removals (store_commit_recorded). Returns
 * the listed snapshot (borrowed), or NULL (out of memory: the next request
 * fetches again). */
const struct cat_resp *catalog_put(struct catalog *c, const struct index_response *r,
                                   uint64_t seq);
/* A 304 for `old`: a new snapshot with the updated header block and
 * freshness replaces it, and the index row is updated behind. Returns the
 * new snapshot with a reference for the caller, or NULL (old stays). */
const struct cat_resp *catalog_refresh(struct catalog *c, const struct cat_resp *old,
                                       const struct hdrs *hdrs, int64_t stored_at,
                                       int64_t initial_age, int64_t fresh_until,
                                       int64_t stale_if_error, unsigned flags);
/* Forgets every response of key (RFC 9111 §4.4). */
void catalog_drop_key(struct catalog *c, const char *key);
/* Maps key to a known blob (a hit by hash): a response of status 200
 * with no other fields, written behind as verified by its expectation. */
const struct cat_resp *catalog_map_blob(struct catalog *c, const char *key,
                                        const char *origin_url, const char *sha256,
                                        uint64_t size);
/* An expectation the index has registered. */
void catalog_expect(struct catalog *c, const char *key, const char *sha256, int64_t size,
                    const char *source);
/* n expectations the index has registered (index_expect_put). */
struct index_expectation;
void catalog_expect_all(struct catalog *c, const struct index_expectation *e, size_t n);
/* A blob the index now has a row for (a sideload), or no longer has (an
 * eviction, a purge): the latter forgets every response of it. */
void catalog_blob_added(struct catalog *c, const char *sha256, uint64_t size);
/* The same for a blob committed as step seq (store_commit_recorded), so
 * that an earlier removal of it no longer counts. */
void catalog_blob_added_at(struct catalog *c, const char *sha256, uint64_t size, uint64_t seq);
void catalog_blob_removed(struct catalog *c, const char *sha256);
/* A removal numbered seq (store_blob_remove_recorded): ignored when a
 * commit of the same blob came after it (the blob is there again). */
void catalog_blob_removed_at(struct catalog *c, const char *sha256, uint64_t seq);

#endif
