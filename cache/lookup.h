/*
 * lookup — what the store can answer for a key, before any fill:
 *
 *   LOOKUP_HIT      the key's index row points at a blob that opens with the
 *                   recorded size, and no expectation disagrees with it
 *   LOOKUP_BY_HASH  the key has an expected SHA-256 that the store holds
 *                   (from another URL, a sideload, an adopted blob); the key
 *                   is mapped to that blob in the index, on the thread pool
 *   LOOKUP_MISS     neither: a fill is needed
 *
 * A stored blob that an expectation disagrees with is not served (it is
 * fetched again, and the new fill's commit remaps the key).
 *
 * Thread: loop thread.
 */
#ifndef EDGECACHE_LOOKUP_H
#define EDGECACHE_LOOKUP_H

#include <stdint.h>
#include <uv.h>
#include "cache/index.h"
#include "cache/store.h"
#include "config/log.h"

enum lookup_kind { LOOKUP_MISS, LOOKUP_HIT, LOOKUP_BY_HASH };

struct lookup_env {
    uv_loop_t *loop;
    struct store *store;
    struct index *index;
    const struct logger *log;
};

struct lookup_result {
    enum lookup_kind kind;
    int fd;                         /* HIT, BY_HASH: the blob, open for reading (owned) */
    uint64_t size;
    struct index_entry entry;       /* HIT: the row (free with lookup_result_free) */
    int has_expectation;
    struct index_expected expected;
};

/* origin_url is what a BY_HASH mapping records for the key. */
void lookup_key(const struct lookup_env *env, const char *key, const char *origin_url,
                struct lookup_result *out);
/* Closes the fd (unless taken: set fd to -1 first) and frees the entry. */
void lookup_result_free(struct lookup_result *r);

#endif
