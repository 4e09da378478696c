/*
 * lookup — the one place that decides how a request for a key is answered,
 * in the spirit of Varnish's HSH_Lookup. The data plane (server/http.c)
 * and the prefetcher (cache/prefetch.c) only turn its answer into a
 * response or a download.
 *
 * Given the request's key, origin URL and fields, lookup_request() answers
 * one of:
 *   STORED  a stored response that may be used now: a hit (the catalog's
 *           response whose Vary selects this request, fresh, its blob
 *           open), or a hit by hash (no response, but the key's expected
 *           SHA-256 is a blob the store holds: the key is mapped to it);
 *   FILL    a fill to wait on: one listed that can serve this request
 *           (collapsed), or one started for it (a miss, or the
 *           revalidation of a stale response, which is kept as the
 *           backup to fall back on);
 *   REFUSE  a status and a one-line reason (the upstream is down and there
 *           is no usable stale copy; only-if-cached and nothing stored).
 *
 * The rules it applies, in order:
 *  - a stored response an expectation disagrees with (another SHA-256, or
 *    not a 200) is not used; a response whose blob is missing is not used;
 *  - a response is fresh while now < fresh_until (immutable: always), and
 *    never when it must be revalidated on every use; a request's own
 *    no-cache (or max-age=0, or Pragma: no-cache) makes a stored response
 *    be revalidated, unless it is immutable;
 *  - a listed fill is joined only when it can serve this request
 *    (fill_serves: Vary, an answer for its first request alone, freshness
 *    for a request that comes after the answer); a revalidating fill only
 *    by a request that holds the same stored copy; a fill that cannot
 *    serve leaves the table, and the request's own fill takes its name;
 *    another variant of a varying key is a fill of its own name (key and
 *    secondary key), so collapsing holds per variant; a request with
 *    Authorization never joins nor is joined (its credentials may change
 *    the answer), though what it fetches is stored when RFC 9111 §3.5
 *    allows;
 *  - a stale backup stands in for a failed upstream within the bounds of
 *    RFC 9111 §4.2.4 (lookup_stale_usable).
 *
 * Thread: loop thread.
 */
#ifndef EDGECACHE_LOOKUP_H
#define EDGECACHE_LOOKUP_H

#include <stdint.h>
#include <uv.h>

#include "cache/hdrs.h"
#include "config/cfg.h"
#include "config/log.h"

struct store;
struct catalog;
struct cat_resp;
struct fills;
struct fill;
struct stats;

struct lookup_env {
    const struct cfg *cfg;
    const struct logger *log;
    struct store *store;
    struct catalog *catalog;
    struct fills *fills;
    struct stats *stats;
};

struct lookup_request {
    const char *key;
    const char *origin_url;
    const struct hdr_source *req;   /* the request's fields, or NULL (a prefetch) */
    int64_t now;
};

enum lookup_verdict { LOOKUP_STORED, LOOKUP_FILL, LOOKUP_REFUSE };

struct lookup_answer {
    enum lookup_verdict verdict;
    /* STORED */
    const struct cat_resp *resp;    /* a reference */
    int fd;                         /* its blob, open (owned); -1 none */
    uint64_t size;
    int by_hash;                    /* found through the key's expectation */
    int stale;                      /* served stale: the upstream failed */
    /* FILL */
    struct fill *fill;              /* a reference */
    int started;                    /* this request started it (else collapsed) */
    int vary_miss;                  /* the key had responses, none for this request */
    const struct cat_resp *backup;  /* a stale response to fall back on (a reference), or NULL */
    int backup_fd;                  /* its blob, open (owned); -1 none */
    /* REFUSE */
    unsigned status;
    char reason[512];
};

void lookup_request(const struct lookup_env *env, const struct lookup_request *rq,
                    struct lookup_answer *out);

/* The fill a FILL answer waits on moved on (its answer's headers came, or
 * it ended). Returns 1 when the request may take what the fill has (its
 * answer, its end, its revalidated response); else the answer is changed
 * to a new decision for the request (a fill of its own variant, or one for
 * it alone; or REFUSE) and 0 is returned. */
int lookup_fill_moved(const struct lookup_env *env, const struct lookup_request *rq,
                      struct lookup_answer *a);

/* Turns a FILL answer whose fill failed (or answered 5xx) into STORED from
 * its backup when RFC 9111 §4.2.4 and stale_if_error allow it: 1, else 0. */
int lookup_fall_back(const struct lookup_env *env, struct lookup_answer *a, int64_t now);

/* Turns the answer into STORED from resp (a revalidated response): its
 * blob is opened. 0, or -1 when the blob is gone (the answer is then
 * unchanged). */
int lookup_use(const struct lookup_env *env, const struct cat_resp *resp,
               struct lookup_answer *a);

/* A stored response's age now, seconds (RFC 9111 §4.2.3). */
int64_t lookup_age(const struct cat_resp *r, int64_t now);

void lookup_answer_free(struct lookup_answer *a);

#endif
