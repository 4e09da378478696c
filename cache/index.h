/*
 * index — the SQLite index of what the store holds (DESIGN.md §6).
 *
 * Tables (created on open; PRAGMA user_version holds the schema version):
 *   objects(sha256 TEXT PRIMARY KEY, size INTEGER, created INTEGER,
 *           last_access INTEGER, hits INTEGER, pinned INTEGER,
 *           verified_by TEXT)
 *   urls(key TEXT PRIMARY KEY, sha256 TEXT REFERENCES objects, origin_url TEXT,
 *        content_type TEXT, last_modified INTEGER, origin_etag TEXT,
 *        stored_at INTEGER, fresh_until INTEGER, stale_if_error INTEGER,
 *        cache_control TEXT)
 *   expectations(key TEXT PRIMARY KEY, sha256 TEXT, size INTEGER, source TEXT)
 *   deployments(id TEXT PRIMARY KEY, created INTEGER, body TEXT)
 * plus the indexes urls(sha256) and objects(last_access). A urls row is
 * deleted with its objects row (ON DELETE CASCADE, foreign keys on), and a
 * lookup joins the two, so a key whose object is gone reads as not stored.
 * Times are Unix seconds. The database runs in WAL mode with
 * synchronous=NORMAL: a crash may lose the last commits, never consistency;
 * a blob whose row was lost is adopted by store_recover().
 *
 * Two connections: `rd`, used only by the loop thread for lookups (WAL lets
 * it read while a commit is under way), and `wr`, guarded by a mutex, used
 * for every write from the libuv thread pool. Access times are not written
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

int index_open(struct index **out, const char *path, const struct logger *log,
               char *err, size_t errlen);
/* Flushes pending touches, closes both connections, frees, sets *idx NULL. */
void index_close(struct index **idx);

/* What a lookup by key returns. Strings are owned by the entry. */
struct index_entry {
    char sha256[65];
    uint64_t size;
    char *origin_url;
    char *content_type;         /* NULL when the origin sent none */
    char *origin_etag;          /* NULL when the origin sent none */
    int64_t last_modified;      /* 0 when unknown */
    int64_t stored_at;          /* stored, or last revalidated */
    int64_t fresh_until;        /* Unix seconds; INT64_MAX: immutable */
    int64_t stale_if_error;     /* the response's own bound in seconds, -1 none */
    char *cache_control;        /* the origin's Cache-Control, passed on; NULL none */
};

/* Loop thread. Returns 1 and fills *out when key is stored, 0 when not,
 * -1 on a database error (logged). */
int index_lookup(struct index *idx, const char *key, struct index_entry *out);
void index_entry_free(struct index_entry *e);
/* A deep copy of src into dst (free with index_entry_free). 0, or -1 when
 * out of memory (dst is then empty). */
int index_entry_copy(struct index_entry *dst, const struct index_entry *src);

/* What a finished fill records. */
struct index_commit {
    const char *key;
    const char *origin_url;
    const char *sha256;         /* 64 hex */
    uint64_t size;
    const char *content_type;   /* may be NULL */
    const char *origin_etag;    /* may be NULL */
    int64_t last_modified;      /* 0 when unknown */
    int64_t now;
    const char *verified_by;    /* e.g. "content-length", "repr-digest"; may be NULL */
    int64_t fresh_until;        /* 0 or INT64_MAX: immutable */
    int64_t stale_if_error;     /* seconds; 0 or -1: none given */
    const char *cache_control;  /* the origin's, passed on to clients; may be NULL */
};

/* Thread pool. One transaction: insert or keep the objects row, insert or
 * replace the urls row. Returns 0, or -1 (logged). Sets *new_object to 1
 * when the objects row did not exist before (may be NULL). A kept row gets
 * last_access = max(last_access, now), and its verified_by when it had
 * none or was 'adopted'. */
int index_commit_object(struct index *idx, const struct index_commit *c, int *new_object);

/* Loop thread, cheap: remember that sha256 was read at `now` (repeated
 * reads of one object are merged; a malformed digest is ignored). */
void index_touch(struct index *idx, const char *sha256, int64_t now);
/* Thread pool: writes remembered touches (last_access, hits += n). */
int index_flush_touches(struct index *idx);

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

struct index_expected {
    char sha256[65];
    int64_t size;               /* -1 when unknown */
    char source[32];
};

/* Loop thread. 1 and *out filled when key has an expectation, 0 when not,
 * -1 on a database error. */
int index_expect_get(struct index *idx, const char *key, struct index_expected *out);

/* Thread pool: a revalidation (304) made key fresh again. */
int index_refresh_url(struct index *idx, const char *key, int64_t fresh_until,
                      int64_t stale_if_error, int64_t now);

/* Thread pool: forget key's stored response (an unsafe method succeeded on
 * its URL, RFC 9111 §4.4). The blob stays for other URLs or eviction. */
int index_drop_url(struct index *idx, const char *key);

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
