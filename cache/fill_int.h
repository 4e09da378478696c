/*
 * fill_int — the inside of a fill, shared by its two files:
 *   fill.c       the table, references, readers, states, the commit
 *   fill_http.c  the upstream exchange: request fields, the answer's
 *                fields, redirects, freshness, the body, resumes, the end
 * Nothing outside cache/fill*.c includes this. Thread: loop thread.
 */
#ifndef EDGECACHE_FILL_INT_H
#define EDGECACHE_FILL_INT_H

#include <limits.h>
#include <stdint.h>

#include "cache/digest.h"
#include "cache/fill.h"
#include "cache/fresh.h"

#define FILL_MAGIC 0x46696c6cu
#define FILLS_BUCKETS 256

struct health;

struct fill {
    unsigned magic;
    struct fills *owner;
    struct fill *hnext;             /* hash chain, while listed */
    struct fill *all_next, *all_prev;   /* every fill not yet freed */
    int in_table;
    unsigned refs;
    enum fill_state state;
    char *key;                      /* what the answer is stored under */
    char *name;                     /* what it is listed under; NULL: private */
    char *origin_url;

    int fd;                         /* temp file; -1 after close */
    char tmp_path[PATH_MAX];
    int renamed;                    /* the temp file became a blob */
    uint64_t received;              /* bytes in the temp file */
    struct digest sha;
    struct digest md5;              /* only while md5_expected */
    char sha_hex[DIGEST_SHA256_HEX];

    /* What the bytes must be. */
    int exp_sha_set;                /* a registered expectation (200 only) */
    unsigned char exp_sha[DIGEST_SHA256_LEN];
    int64_t exp_size;               /* -1: unknown */
    int hdr_sha_set;                /* the upstream's Repr-Digest / Digest */
    unsigned char hdr_sha[DIGEST_SHA256_LEN];
    int md5_expected;               /* the upstream's Content-MD5 / x-ms-blob-content-md5 */
    unsigned char hdr_md5[DIGEST_MD5_LEN];
    int fatal;                      /* refused for good (fl->error says why) */

    /* Resuming a broken transfer of a 200. */
    unsigned attempts;
    char *validator;                /* strong ETag or Last-Modified, for If-Range */
    int asked_range;                /* the request in flight carries Range */
    int restarting;                 /* a 200 to a resume: re-reading from 0 */
    uint64_t rewrite_pos;

    /* The exchange. */
    struct hdrs req;                /* the client's fields, as sent upstream */
    int authorized;                 /* the client sent Authorization */
    char *via;                      /* the Via sent upstream */
    char *hop_url;                  /* the origin URL asked now (after redirects) */
    char *fetch_url;                /* what is asked: hop_url, or its DO shape at the parent */
    int from_parent;
    int from_peer;                  /* asked of the key's owner in the layer (peers.h) */
    int peer_forwarded;             /* a peer forwarded the request: not forwarded again */
    int skip_peers;                 /* peers failed: fill it from above */
    uint64_t peer_asked;            /* the peer asked now (peers_score(id, "")) */
    uint64_t peers_failed[4];       /* the peers that failed it, by the same hash */
    unsigned n_peers_failed;
    int keep;                       /* store it even when a peer answers (a prefetch) */
    int cross_origin;               /* a redirect left the first origin */
    struct health *health;          /* of fetch_url's host (owned by the table) */
    char *redirects[FILL_MAX_REDIRECTS + 1];
    unsigned n_redirects;           /* URLs asked so far (the first included) */
    char *redirect_to;              /* the next hop, decided in the headers */
    int fallback_pending;           /* the parent failed: ask the origin next */
    int64_t request_time;           /* when the current request went out */
    int64_t response_time;          /* when the answer's headers came */
    struct hdrs hop;                /* the current response's fields, as received */
    long hop_status;                /* the current response's status */

    /* The answer. */
    int answered;                   /* its headers are in */
    long status;
    struct hdrs resp;               /* its end-to-end fields */
    char *upstream_cs;              /* its Cache-Status, which ours extends */
    int has_total;
    uint64_t total;
    int64_t last_modified;
    struct fresh_result fresh;
    char vary[512];                 /* its Vary names */
    char *variant;                  /* the request's secondary key for them */
    int storable;

    /* Revalidation of a stored response. */
    int revalidating;
    const struct cat_resp *stale;   /* a reference */
    const struct cat_resp *fresh_resp;  /* REVALIDATED: a reference */
    int not_modified;

    int stored;
    int error_status;
    char error[512];
    char curl_error[CURL_ERROR_SIZE];

    struct fill_waiter *waiters;
    struct fill *wake_next;         /* on the owner's wake list (holds a reference) */
    int wake_queued;

    struct upstream_xfer xfer;
    struct curl_slist *req_slist;
    uv_timer_t timer;               /* stall watch, or the backoff before a resume */
    uv_work_t work;                 /* the commit on the thread pool */
    char *row_block;                /* the stored header block, for the commit */
    int commit_rc;
    int new_object;
    uint64_t commit_seq;            /* the store's number of the commit */
    int in_flight;
    uint64_t started_ms;            /* uv_now() when it started */
};

/* fill.c */
const struct fills_env *fill__env(const struct fill *fl);
void fill__set_state(struct fill *fl, enum fill_state st);
void fill__fail(struct fill *fl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fill__end(struct fill *fl);
void fill__wake_all(struct fill *fl);
void fill__wake_soon(struct fill *fl);
void fill__commit(struct fill *fl);
struct health *fill__health_of(struct fills *f, const char *url);
/* True unless url's upstream is down with no probe due (nothing consumed). */
int fill__health_usable(struct fills *f, const char *url);
void fill__health_ok(struct fill *fl);
void fill__health_failed(struct fill *fl, const char *why);
int64_t fill__now(void);

/* fill_http.c */
int fill__setup(struct fill *fl, const struct hdr_source *req, char *reason, size_t reasonlen);
void fill__stall_rearm(struct fill *fl);
void fill__on_stall(uv_timer_t *t);
void fill__release_http(struct fill *fl);
int fill__expects_digest(const struct fill *fl);

#endif
