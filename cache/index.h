/*
 * index — the SQLite index of what the store holds (DESIGN.md §6).
 *
 * Tables (created on open; PRAGMA user_version holds the schema version):
 *   objects(sha256 TEXT PRIMARY KEY, size INTEGER, created INTEGER,
 *           last_access INTEGER, hits INTEGER, pinned INTEGER,
 *           verified_by TEXT)
 *   responses(key TEXT, variant TEXT, sha256 TEXT REFERENCES objects,
 *        origin_url TEXT, status INTEGER, vary TEXT, headers TEXT,
 *        stored_at INTEGER, initial_age INTEGER, fresh_until INTEGER,
 *        stale_if_error INTEGER, flags INTEGER, PRIMARY KEY(key, variant))
 *   expectations(key TEXT PRIMARY KEY, sha256 TEXT, size INTEGER, source TEXT)
 *   deployments(id TEXT PRIMARY KEY, created INTEGER, body TEXT)
 * plus the indexes responses(sha256) and objects(last_access). A key may
 * hold several responses, one per variant (the secondary key that its Vary
 * makes of the request's fields; "" without Vary). A responses row is
 * deleted with its objects row (ON DELETE CASCADE, foreign keys on), and the
 * listing joins the two, so a key whose object is gone reads as not stored.
 * Times are Unix seconds. The database runs in WAL mode with
 * synchronous=NORMAL: a crash may lose the last commits, never consistency;
 * a blob whose row was lost is adopted by store_recover().
 *
 * One connection, guarded by a mutex, used from the libuv thread pool (or
 * at start-up and in the offline commands): the loop thread serves from the
 * catalog (cache/catalog.h), which this index fills at start-up and which
 * writes its changes back here on the pool. Access times are not written
 * once per hit: index_touch() records them in memory (cheap, loop thread)
 * and index_flush_touches() writes the batch in one transaction (thread
 * pool, from a timer, and at shutdown). The batch holds at most 4096
 * distinct objects; past that the earliest entry is given up (the next
 * flush logs how many), so memory stays bounded.
 *
 * Opening refuses, with an error naming the file, a database whose
 * user_version is newer than this code's schema.
 */
#ifndef EDGECACHE_INDEX_H
#define EDGECACHE_INDEX_H

#include <stddef.h>
#include <stdint.h>
#include "config/log.h"

struct index;

/* 0, -1 with err (for example a newer schema, a file system without WAL),
 * or -2 when the file is damaged (not a database, or corrupt): the caller
 * may set it aside and start anew. */
int index_open(struct index **out, const char *path, const struct logger *log,
               char *err, size_t errlen);
/* PRAGMA quick_check: 0 the database is sound, 1 damaged, -1 it could not
 * tell. (Start-up uses it when reading the index failed.) */
int index_quick_check(struct index *idx);
/* Flushes pending touches, closes the connection, frees, sets *idx NULL. */
void index_close(struct index **idx);

/* Loop thread, cheap: remember that sha256 was read at `now` (repeated
 * reads of one object are merged; a malformed digest is ignored). */
void index_touch(struct index *idx, const char *sha256, int64_t now);
/* Thread pool: writes remembered touches (last_access, hits += n). */
int index_flush_touches(struct index *idx);

/* ---- stored responses ------------------------------------------------------ */

/* One stored response, as a commit writes it and the catalog loads it.
 * Strings are borrowed. */
struct index_response {
    const char *key;
    const char *variant;        /* the secondary key, "" without Vary */
    const char *origin_url;
    const char *sha256;         /* 64 hex: the body's blob */
    uint64_t size;
    long status;
    const char *vary;           /* the Vary names (hdrs_vary_names), "" none */
    const char *headers;        /* the stored header block, "Name: value\r\n" lines */
    int64_t stored_at;          /* when its answer came (or was last revalidated) */
    int64_t initial_age;        /* its age then, seconds (RFC 9111 §4.2.3) */
    int64_t fresh_until;        /* Unix seconds; INT64_MAX: immutable */
    int64_t stale_if_error;     /* the response's own bound in seconds, -1 none */
    unsigned flags;             /* the catalog's CAT_* bits */
};

/* Thread pool. One transaction: insert or keep the objects row (`now` its
 * creation or access time, verified_by how its bytes were checked), insert
 * or replace the response (key, variant). Sets *new_object to 1 when the
 * objects row did not exist before (may be NULL). A kept row gets
 * last_access = max(last_access, now), and verified_by when it had none or
 * was 'adopted'. Returns 0, or -1 (logged). */
int index_commit_response(struct index *idx, const struct index_response *r, int64_t now,
                          const char *verified_by, int *new_object);
/* Not the loop thread (offline commands, tests): 1 and the blob of key's
 * response of that variant ("" without Vary) into sha256_out (65 bytes),
 * 0 when there is none, -1 on a database error. */
int index_response_sha(struct index *idx, const char *key, const char *variant,
                       char *sha256_out);
/* Thread pool: a 304 refreshed a response's headers and freshness. Only
 * the row that still names r->sha256 changes: a newer body committed
 * meanwhile keeps its own fields. */
int index_update_response(struct index *idx, const struct index_response *r);
/* Thread pool: forget every response of key (an unsafe method succeeded on
 * its URL, RFC 9111 §4.4). The blobs stay for other keys or eviction. */
int index_drop_key(struct index *idx, const char *key);
/* Calls cb for every stored response whose blob row exists; a non-zero
 * return stops the walk (and is returned; -1 on a database error). cb runs
 * with the connection held: it must not call other index_ functions. */
typedef int (*index_response_cb)(void *ctx, const struct index_response *r);
int index_foreach_response(struct index *idx, index_response_cb cb, void *ctx);

/* Totals for /status and /metrics (any thread; uses wr). */
int index_totals(struct index *idx, uint64_t *objects, uint64_t *bytes);

/* Start-up recovery (store_recover), before the loop runs. */
typedef int (*index_object_cb)(void *ctx, const char *sha256, uint64_t size);
/* Calls cb for every objects row, in sha256 order; a non-zero return stops
 * the walk. cb runs with the write connection held, so it must not call
 * any other index_ function (collect, then act after the walk). Returns 0
 * after the whole walk, cb's value when cb stopped it, -1 on a database
 * error (logged). */
int index_foreach_object(struct index *idx, index_object_cb cb, void *ctx);
/* Deletes the objects row and every urls row that points at it. Dropping
 * an unknown sha256 is not an error. Returns 0 or -1 (logged). */
int index_drop_object(struct index *idx, const char *sha256);
/* The same for n digests in one transaction (all or none). */
int index_drop_objects(struct index *idx, const char *const *sha256, size_t n);
/* Inserts an objects row with verified_by 'adopted' (no URL yet); `now`
 * becomes its created and last_access times. An existing row is kept.
 * Returns 0 or -1 (logged). */
int index_adopt_object(struct index *idx, const char *sha256, uint64_t size, int64_t now);
/* One blob to adopt, for index_adopt_objects(). */
struct index_object {
    const char *sha256;         /* 64 hex, not owned */
    uint64_t size;
    int64_t now;
};
/* The same for n blobs in one transaction (all or none): recovery of a
 * large store adopts in batches instead of one commit per blob. */
int index_adopt_objects(struct index *idx, const struct index_object *objs, size_t n);

/* ---- expectations: what a key's bytes must be (DESIGN.md §3) ----------- */

struct index_expectation {
    const char *key;
    const char *sha256;         /* 64 lower-case hex */
    int64_t size;               /* -1 when unknown */
    const char *source;         /* "api", "manifest", ...; may be NULL */
};

/* Thread pool. Registers (or replaces) n expectations in one transaction.
 * Returns 0, or -1 (nothing registered). */
int index_expect_put(struct index *idx, const struct index_expectation *e, size_t n);
/* Calls cb for every expectation (start-up); as index_foreach_response. */
typedef int (*index_expect_cb)(void *ctx, const char *key, const char *sha256, int64_t size,
                               const char *source);
int index_foreach_expectation(struct index *idx, index_expect_cb cb, void *ctx);



/* Thread pool: up to limit unpinned objects, least recently used first
 * (flush touches before, so recent reads count). */
struct index_lru_entry {
    char sha256[65];
    uint64_t size;
};
int index_lru(struct index *idx, unsigned limit, struct index_lru_entry *out, size_t *n);

/* ---- the object list (control plane; thread pool) ------------------------ */

struct index_listing {
    const char *sha256;
    uint64_t size;
    int64_t created, last_access, hits;
    int pinned;
    const char *verified_by;    /* may be NULL */
    const char *urls;           /* the origin URLs mapped to it, one per line; may be NULL */
};
typedef void (*index_listing_cb)(void *ctx, const struct index_listing *l);
/* Up to limit objects whose sha256 sorts after `after` ("" or NULL: from
 * the start), in sha256 order. Returns how many, or -1. */
int index_list_objects(struct index *idx, const char *after, unsigned limit,
                       index_listing_cb cb, void *ctx);
/* 1 and *size when the object exists, 0 when not, -1 on error. */
int index_object_size(struct index *idx, const char *sha256, uint64_t *size);

/* The origin URLs whose responses name the object, one per line, sorted
 * (malloc'd: the caller frees), or NULL when none does (or on error). */
char *index_object_urls(struct index *idx, const char *sha256);

/* A sideloaded blob (edgecache import): an objects row with verified_by
 * 'import' (a row that was adopted or unverified is upgraded). */
int index_import_object(struct index *idx, const char *sha256, uint64_t size, int64_t now);

/* ---- pins and deployments (thread pool, or start-up) ---------------------- */

/* objects.pinned += delta (never below 0). A pinned object is kept by
 * eviction. */
int index_pin(struct index *idx, const char *sha256, int delta);
/* A deployment row: its id, creation time and a JSON body owned by the
 * prefetch module. */
int index_deployment_put(struct index *idx, const char *id, int64_t created, const char *body);
int index_deployment_drop(struct index *idx, const char *id);
/* Calls cb for every deployment row, oldest first; a non-zero return stops
 * the walk (and is returned). The callback must not call other index
 * functions. */
typedef int (*index_deployment_cb)(void *ctx, const char *id, int64_t created, const char *body);
int index_deployment_foreach(struct index *idx, index_deployment_cb cb, void *ctx);

#endif
