/*
 * fill — one upstream transfer, shared by the requests that can use it.
 *
 * Data model and invariants:
 *  - A fill fetches one response for a key: the first request's fields go
 *    upstream (end-to-end ones; not Range, not the client's conditionals),
 *    with Via. Its answer, of any status, is streamed to a temp file under
 *    <cache_dir>/tmp/ as it arrives, with its SHA-256 computed on the way;
 *    the fill writes to disk, never to sockets, so a slow reader never
 *    holds the transfer back.
 *  - A fill is listed in the table under a name (the key; or, for another
 *    variant of a key whose response varies, the key and that variant)
 *    while it can serve new requests; the table holds at most one fill per
 *    name. It leaves the table as soon as it cannot serve a newcomer: its
 *    answer belongs to its first request (no-store, private, Authorization),
 *    it ended, or fill_detach() took it out. A private fill (no name) is
 *    never listed. Whether a request can use a listed fill is decided by
 *    fill_serves(): its answer's Vary must select this request, and a
 *    request that comes after the answer's headers needs a fresh, storable
 *    answer (cache/lookup.h makes the whole decision).
 *  - Readers read the temp file (pread) up to fill_readable(); a reader that
 *    has read all there is waits (fill_wait) and is woken when more arrives
 *    or the fill changes state. Waking calls the reader's wake callback once
 *    and takes it off the wait list.
 *  - A storable answer is committed (fsync, rename into the store, index
 *    row, on the thread pool) and then enters the catalog; readers go on
 *    reading the same inode through the fill's fd.
 *  - Reference counted: the table holds one reference while the fill is
 *    listed, each reader one, a running commit one. The last unref closes
 *    the fd, unlinks the temp file if it was not committed, and frees.
 *
 *  - Integrity (DESIGN.md §3): a 200's bytes are checked against the key's
 *    expectation (SHA-256, size); any answer's against the upstream's
 *    Repr-Digest or Digest sha-256, Content-MD5 or x-ms-blob-content-md5,
 *    and Content-Length. It is stored only when all agree. While it has an
 *    expected digest, the last byte received is held back from readers
 *    (fill_readable), so no reader ever gets a complete body that then
 *    fails verification; a mismatch fails the fill and cuts every reader.
 *  - Resume: when the upstream breaks off a 200's body (error, reset,
 *    stall), the fill asks again, after a short backoff, for the bytes it
 *    lacks (Range + If-Range with the validator it got), up to
 *    resume_attempts times. A 200 to that request restarts the body from
 *    byte 0: the bytes readers may already have are compared with the new
 *    ones, and any difference (the object changed) fails the fill.
 *  - Redirects: a 301, 302, 303, 307 or 308 with a Location is followed
 *    (at most max_redirects; each hop's origin must be on the allow-list)
 *    before the answer is taken; the final answer is the fill's, stored
 *    under the fill's key. max_redirects 0 makes a redirect the answer.
 *  - Upstream health: only failing to resolve, to connect or to answer in
 *    time marks an upstream down; a reset, a short body, a digest mismatch
 *    or an HTTP error fails this fill alone.
 *
 * States (fill_set_state logs every change as "old -> new"):
 *   FILL_CONNECTING  request sent (redirects being followed); no answer yet
 *   FILL_STREAMING   the answer's status and headers are in; bytes arriving
 *                    (also while a broken transfer waits to resume or resumes)
 *   FILL_COMMITTING  all bytes in and verified; being stored on the pool
 *   FILL_DONE        complete: stored, or (not storable, or a disk error)
 *                    passed on without storing
 *   FILL_FAILED      the transfer failed; readers are aborted
 *   FILL_REVALIDATED the upstream answered 304 to the stored response's
 *                    validators: the catalog holds the refreshed response,
 *                    and the fill keeps it for its readers (fill_info.fresh)
 *
 * Thread: loop thread only (the commit itself runs on the libuv pool).
 */
#ifndef EDGECACHE_FILL_H
#define EDGECACHE_FILL_H

#include <stdint.h>
#include <uv.h>
#include "cache/hdrs.h"
#include "cache/upstream.h"
#include "config/cfg.h"
#include "config/log.h"

struct store;
struct index;
struct stats;
struct fills;
struct fill;
struct catalog;
struct cat_resp;
struct cat_expect;

enum fill_state {
    FILL_CONNECTING,
    FILL_STREAMING,
    FILL_COMMITTING,
    FILL_DONE,
    FILL_FAILED,
    FILL_REVALIDATED,
};

/* A reader waiting on a fill. Embedded in the reader's own struct. */
struct fill_waiter {
    struct fill_waiter *next, *prev;
    void (*wake)(struct fill_waiter *w);
    int waiting;                /* 1 while on a fill's wait list */
};

#define FILL_MAX_REDIRECTS 20

/* What the readers of a fill may look at. Pointers are owned by the fill
 * and valid while the reader holds its reference. */
struct fill_info {
    enum fill_state state;
    const char *key;
    const char *origin_url;
    long status;                /* the answer's, once the headers are in; else 0 */
    const struct hdrs *hdrs;    /* the answer's end-to-end fields, once in (else NULL) */
    int has_total;              /* Content-Length known */
    uint64_t total;             /* the body's length when has_total */
    uint64_t received;          /* bytes in the temp file */
    int64_t last_modified;      /* 0 when unknown */
    const char *etag;           /* the answer's ETag, or NULL */
    int storable;               /* the answer may be stored (decided with its headers) */
    int personal;               /* belongs to the fill's first request only */
    const char *drop_fields;    /* fields for its first request only (no-cache="f", Set-Cookie) */
    int64_t initial_age;        /* the answer's age when it came (RFC 9111 §4.2.3) */
    int error_status;           /* FILL_FAILED: 502 or 504 for a client not yet answered */
    const char *error;          /* FILL_FAILED: one line for the client and the log */
    const char *sha256_hex;     /* the digest when DONE, or the expected one; else NULL */
    int stored;                 /* FILL_DONE: 1 when the blob and row were written */
    unsigned readers;
    unsigned attempts;          /* resumes so far */
    int revalidating;           /* may still end with a 304 (connecting, or revalidated) */
    const struct cat_resp *stale;   /* revalidating: the stored response asked about */
    const struct cat_resp *fresh;   /* FILL_REVALIDATED: that response, refreshed */
    const char *upstream_cache_status;  /* the answer's Cache-Status, to extend; or NULL */
    const char *const *redirects;   /* the URLs the fill was sent to, in order */
    unsigned n_redirects;
};

struct peers;

struct fills_env {
    uv_loop_t *loop;
    const struct cfg *cfg;
    const struct logger *log;
    struct store *store;
    struct index *index;
    struct catalog *catalog;
    struct upstream *upstream;
    struct stats *stats;
    struct evictor *evictor;    /* told after each commit; may be NULL */
    struct peers *peers;        /* this layer's other nodes; NULL: none */
};

int fills_open(struct fills **out, const struct fills_env *env);
/* False while url's upstream is down and no probe is due (peers.h). */
int fills_upstream_usable(struct fills *f, const char *url);
/* Fails every running fill, wakes every reader whatever its fill's state,
 * and frees the table once no fill is referenced any more; sets *f NULL. */
void fills_close(struct fills **f);

/* The fill listed under name, or NULL. Does not take a reference. */
struct fill *fills_find(struct fills *f, const char *name);

struct fill_request {
    const char *key;                    /* the cache key the answer is stored under */
    const char *name;                   /* listed as (key, or key + variant); NULL: private */
    const char *origin_url;
    const struct cat_expect *expect;    /* the key's expectation, or NULL */
    const struct hdr_source *req;       /* the client's fields (forwarded), or NULL */
    const struct cat_resp *stale;       /* revalidate this stored response, or NULL */
    int keep;                           /* stored even when the key's owner peer answers */
};

/* Starts a fill (nothing may be listed under rq->name). With rq->stale, the
 * request carries its validators (If-None-Match, If-Modified-Since) and a
 * 304 ends the fill as FILL_REVALIDATED. The fill asks the parent (in DO
 * shape) when one is configured, else the origin. Returns it with one
 * reference for the caller (and the table's, when named), or NULL with a
 * reason and the status to answer (502 while the upstream is known down,
 * else 503). */
struct fill *fills_start(struct fills *f, const struct fill_request *rq, int *status,
                         char *reason, size_t reasonlen);

/* May the request whose fields are req use this fill's answer? late: it
 * came after the answer's headers (it collapsed onto a response, not onto a
 * request), so the answer must be fresh now and storable. Before the
 * headers are in, 1 (wait and ask again). 0 sets *why (static text). */
int fill_serves(const struct fill *fl, const struct hdr_source *req, int late, int64_t now,
                const char **why);
/* The name a request whose fields are req would give a fill of another
 * variant of this fill's key (key + its secondary key), malloc'd; NULL
 * when the answer does not vary (or out of memory). */
char *fill_variant_name(const struct fill *fl, const struct hdr_source *req);

/* What is known of each upstream asked so far (for /status, /metrics). */
struct fills_upstream {
    const char *target;         /* scheme://host:port */
    int up;
    int64_t last_ok, last_fail; /* Unix seconds, 0 never */
    unsigned failures;          /* in a row */
    const char *last_error;     /* why it was last marked down, or "" */
    int64_t down_since;         /* Unix seconds it went down; 0 while up */
};
void fills_foreach_upstream(struct fills *f, void (*cb)(void *ctx, const struct fills_upstream *u),
                            void *ctx);

/* Calls cb for every running fill, listed or not (for /status). */
void fills_foreach(struct fills *f, void (*cb)(void *ctx, const struct fill_info *), void *ctx);

void fill_ref(struct fill *fl);
/* Takes fl out of the table: new requests no longer find it, while it goes
 * on for the readers it has. Another fill may then be listed in its place. */
void fill_detach(struct fill *fl);
/* Drops a reference; sets *fl NULL. The waiter, if given, leaves the wait list. */
void fill_unref(struct fill **fl, struct fill_waiter *w);

void fill_info(const struct fill *fl, struct fill_info *out);
/* Bytes a reader may be given now (from offset 0). */
uint64_t fill_readable(const struct fill *fl);
/* Reads [offset, offset+len) from the temp file (all of it must be
 * readable). Returns bytes read, or -1. */
ssize_t fill_pread(const struct fill *fl, void *buf, size_t len, uint64_t offset);
/* A duplicate of the fill's fd (for sendfile once the fill is done), or -1. */
int fill_dup_fd(const struct fill *fl);

/* Puts w on the wait list (no-op if already there). */
void fill_wait(struct fill *fl, struct fill_waiter *w);
/* Takes w off the wait list if it is there. */
void fill_unwait(struct fill *fl, struct fill_waiter *w);

const char *fill_state_name(enum fill_state s);

#endif
