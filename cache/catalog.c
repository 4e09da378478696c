/*
 * catalog — see catalog.h.
 *
 * Two hash tables with chains, each grown (doubled) when it holds more
 * entries than buckets: keys (string -> struct cat_key) and blobs (hex
 * digest -> struct cat_blob). A key's variants are a list, newest first;
 * a blob lists the responses whose body it is, so that removing a blob
 * forgets them without a scan. The write-behind is a FIFO of copies of
 * what changed; one pool job at a time takes all that is queued.
 */
#include "cache/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cache/http_range.h"
#include "cache/index.h"
#include "cache/stats.h"

struct cat_key {
    struct cat_key *hnext;
    uint64_t hash;
    char *key;
    struct cat_resp *variants;
    int has_expect;
    struct cat_expect expect;
};

struct cat_blob {
    struct cat_blob *hnext;
    uint64_t hash;
    char sha256[65];
    uint64_t size;
    struct cat_resp *resps;
    uint64_t added_seq;             /* the last commit of it (0: loaded, or sideloaded) */
};

enum op_kind { OP_UPDATE, OP_DROP_KEY, OP_MAP };

/* One change for the index, with copies of what it needs. */
struct op {
    struct op *next;
    enum op_kind kind;
    struct index_response r;        /* its strings point into `strings` */
    char *strings;
};

struct catalog {
    struct catalog_env env;
    struct cat_key **keys;
    size_t n_keys, key_buckets;
    struct cat_blob **blobs;
    size_t n_blobs, blob_buckets;
    uint64_t n_responses;
    struct op *q_head, *q_tail;     /* written behind, in order */
    int job_running;
    int closing;
    uv_work_t work;
    struct op *batch;               /* the running job's ops */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* ---- snapshots ------------------------------------------------------------ */

static void resp_free(struct cat_resp *r)
{
    free(r->key);
    free(r->variant);
    free(r->vary);
    free(r->origin_url);
    hdrs_free(&r->hdrs);
    free(r);
}

void cat_resp_ref(const struct cat_resp *r)
{
    ((struct cat_resp *)r)->refs++;
}

void cat_resp_unref(const struct cat_resp **rp)
{
    struct cat_resp *r = (struct cat_resp *)*rp;
    *rp = NULL;
    if (r && --r->refs == 0)
        resp_free(r);
}

/* The fields the hit path reads often, taken from the block once. */
static void resp_index_fields(struct cat_resp *r)
{
    time_t t;
    const char *lm = hdrs_get(&r->hdrs, "Last-Modified");
    r->etag = hdrs_get(&r->hdrs, "ETag");
    r->last_modified = lm && http_date_parse(lm, &t) == 0 ? (int64_t)t : 0;
}

static struct cat_resp *resp_new(const struct index_response *ir)
{
    struct cat_resp *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->refs = 1;
    hdrs_init(&r->hdrs);
    r->key = strdup(ir->key);
    r->variant = dup_or_empty(ir->variant);
    r->vary = dup_or_empty(ir->vary);
    r->origin_url = dup_or_empty(ir->origin_url);
    if (!r->key || !r->variant || !r->vary || !r->origin_url
        || (ir->headers && hdrs_parse_block(&r->hdrs, ir->headers, strlen(ir->headers)) != 0)) {
        resp_free(r);
        return NULL;
    }
    r->status = ir->status ? ir->status : 200;
    snprintf(r->sha256, sizeof r->sha256, "%s", ir->sha256);
    r->size = ir->size;
    r->stored_at = ir->stored_at;
    r->initial_age = ir->initial_age;
    r->fresh_until = ir->fresh_until;
    r->stale_if_error = ir->stale_if_error;
    r->flags = ir->flags;
    resp_index_fields(r);
    return r;
}

/* ---- the tables ------------------------------------------------------------- */

static int grow(void ***buckets, size_t *n_buckets, size_t next_off, size_t hash_off)
{
    size_t n = *n_buckets ? 2 * *n_buckets : 1024;
    void **nb = calloc(n, sizeof *nb);
    if (!nb)
        return -1;
    for (size_t i = 0; i < *n_buckets; i++) {
        void *e = (*buckets)[i];
        while (e) {
            void *next = *(void **)((char *)e + next_off);
            uint64_t h = *(uint64_t *)((char *)e + hash_off);
            *(void **)((char *)e + next_off) = nb[h & (n - 1)];
            nb[h & (n - 1)] = e;
            e = next;
        }
    }
    free(*buckets);
    *buckets = nb;
    *n_buckets = n;
    return 0;
}

static struct cat_key *key_find(const struct catalog *c, const char *key)
{
    if (!c->key_buckets)
        return NULL;
    uint64_t h = hash_str(key);
    for (struct cat_key *k = c->keys[h & (c->key_buckets - 1)]; k; k = k->hnext)
        if (k->hash == h && strcmp(k->key, key) == 0)
            return k;
    return NULL;
}

static struct cat_key *key_get(struct catalog *c, const char *key)
{
    struct cat_key *k = key_find(c, key);
    if (k)
        return k;
    if (c->n_keys >= c->key_buckets
        && grow((void ***)&c->keys, &c->key_buckets, offsetof(struct cat_key, hnext),
                offsetof(struct cat_key, hash)) != 0)
        return NULL;
    k = calloc(1, sizeof *k);
    if (!k || !(k->key = strdup(key))) {
        free(k);
        return NULL;
    }
    k->hash = hash_str(key);
    k->hnext = c->keys[k->hash & (c->key_buckets - 1)];
    c->keys[k->hash & (c->key_buckets - 1)] = k;
    c->n_keys++;
    return k;
}

/* Frees a key that holds nothing any more. */
static void key_maybe_free(struct catalog *c, struct cat_key *k)
{
    if (k->variants || k->has_expect)
        return;
    struct cat_key **pp = &c->keys[k->hash & (c->key_buckets - 1)];
    while (*pp != k)
        pp = &(*pp)->hnext;
    *pp = k->hnext;
    c->n_keys--;
    free(k->key);
    free(k);
}

static struct cat_blob *blob_find(const struct catalog *c, const char *sha)
{
    if (!c->blob_buckets)
        return NULL;
    uint64_t h = hash_str(sha);
    for (struct cat_blob *b = c->blobs[h & (c->blob_buckets - 1)]; b; b = b->hnext)
        if (b->hash == h && strcmp(b->sha256, sha) == 0)
            return b;
    return NULL;
}

static struct cat_blob *blob_get(struct catalog *c, const char *sha, uint64_t size)
{
    struct cat_blob *b = blob_find(c, sha);
    if (b)
        return b;
    if (strlen(sha) != 64)
        return NULL;
    if (c->n_blobs >= c->blob_buckets
        && grow((void ***)&c->blobs, &c->blob_buckets, offsetof(struct cat_blob, hnext),
                offsetof(struct cat_blob, hash)) != 0)
        return NULL;
    b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    memcpy(b->sha256, sha, 65);
    b->size = size;
    b->hash = hash_str(sha);
    b->hnext = c->blobs[b->hash & (c->blob_buckets - 1)];
    c->blobs[b->hash & (c->blob_buckets - 1)] = b;
    c->n_blobs++;
    c->env.stats->objects++;
    c->env.stats->stored_bytes += size;
    return b;
}

/* Takes r off its key's and its blob's lists and drops the catalog's
 * reference. */
static void unlist(struct catalog *c, struct cat_key *k, struct cat_resp *r)
{
    struct cat_resp **pp = &k->variants;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    struct cat_blob *b = blob_find(c, r->sha256);
    if (b) {
        pp = &b->resps;
        while (*pp && *pp != r)
            pp = &(*pp)->blob_next;
        if (*pp)
            *pp = r->blob_next;
    }
    r->next = r->blob_next = NULL;
    r->listed = 0;
    c->n_responses--;
    const struct cat_resp *self = r;
    cat_resp_unref(&self);
}

/* Lists r (taking the caller's reference) in place of the key's response
 * of the same variant. */
static int list(struct catalog *c, struct cat_resp *r, int *new_blob)
{
    struct cat_key *k = key_get(c, r->key);
    uint64_t before = c->n_blobs;
    struct cat_blob *b = k ? blob_get(c, r->sha256, r->size) : NULL;
    if (!b)
        return -1;
    if (new_blob)
        *new_blob = c->n_blobs > before;
    for (struct cat_resp *v = k->variants; v; v = v->next)
        if (strcmp(v->variant, r->variant) == 0) {
            unlist(c, k, v);
            break;
        }
    r->next = k->variants;
    k->variants = r;
    r->blob_next = b->resps;
    b->resps = r;
    r->listed = 1;
    c->n_responses++;
    return 0;
}

/* ---- write-behind ------------------------------------------------------------ */

static void op_run(struct catalog *c, struct op *o)
{
    switch (o->kind) {
    case OP_UPDATE:
        index_update_response(c->env.index, &o->r);
        break;
    case OP_DROP_KEY:
        index_drop_key(c->env.index, o->r.key);
        break;
    case OP_MAP:
        index_commit_response(c->env.index, &o->r, o->r.stored_at, "expectation", NULL);
        break;
    }
}

static void ops_free(struct op *o)
{
    while (o) {
        struct op *next = o->next;
        free(o->strings);
        free(o);
        o = next;
    }
}

static void job_work(uv_work_t *w)
{
    struct catalog *c = w->data;
    for (struct op *o = c->batch; o; o = o->next)
        op_run(c, o);
}

static void kick(struct catalog *c);

static void job_after(uv_work_t *w, int status)
{
    struct catalog *c = w->data;
    (void)status;
    ops_free(c->batch);
    c->batch = NULL;
    c->job_running = 0;
    kick(c);
}

static void kick(struct catalog *c)
{
    if (c->job_running || !c->q_head || c->closing)
        return;
    c->batch = c->q_head;
    c->q_head = c->q_tail = NULL;
    c->job_running = 1;
    c->work.data = c;
    if (uv_queue_work(c->env.loop, &c->work, job_work, job_after) != 0) {
        job_work(&c->work);         /* cannot queue: write now rather than lose it */
        job_after(&c->work, 0);
    }
}

/* Queues a change; the strings of r are copied. */
static void enqueue(struct catalog *c, enum op_kind kind, const struct index_response *r)
{
    const char *src[6] = {r->key, r->variant, r->origin_url, r->sha256, r->vary, r->headers};
    size_t len[6], total = 0;
    for (int i = 0; i < 6; i++)
        total += (len[i] = src[i] ? strlen(src[i]) : 0) + 1;
    struct op *o = calloc(1, sizeof *o);
    char *p = o ? malloc(total) : NULL;
    if (!p) {
        free(o);
        log_msg(c->env.log, LOG_ERROR, "catalog", "out of memory: a change of %s is not "
                "written to the index", r->key);
        return;
    }
    o->kind = kind;
    o->r = *r;
    o->strings = p;
    const char **dst[6] = {&o->r.key, &o->r.variant, &o->r.origin_url, &o->r.sha256,
                           &o->r.vary, &o->r.headers};
    for (int i = 0; i < 6; i++) {
        memcpy(p, src[i] ? src[i] : "", len[i] + 1);
        *dst[i] = p;
        p += len[i] + 1;
    }
    if (c->q_tail)
        c->q_tail->next = o;
    else
        c->q_head = o;
    c->q_tail = o;
    kick(c);
}

/* The index row of a snapshot (strings borrowed from it; headers from
 * *block, which the caller frees). */
static void as_row(const struct cat_resp *r, char **block, struct index_response *out)
{
    *block = hdrs_serialize(&r->hdrs, NULL);
    *out = (struct index_response){
        .key = r->key, .variant = r->variant, .origin_url = r->origin_url,
        .sha256 = r->sha256, .size = r->size, .status = r->status, .vary = r->vary,
        .headers = *block ? *block : "", .stored_at = r->stored_at,
        .initial_age = r->initial_age, .fresh_until = r->fresh_until,
        .stale_if_error = r->stale_if_error, .flags = r->flags,
    };
}

/* ---- open, load, close ---------------------------------------------------------- */

int catalog_open(struct catalog **out, const struct catalog_env *env)
{
    struct catalog *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->env = *env;
    *out = c;
    return 0;
}

static int load_blob(void *ctx, const char *sha256, uint64_t size)
{
    struct catalog *c = ctx;
    return blob_get(c, sha256, size) ? 0 : 1;
}

static int load_response(void *ctx, const struct index_response *ir)
{
    struct catalog *c = ctx;
    struct cat_resp *r = resp_new(ir);
    if (!r || list(c, r, NULL) != 0) {
        if (r)
            resp_free(r);
        return 1;
    }
    return 0;
}

static int load_expectation(void *ctx, const char *key, const char *sha256, int64_t size,
                            const char *source)
{
    catalog_expect(ctx, key, sha256, size, source);
    return 0;
}

int catalog_load(struct catalog *c)
{
    c->env.stats->objects = c->env.stats->stored_bytes = 0;
    if (index_foreach_object(c->env.index, load_blob, c) != 0
        || index_foreach_response(c->env.index, load_response, c) != 0
        || index_foreach_expectation(c->env.index, load_expectation, c) != 0) {
        log_msg(c->env.log, LOG_ERROR, "catalog", "cannot load the index (out of memory, or "
                "the database failed)");
        return -1;
    }
    log_msg(c->env.log, LOG_INFO, "catalog", "loaded %llu responses of %zu keys, %zu blobs",
            (unsigned long long)c->n_responses, c->n_keys, c->n_blobs);
    return 0;
}

void catalog_close(struct catalog **cp)
{
    struct catalog *c = *cp;
    if (!c)
        return;
    *cp = NULL;
    while (c->job_running)          /* a batch on the pool: let it end */
        uv_run(c->env.loop, UV_RUN_ONCE);
    c->closing = 1;
    for (struct op *o = c->q_head; o; o = o->next)
        op_run(c, o);
    ops_free(c->q_head);
    for (size_t i = 0; i < c->key_buckets; i++)
        for (struct cat_key *k = c->keys[i], *kn; k; k = kn) {
            kn = k->hnext;
            while (k->variants) {
                struct cat_resp *r = k->variants;
                k->variants = r->next;
                r->listed = 0;
                const struct cat_resp *self = r;
                cat_resp_unref(&self);
            }
            free(k->key);
            free(k);
        }
    for (size_t i = 0; i < c->blob_buckets; i++)
        for (struct cat_blob *b = c->blobs[i], *bn; b; b = bn) {
            bn = b->hnext;
            free(b);
        }
    free(c->keys);
    free(c->blobs);
    free(c);
}

/* ---- reading -------------------------------------------------------------------- */

const struct cat_resp *catalog_select(struct catalog *c, const char *key,
                                      const struct hdr_source *req, int *vary_miss)
{
    struct cat_key *k = key_find(c, key);
    if (vary_miss)
        *vary_miss = 0;
    if (!k || !k->variants)
        return NULL;
    /* the request's secondary key, computed once per distinct Vary list */
    const char *for_vary = NULL;
    char *mine = NULL;
    const struct cat_resp *found = NULL;
    for (const struct cat_resp *r = k->variants; r && !found; r = r->next) {
        if (r->vary[0] == '\0') {
            if (r->variant[0] == '\0')
                found = r;
            continue;
        }
        if (strcmp(r->vary, "*") == 0)
            continue;
        if (!for_vary || strcmp(for_vary, r->vary) != 0) {
            free(mine);
            mine = hdrs_variant_key(req, r->vary);
            for_vary = r->vary;
        }
        if (mine && strcmp(mine, r->variant) == 0)
            found = r;
    }
    free(mine);
    if (!found && vary_miss)
        *vary_miss = 1;
    return found;
}

const struct cat_expect *catalog_expectation(struct catalog *c, const char *key)
{
    struct cat_key *k = key_find(c, key);
    return k && k->has_expect ? &k->expect : NULL;
}

int catalog_blob(struct catalog *c, const char *sha256, uint64_t *size)
{
    struct cat_blob *b = blob_find(c, sha256);
    if (b && size)
        *size = b->size;
    return b != NULL;
}

void catalog_counts(const struct catalog *c, uint64_t *keys, uint64_t *responses)
{
    *keys = c->n_keys;
    *responses = c->n_responses;
}

/* ---- changes --------------------------------------------------------------------- */

const struct cat_resp *catalog_put(struct catalog *c, const struct index_response *ir,
                                   uint64_t seq)
{
    struct cat_resp *r = resp_new(ir);
    if (!r || list(c, r, NULL) != 0) {
        if (r)
            resp_free(r);
        log_msg(c->env.log, LOG_ERROR, "catalog", "out of memory: %s is stored but not "
                "listed (the next request fetches it again)", ir->key);
        return NULL;
    }
    struct cat_blob *b = blob_find(c, r->sha256);
    if (b && seq > b->added_seq)
        b->added_seq = seq;
    return r;
}

const struct cat_resp *catalog_refresh(struct catalog *c, const struct cat_resp *old,
                                       const struct hdrs *hdrs, int64_t stored_at,
                                       int64_t initial_age, int64_t fresh_until,
                                       int64_t stale_if_error, unsigned flags)
{
    struct cat_resp *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->refs = 1;
    r->key = strdup(old->key);
    r->variant = strdup(old->variant);
    r->vary = strdup(old->vary);
    r->origin_url = strdup(old->origin_url);
    if (!r->key || !r->variant || !r->vary || !r->origin_url || hdrs_copy(&r->hdrs, hdrs) != 0) {
        resp_free(r);
        return NULL;
    }
    r->status = old->status;
    memcpy(r->sha256, old->sha256, sizeof r->sha256);
    r->size = old->size;
    r->stored_at = stored_at;
    r->initial_age = initial_age;
    r->fresh_until = fresh_until;
    r->stale_if_error = stale_if_error;
    r->flags = flags;
    resp_index_fields(r);
    if (old->listed) {              /* it takes the listed one's place */
        cat_resp_ref(r);            /* the caller's */
        if (list(c, r, NULL) != 0) {
            const struct cat_resp *self = r;
            cat_resp_unref(&self);
            cat_resp_unref(&self);
            return NULL;
        }
        char *block = NULL;
        struct index_response row;
        as_row(r, &block, &row);
        enqueue(c, OP_UPDATE, &row);
        free(block);
        return r;
    }
    return r;                       /* dropped meanwhile (invalidated, evicted): not listed again */
}

void catalog_drop_key(struct catalog *c, const char *key)
{
    struct cat_key *k = key_find(c, key);
    if (k) {
        while (k->variants)
            unlist(c, k, k->variants);
        key_maybe_free(c, k);
    }
    struct index_response row = {.key = key};
    enqueue(c, OP_DROP_KEY, &row);
}

const struct cat_resp *catalog_map_blob(struct catalog *c, const char *key,
                                        const char *origin_url, const char *sha256,
                                        uint64_t size)
{
    struct index_response row = {
        .key = key, .variant = "", .origin_url = origin_url, .sha256 = sha256, .size = size,
        .status = 200, .vary = "", .headers = "", .stored_at = (int64_t)time(NULL),
        .fresh_until = INT64_MAX, .stale_if_error = -1,
    };
    struct cat_resp *r = resp_new(&row);
    if (!r || list(c, r, NULL) != 0) {
        if (r)
            resp_free(r);
        return NULL;
    }
    enqueue(c, OP_MAP, &row);
    return r;
}

void catalog_expect(struct catalog *c, const char *key, const char *sha256, int64_t size,
                    const char *source)
{
    struct cat_key *k = key_get(c, key);
    if (!k)
        return;
    k->has_expect = 1;
    snprintf(k->expect.sha256, sizeof k->expect.sha256, "%s", sha256);
    k->expect.size = size;
    snprintf(k->expect.source, sizeof k->expect.source, "%s", source ? source : "");
}

void catalog_expect_all(struct catalog *c, const struct index_expectation *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        catalog_expect(c, e[i].key, e[i].sha256, e[i].size, e[i].source);
}

void catalog_blob_added(struct catalog *c, const char *sha256, uint64_t size)
{
    blob_get(c, sha256, size);
}

void catalog_blob_added_at(struct catalog *c, const char *sha256, uint64_t size, uint64_t seq)
{
    struct cat_blob *b = blob_get(c, sha256, size);
    if (b && seq > b->added_seq)
        b->added_seq = seq;
}

void catalog_blob_removed(struct catalog *c, const char *sha256)
{
    catalog_blob_removed_at(c, sha256, UINT64_MAX);
}

void catalog_blob_removed_at(struct catalog *c, const char *sha256, uint64_t seq)
{
    struct cat_blob *b = blob_find(c, sha256);
    if (!b || b->added_seq > seq)
        return;                     /* unknown, or committed again after the removal */
    while (b->resps) {
        struct cat_resp *r = b->resps;
        struct cat_key *k = key_find(c, r->key);
        if (k) {
            unlist(c, k, r);
            key_maybe_free(c, k);
        } else {                    /* cannot happen: listed responses have their key */
            b->resps = r->blob_next;
        }
    }
    struct cat_blob **pp = &c->blobs[b->hash & (c->blob_buckets - 1)];
    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
    c->n_blobs--;
    struct stats *st = c->env.stats;
    st->objects -= st->objects ? 1 : 0;
    st->stored_bytes -= b->size < st->stored_bytes ? b->size : st->stored_bytes;
    free(b);
}
