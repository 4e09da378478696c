/* lookup — see lookup.h. */
#include "cache/lookup.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Mapping a key to a blob found by its expected hash: an index row. */
struct map_req {
    uv_work_t work;
    struct index *index;
    char *key;
    char *origin_url;
    char sha256[65];
    uint64_t size;
};

static void map_work(uv_work_t *w)
{
    struct map_req *m = w->data;
    struct index_commit c = {
        .key = m->key, .origin_url = m->origin_url, .sha256 = m->sha256, .size = m->size,
        .now = (int64_t)time(NULL), .verified_by = "expectation",
    };
    index_commit_object(m->index, &c, NULL);
}

static void map_after(uv_work_t *w, int status)
{
    struct map_req *m = w->data;
    (void)status;
    free(m->key);
    free(m->origin_url);
    free(m);
}

static void map_key(const struct lookup_env *env, const char *key, const char *origin_url,
                    const char *sha256, uint64_t size)
{
    struct map_req *m = calloc(1, sizeof *m);
    if (!m)
        return;
    m->work.data = m;
    m->index = env->index;
    m->key = strdup(key);
    m->origin_url = strdup(origin_url);
    memcpy(m->sha256, sha256, sizeof m->sha256);
    m->size = size;
    if (!m->key || !m->origin_url || uv_queue_work(env->loop, &m->work, map_work, map_after) != 0)
        map_after(&m->work, 0);
}

static int try_hit(const struct lookup_env *env, const char *key, struct lookup_result *out)
{
    struct index_entry *ent = &out->entry;
    if (index_lookup(env->index, key, ent) != 1)
        return 0;
    if (out->has_expectation && strcmp(out->expected.sha256, ent->sha256) != 0) {
        log_msg(env->log, LOG_WARN, "lookup", "%s is stored as sha256 %s but expected as %s (%s): "
                "not served, fetched again", key, ent->sha256, out->expected.sha256,
                out->expected.source);
        index_entry_free(ent);
        return 0;
    }
    out->fd = store_blob_open(env->store, ent->sha256, &out->size);
    if (out->fd < 0 || out->size != ent->size) {
        log_msg(env->log, LOG_WARN, "lookup", "blob %s for %s is missing or has the wrong size: "
                "fetching again", ent->sha256, key);
        if (out->fd >= 0)
            close(out->fd);
        out->fd = -1;
        index_entry_free(ent);
        return 0;
    }
    out->kind = LOOKUP_HIT;
    return 1;
}

static int try_by_hash(const struct lookup_env *env, const char *key, const char *origin_url,
                       struct lookup_result *out)
{
    const struct index_expected *ex = &out->expected;
    if (!out->has_expectation)
        return 0;
    out->fd = store_blob_open(env->store, ex->sha256, &out->size);
    if (out->fd < 0)
        return 0;
    if (ex->size >= 0 && (uint64_t)ex->size != out->size) {
        close(out->fd);
        out->fd = -1;
        return 0;
    }
    out->kind = LOOKUP_BY_HASH;
    map_key(env, key, origin_url, ex->sha256, out->size);
    return 1;
}

void lookup_key(const struct lookup_env *env, const char *key, const char *origin_url,
                struct lookup_result *out)
{
    memset(out, 0, sizeof *out);
    out->fd = -1;
    out->has_expectation = index_expect_get(env->index, key, &out->expected) == 1;
    if (try_hit(env, key, out) || try_by_hash(env, key, origin_url, out))
        return;
    out->kind = LOOKUP_MISS;
}

void lookup_result_free(struct lookup_result *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    if (r->kind == LOOKUP_HIT)
        index_entry_free(&r->entry);
    r->kind = LOOKUP_MISS;
}
