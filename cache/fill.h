/*
 * fill — one upstream transfer per cache key, and the readers that share it.
 *
 * Data model and invariants:
 *  - A fill exists for a key from the first request that misses until the
 *    transfer ends. While it exists it is the only fill for its key: every
 *    other request for the key joins it (collapsed forwarding). When it ends
 *    it leaves the table; later requests find the key in the index (stored)
 *    or start a new fill (not stored).
 *  - The body goes to a temp file under <cache_dir>/tmp/ as it arrives, and
 *    its SHA-256 is computed on the way. The fill writes to disk, never to
 *    sockets, so a slow client never holds the transfer back.
 *  - Readers read the temp file (pread) up to fill_readable(); a reader that
 *    has read all there is waits (fill_wait) and is woken when more arrives
 *    or the fill changes state. Waking calls the reader's wake callback once
 *    and takes the reader off the wait list.
 *  - A committed fill's temp file is renamed into the store; readers go on
 *    reading the same inode through the fill's fd.
 *  - A fill is reference counted: the table holds one reference while the
 *    fill runs, each joined reader one. The last unref closes the fd, unlinks
 *    the temp file if it was not committed, and frees. A fill that fails
 *    wakes every reader; they see FILL_FAILED and end their responses with
 *    an error (the client sees a short body, never a complete one).
 *
 *  - Integrity (DESIGN.md §3): a fill knows what its bytes must be from the
 *    key's registered expectation (SHA-256, size) and the upstream's first
 *    answer (Repr-Digest or Digest sha-256, Content-MD5 or
 *    x-ms-blob-content-md5, Content-Length). It is committed only when all of
 *    them agree with what arrived. While it has any expected digest, the last
 *    byte received is held back from readers (fill_readable), so no reader
 *    ever gets a complete body that then fails verification; a mismatch
 *    fails the fill and cuts every reader.
 *  - Resume: when the upstream breaks off mid-body (error, reset, stall), the
 *    fill asks again, after a short backoff, for the bytes it lacks (Range +
 *    If-Range with the validator it got), up to resume_attempts times. A 200
 *    to that request restarts the body from byte 0: the bytes readers may
 *    already have are compared with the new ones, and any difference (the
 *    object changed) fails the fill, so readers never get a mixture.
 *
 * States (fill_set_state logs every change as "old -> new"):
 *   FILL_CONNECTING  request sent; waiting for the upstream's status and headers
 *   FILL_STREAMING   200 headers in: total known (or not), bytes arriving; also
 *                    while a broken transfer waits to resume or resumes
 *   FILL_PASS        upstream answered non-2xx: its status and a short body are
 *                    passed on to the readers; nothing is stored
 *   FILL_COMMITTING  all bytes in and verified; fsync, rename and the index row
 *                    are being written on the thread pool
 *   FILL_DONE        stored (or, after a disk error, complete but not stored)
 *   FILL_FAILED      the transfer failed; readers are aborted
 *   FILL_REVALIDATED the upstream answered 304 to the stored response's
 *                    validators: readers serve that stored response (the
 *                    fill keeps its index entry); it leaves the table, and
 *                    wakes whoever joined meanwhile, once the index row is
 *                    refreshed
 *
 * Joining: a revalidating fill can end with a 304, which serves only the
 * stored response it asked about. A request whose own lookup found no usable
 * stored copy (blob gone, row dropped, an expectation that disagrees) never
 * joins one: it detaches it (fill_detach) and starts a full fill.
 *
 * Thread: loop thread only (the commit itself runs on the libuv pool).
 */
#ifndef EDGECACHE_FILL_H
#define EDGECACHE_FILL_H

#include <stdint.h>
#include <uv.h>
#include "cache/upstream.h"
#include "config/cfg.h"
#include "config/log.h"

struct store;
struct index;
struct stats;
struct fills;
struct fill;

enum fill_state {
    FILL_CONNECTING,
    FILL_STREAMING,
    FILL_PASS,
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

/* What the readers of a fill may look at. Strings are owned by the fill. */
struct fill_info {
    enum fill_state state;
    const char *key;
    const char *origin_url;
    long status;                /* upstream status once known, else 0 */
    int has_total;              /* Content-Length known */
    uint64_t total;             /* the body's length when has_total */
    uint64_t received;          /* bytes in the temp file */
    const char *content_type;   /* may be NULL */
    int64_t last_modified;      /* 0 when unknown */
    int error_status;           /* FILL_FAILED: 502 or 504 for a client not yet answered */
    const char *error;          /* FILL_FAILED: one line for the client and the log */
    const char *pass_body;      /* FILL_PASS: the upstream's body (may be cut) */
    size_t pass_len;
    const char *sha256_hex;     /* the digest when DONE, or the expected one; else NULL */
    int stored;                 /* FILL_DONE: 1 when the blob and row were written */
    unsigned readers;
    unsigned attempts;          /* resumes so far */
    const char *cache_control;  /* the upstream's, passed on; may be NULL */
    int revalidating;           /* may still end with a 304 (connecting, or revalidated) */
    const struct index_entry *stale;    /* revalidating: that stored response */
};

struct fills_env {
    uv_loop_t *loop;
    const struct cfg *cfg;
    const struct logger *log;
    struct store *store;
    struct index *index;
    struct upstream *upstream;
    struct stats *stats;
    struct evictor *evictor;    /* told after each commit; may be NULL */
};

int fills_open(struct fills **out, const struct fills_env *env);
/* Fails every running fill (readers woken) and frees the table once no
 * fill is referenced any more; sets *f NULL. */
void fills_close(struct fills **f);

/* The running fill for key, or NULL. Does not take a reference. */
struct fill *fills_find(struct fills *f, const char *key);
struct index_expected;

/* Starts a fill for rq->key (there must be none); with rq->stale, the
 * request carries its validators (If-None-Match, If-Modified-Since) and a 304
 * ends the fill as FILL_REVALIDATED.
 * The fill asks the parent (in DO shape) when one is configured, else the
 * origin, and sends Via with this node added. Returns it with one reference
 * for the caller (in addition to the table's), or NULL with a reason and
 * the status to answer (502 while the upstream is known down, else 503). */
struct index_entry;

struct fill_request {
    const char *key;
    const char *origin_url;
    const struct index_expected *expect;    /* the key's expectation, or NULL */
    const char *via;                        /* the client request's Via, or NULL */
    const struct index_entry *stale;        /* revalidate this stored response, or NULL */
};

struct fill *fills_start(struct fills *f, const struct fill_request *rq, int *status,
                         char *reason, size_t reasonlen);

/* What is known of each upstream asked so far (for /status, /metrics). */
struct fills_upstream {
    const char *target;         /* scheme://host:port */
    int up;
    int64_t last_ok, last_fail; /* Unix seconds, 0 never */
    unsigned failures;          /* in a row */
};
void fills_foreach_upstream(struct fills *f, void (*cb)(void *ctx, const struct fills_upstream *u),
                            void *ctx);

/* Calls cb for every running fill (for /status). */
void fills_foreach(struct fills *f, void (*cb)(void *ctx, const struct fill_info *), void *ctx);

void fill_ref(struct fill *fl);
/* Takes fl out of the table: new requests no longer find it (one that
 * cannot serve them), while it goes on for the readers it has. A new fill
 * for the key may then start. */
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
