/*
 * cache/catalog.c: the in-memory index of stored responses, against a real
 * SQLite index and a libuv loop. Loading from the index, choosing the
 * variant a request's fields select (Vary), 304 refreshes as new snapshots
 * while old references stay valid, dropping a key, hits by hash
 * (catalog_map_blob), expectations, blobs arriving and leaving with the
 * object counters, and the write-behind: what the loop writes to the index
 * on the thread pool, and what catalog_close still writes.
 *
 * Each test runs in a fresh mkdtemp directory that is removed at the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "cache/catalog.h"
#include "cache/hdrs.h"
#include "cache/index.h"
#include "cache/stats.h"

#define SHA_A "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define SHA_B "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"
#define SHA_C "283bb9deef02e6843abfb538efa1eca70801bd8a701c3f98191e123496339247"

#define LM_DATE "Tue, 14 Nov 2023 22:13:20 GMT"     /* 1700000000 */

struct fixture {
    char dir[64];
    char path[128];
    struct index *idx;
    struct stats stats;
    uv_loop_t loop;
    struct catalog *cat;
};

/* ---- helpers ------------------------------------------------------------ */

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void open_index(struct fixture *f)
{
    char err[512] = "";

    if (index_open(&f->idx, f->path, NULL, err, sizeof err) != 0)
        fail_msg("index_open: %s", err);
}

/* A catalog over f->idx, loaded. */
static void open_catalog(struct fixture *f)
{
    struct catalog_env env = {.loop = &f->loop, .index = f->idx, .log = NULL,
                              .stats = &f->stats};

    assert_int_equal(catalog_open(&f->cat, &env), 0);
    assert_non_null(f->cat);
    assert_int_equal(catalog_load(f->cat), 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/edgecache-catalog-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/index.db", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    open_index(f);
    open_catalog(f);
    *state = f;
    return 0;
}

/* Lets the write-behind finish, then closes everything. */
static int teardown(void **state)
{
    struct fixture *f = *state;

    uv_run(&f->loop, UV_RUN_DEFAULT);
    catalog_close(&f->cat);
    assert_null(f->cat);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    index_close(&f->idx);
    nftw(f->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Runs the loop until the write-behind is done. */
static void settle(struct fixture *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static struct index_response response(const char *key, const char *variant, const char *vary,
                                      const char *sha, uint64_t size, const char *headers)
{
    struct index_response r = {
        .key = key, .variant = variant, .origin_url = key, .sha256 = sha, .size = size,
        .status = 200, .vary = vary, .headers = headers, .stored_at = 1800000000,
        .initial_age = 0, .fresh_until = 1800000060, .stale_if_error = -1, .flags = 0,
    };
    return r;
}

/* What a fill does: its row first (on the pool), then the catalog. */
static const struct cat_resp *fill(struct fixture *f, const struct index_response *r)
{
    int new_blob = -1;
    const struct cat_resp *listed;

    assert_int_equal(index_commit_response(f->idx, r, r->stored_at, "content-length",
                                           &new_blob), 0);
    listed = catalog_put(f->cat, r, new_blob);
    assert_non_null(listed);
    return listed;
}

/* A request's fields from "Name: value\r\n" lines, read through a
 * hdr_source. */
struct request {
    struct hdrs h;
    struct hdr_source src;
};

static const struct hdr_source *request(struct request *q, const char *block)
{
    hdrs_init(&q->h);
    assert_int_equal(hdrs_parse_block(&q->h, block, strlen(block)), 0);
    hdrs_source(&q->h, &q->src);
    return &q->src;
}

/* The variant a request makes for a response with this Vary, as a fill
 * computes it. */
static char *variant_of(const char *block, const char *vary_names)
{
    struct request q;
    char *v = hdrs_variant_key(request(&q, block), vary_names);

    hdrs_free(&q.h);
    assert_non_null(v);
    return v;
}

static const struct cat_resp *select_for(struct fixture *f, const char *key, const char *block,
                                         int *vary_miss)
{
    struct request q;
    const struct cat_resp *r = catalog_select(f->cat, key, request(&q, block), vary_miss);

    hdrs_free(&q.h);
    return r;
}

static void assert_counts(struct fixture *f, uint64_t responses)
{
    uint64_t keys, n;

    catalog_counts(f->cat, &keys, &n);
    if (n != responses)
        fail_msg("the catalog lists %llu responses, expected %llu", (unsigned long long)n,
                 (unsigned long long)responses);
}

/* The index's rows, copied. */
struct row {
    char key[128], variant[128], sha256[65], headers[512];
    long status;
    int64_t stored_at, initial_age, fresh_until, stale_if_error;
    unsigned flags;
};

struct rows {
    unsigned n;
    struct row r[16];
};

static int collect_row(void *ctx, const struct index_response *r)
{
    struct rows *rs = ctx;
    struct row *w;

    if (rs->n == 16)
        return 1;
    w = &rs->r[rs->n++];
    snprintf(w->key, sizeof w->key, "%s", r->key);
    snprintf(w->variant, sizeof w->variant, "%s", r->variant);
    snprintf(w->sha256, sizeof w->sha256, "%s", r->sha256);
    snprintf(w->headers, sizeof w->headers, "%s", r->headers);
    w->status = r->status;
    w->stored_at = r->stored_at;
    w->initial_age = r->initial_age;
    w->fresh_until = r->fresh_until;
    w->stale_if_error = r->stale_if_error;
    w->flags = r->flags;
    return 0;
}

static const struct row *index_row(struct index *idx, struct rows *rs, const char *key,
                                   const char *variant)
{
    memset(rs, 0, sizeof *rs);
    assert_int_equal(index_foreach_response(idx, collect_row, rs), 0);
    for (unsigned i = 0; i < rs->n; i++)
        if (strcmp(rs->r[i].key, key) == 0 && strcmp(rs->r[i].variant, variant) == 0)
            return &rs->r[i];
    return NULL;
}

static int index_maps(struct index *idx, const char *key, const char *variant, char *sha)
{
    char got[65] = "";
    int rc = index_response_sha(idx, key, variant, got);

    if (sha)
        memcpy(sha, got, sizeof got);
    return rc;
}

/* ---- loading -------------------------------------------------------------- */

static void load_lists_what_the_index_holds(void **state)
{
    struct fixture *f = *state;
    char *gz = variant_of("Accept-Encoding: gzip\r\n", "accept-encoding");
    struct index_response plain = response("http://h/plain", "", "", SHA_A, 5,
                                           "Content-Type: text/plain\r\nETag: \"e1\"\r\n"
                                           "Last-Modified: " LM_DATE "\r\n");
    struct index_response varied = response("http://h/page", gz, "accept-encoding", SHA_B, 7,
                                            "Vary: Accept-Encoding\r\n");
    struct index_expectation e = {.key = "http://h/fw", .sha256 = SHA_C, .size = 4,
                                  .source = "manifest"};
    const struct cat_resp *r;
    const struct cat_expect *x;
    uint64_t size = 0;
    int miss = -1;

    plain.status = 203;
    plain.initial_age = 4;
    plain.stale_if_error = 600;
    plain.flags = CAT_NO_STALE;
    assert_int_equal(index_commit_response(f->idx, &plain, 10, NULL, NULL), 0);
    assert_int_equal(index_commit_response(f->idx, &varied, 10, NULL, NULL), 0);
    assert_int_equal(index_adopt_object(f->idx, SHA_C, 4, 10), 0);
    assert_int_equal(index_expect_put(f->idx, &e, 1), 0);
    f->stats.objects = 99;                      /* load counts afresh */
    f->stats.stored_bytes = 99;
    catalog_close(&f->cat);
    open_catalog(f);

    assert_counts(f, 2);
    assert_int_equal(f->stats.objects, 3);
    assert_int_equal(f->stats.stored_bytes, 16);
    assert_int_equal(catalog_blob(f->cat, SHA_C, &size), 1);
    assert_int_equal(size, 4);
    assert_int_equal(catalog_blob(f->cat, SHA_A, NULL), 1);

    r = catalog_select(f->cat, "http://h/plain", NULL, &miss);
    assert_non_null(r);
    assert_int_equal(miss, 0);
    assert_string_equal(r->key, "http://h/plain");
    assert_string_equal(r->variant, "");
    assert_string_equal(r->vary, "");
    assert_string_equal(r->origin_url, "http://h/plain");
    assert_string_equal(r->sha256, SHA_A);
    assert_int_equal(r->size, 5);
    assert_int_equal(r->status, 203);
    assert_int_equal(r->stored_at, 1800000000);
    assert_int_equal(r->initial_age, 4);
    assert_int_equal(r->fresh_until, 1800000060);
    assert_int_equal(r->stale_if_error, 600);
    assert_int_equal(r->flags, CAT_NO_STALE);
    assert_int_equal(r->hdrs.n, 3);
    assert_string_equal(hdrs_get(&r->hdrs, "content-type"), "text/plain");
    assert_non_null(r->etag);
    assert_string_equal(r->etag, "\"e1\"");
    assert_int_equal(r->last_modified, 1700000000);
    assert_true(r->listed);

    r = select_for(f, "http://h/page", "Accept-Encoding: gzip\r\n", &miss);
    assert_non_null(r);
    assert_string_equal(r->sha256, SHA_B);
    assert_null(r->etag);
    assert_int_equal(r->last_modified, 0);

    x = catalog_expectation(f->cat, "http://h/fw");
    assert_non_null(x);
    assert_string_equal(x->sha256, SHA_C);
    assert_int_equal(x->size, 4);
    assert_string_equal(x->source, "manifest");
    assert_null(catalog_select(f->cat, "http://h/fw", NULL, &miss));
    assert_int_equal(miss, 0);
    free(gz);
}

/* ---- selecting a variant ---------------------------------------------------- */

static void select_picks_the_variant_of_the_request(void **state)
{
    struct fixture *f = *state;
    char *gz = variant_of("Accept-Encoding: gzip\r\n", "accept-encoding");
    char *br = variant_of("Accept-Encoding: br\r\n", "accept-encoding");
    struct index_response a = response("http://h/page", gz, "accept-encoding", SHA_A, 5,
                                       "Vary: Accept-Encoding\r\nContent-Encoding: gzip\r\n");
    struct index_response b = response("http://h/page", br, "accept-encoding", SHA_B, 7,
                                       "Vary: Accept-Encoding\r\nContent-Encoding: br\r\n");
    const struct cat_resp *r;
    int miss = -1;

    fill(f, &a);
    fill(f, &b);
    assert_counts(f, 2);

    r = select_for(f, "http://h/page", "Accept-Encoding: gzip\r\nUser-Agent: x\r\n", &miss);
    assert_non_null(r);
    assert_string_equal(r->sha256, SHA_A);
    assert_int_equal(miss, 0);
    r = select_for(f, "http://h/page", "accept-encoding:   BR\r\n", &miss);
    assert_non_null(r);
    assert_string_equal(r->sha256, SHA_B);
    assert_string_equal(hdrs_get(&r->hdrs, "Content-Encoding"), "br");
    assert_int_equal(miss, 0);

    /* no stored variant for this request: a vary miss */
    miss = -1;
    assert_null(select_for(f, "http://h/page", "Accept-Encoding: gzip, br\r\n", &miss));
    assert_int_equal(miss, 1);
    miss = -1;
    assert_null(catalog_select(f->cat, "http://h/page", NULL, &miss));
    assert_int_equal(miss, 1);
    assert_null(catalog_select(f->cat, "http://h/page", NULL, NULL));
    /* an unknown key is a plain miss */
    miss = -1;
    assert_null(select_for(f, "http://h/other", "Accept-Encoding: gzip\r\n", &miss));
    assert_int_equal(miss, 0);

    /* the request without the field is a variant of its own */
    {
        char *none = variant_of("", "accept-encoding");
        struct index_response c = response("http://h/page", none, "accept-encoding", SHA_C, 4,
                                           "Vary: Accept-Encoding\r\n");
        fill(f, &c);
        r = catalog_select(f->cat, "http://h/page", NULL, &miss);
        assert_non_null(r);
        assert_string_equal(r->sha256, SHA_C);
        r = select_for(f, "http://h/page", "Accept-Encoding: gzip\r\n", &miss);
        assert_non_null(r);
        assert_string_equal(r->sha256, SHA_A);
        free(none);
    }
    free(gz);
    free(br);
}

static void a_response_without_vary_serves_every_request(void **state)
{
    struct fixture *f = *state;
    struct index_response a = response("http://h/x", "", "", SHA_A, 5, "");
    const struct cat_resp *r;
    int miss = -1;

    fill(f, &a);
    r = select_for(f, "http://h/x", "Accept-Encoding: gzip\r\nAccept-Language: fr\r\n", &miss);
    assert_non_null(r);
    assert_string_equal(r->sha256, SHA_A);
    assert_int_equal(miss, 0);
    assert_non_null(catalog_select(f->cat, "http://h/x", NULL, NULL));
}

/* Vary: * is stored (its row exists) but never selected. */
static void vary_star_is_never_selected(void **state)
{
    struct fixture *f = *state;
    struct index_response star = response("http://h/s", "", "*", SHA_A, 5, "Vary: *\r\n");
    char *gz = variant_of("Accept-Encoding: gzip\r\n", "accept-encoding");
    struct index_response a = response("http://h/s", gz, "accept-encoding", SHA_B, 7,
                                       "Vary: Accept-Encoding\r\n");
    int miss = -1;

    fill(f, &star);
    assert_counts(f, 1);
    assert_null(catalog_select(f->cat, "http://h/s", NULL, &miss));
    assert_int_equal(miss, 1);
    miss = -1;
    assert_null(select_for(f, "http://h/s", "Accept-Encoding: gzip\r\n", &miss));
    assert_int_equal(miss, 1);
    /* another variant of the key is still found */
    fill(f, &a);
    assert_counts(f, 2);
    assert_non_null(select_for(f, "http://h/s", "Accept-Encoding: gzip\r\n", &miss));
    assert_int_equal(miss, 0);
    assert_null(select_for(f, "http://h/s", "Accept-Encoding: br\r\n", &miss));
    assert_int_equal(miss, 1);
    free(gz);
}

/* A new response of a variant replaces that variant; a reference to the old
 * one keeps it valid. */
static void put_replaces_its_variant_only(void **state)
{
    struct fixture *f = *state;
    char *gz = variant_of("Accept-Encoding: gzip\r\n", "accept-encoding");
    char *br = variant_of("Accept-Encoding: br\r\n", "accept-encoding");
    struct index_response a = response("http://h/p", gz, "accept-encoding", SHA_A, 5,
                                       "ETag: \"old\"\r\n");
    struct index_response b = response("http://h/p", br, "accept-encoding", SHA_B, 7, "");
    struct index_response a2 = response("http://h/p", gz, "accept-encoding", SHA_C, 4,
                                        "ETag: \"new\"\r\n");
    const struct cat_resp *old, *r;

    old = fill(f, &a);
    cat_resp_ref(old);
    fill(f, &b);
    r = fill(f, &a2);
    assert_true(r != old);
    assert_counts(f, 2);
    r = select_for(f, "http://h/p", "Accept-Encoding: gzip\r\n", NULL);
    assert_non_null(r);
    assert_string_equal(r->sha256, SHA_C);
    assert_string_equal(r->etag, "\"new\"");
    assert_non_null(select_for(f, "http://h/p", "Accept-Encoding: br\r\n", NULL));
    /* the old snapshot is no longer listed, and still readable */
    assert_false(old->listed);
    assert_string_equal(old->sha256, SHA_A);
    assert_string_equal(old->etag, "\"old\"");
    assert_string_equal(old->variant, gz);
    cat_resp_unref(&old);
    assert_null(old);
    free(gz);
    free(br);
}

/* ---- 304 refreshes ---------------------------------------------------------- */

static void refresh_replaces_the_snapshot(void **state)
{
    struct fixture *f = *state;
    char *gz = variant_of("Accept-Encoding: gzip\r\n", "accept-encoding");
    struct index_response a = response("http://h/r", gz, "accept-encoding", SHA_A, 5,
                                       "Vary: Accept-Encoding\r\nETag: \"v1\"\r\n"
                                       "Cache-Control: max-age=60\r\n");
    struct index_response other = response("http://h/r", "", "", SHA_B, 7, "ETag: \"o\"\r\n");
    const struct cat_resp *old, *fresh;
    struct hdrs h;
    struct rows rs;
    const struct row *w;

    other.variant = "other\n";                  /* a sibling that must stay as it is */
    old = fill(f, &a);
    fill(f, &other);
    cat_resp_ref(old);                          /* a request waiting on the revalidation */
    assert_int_equal(hdrs_copy(&h, &old->hdrs), 0);
    hdrs_remove(&h, "ETag");
    hdrs_remove(&h, "Cache-Control");
    hdrs_add_str(&h, "ETag", "\"v2\"");
    hdrs_add_str(&h, "Cache-Control", "max-age=3600");
    hdrs_add_str(&h, "Last-Modified", LM_DATE);

    fresh = catalog_refresh(f->cat, old, &h, 1800001000, 7, 1800004593, 60,
                            CAT_ALWAYS_REVALIDATE);
    hdrs_free(&h);
    assert_non_null(fresh);
    assert_true(fresh != old);
    assert_true(fresh->listed);
    assert_string_equal(fresh->key, "http://h/r");
    assert_string_equal(fresh->variant, gz);
    assert_string_equal(fresh->vary, "accept-encoding");
    assert_string_equal(fresh->sha256, SHA_A);
    assert_int_equal(fresh->size, 5);
    assert_int_equal(fresh->status, 200);
    assert_string_equal(fresh->etag, "\"v2\"");
    assert_int_equal(fresh->last_modified, 1700000000);
    assert_string_equal(hdrs_get(&fresh->hdrs, "Cache-Control"), "max-age=3600");
    assert_int_equal(fresh->stored_at, 1800001000);
    assert_int_equal(fresh->initial_age, 7);
    assert_int_equal(fresh->fresh_until, 1800004593);
    assert_int_equal(fresh->stale_if_error, 60);
    assert_int_equal(fresh->flags, CAT_ALWAYS_REVALIDATE);
    /* it is what requests now find */
    assert_true(select_for(f, "http://h/r", "Accept-Encoding: gzip\r\n", NULL) == fresh);
    assert_counts(f, 2);
    /* the old reference is still valid, and unchanged */
    assert_false(old->listed);
    assert_string_equal(old->etag, "\"v1\"");
    assert_int_equal(old->fresh_until, 1800000060);
    assert_string_equal(hdrs_get(&old->hdrs, "Cache-Control"), "max-age=60");
    cat_resp_unref(&old);
    /* the caller's reference keeps the new one past a later change */
    catalog_drop_key(f->cat, "http://h/r");
    assert_string_equal(fresh->etag, "\"v2\"");
    assert_false(fresh->listed);
    cat_resp_unref(&fresh);

    /* written behind: after the drop, nothing of the key is left */
    settle(f);
    assert_null(index_row(f->idx, &rs, "http://h/r", gz));
    free(gz);

    /* and a refresh alone is written as an update of the row */
    a = response("http://h/r2", "", "", SHA_A, 5, "ETag: \"v1\"\r\n");
    old = fill(f, &a);
    hdrs_init(&h);
    hdrs_add_str(&h, "ETag", "\"v3\"");
    fresh = catalog_refresh(f->cat, old, &h, 1800002000, 1, 1800005000, -1, CAT_NO_STALE);
    hdrs_free(&h);
    assert_non_null(fresh);
    cat_resp_unref(&fresh);
    settle(f);
    w = index_row(f->idx, &rs, "http://h/r2", "");
    assert_non_null(w);
    assert_string_equal(w->headers, "ETag: \"v3\"\r\n");
    assert_string_equal(w->sha256, SHA_A);
    assert_int_equal(w->stored_at, 1800002000);
    assert_int_equal(w->initial_age, 1);
    assert_int_equal(w->fresh_until, 1800005000);
    assert_int_equal(w->stale_if_error, -1);
    assert_int_equal(w->flags, CAT_NO_STALE);
}

/* A snapshot dropped while its revalidation ran is not listed again. */
static void refresh_of_a_dropped_snapshot_is_not_listed(void **state)
{
    struct fixture *f = *state;
    struct index_response a = response("http://h/d", "", "", SHA_A, 5, "ETag: \"v1\"\r\n");
    const struct cat_resp *old, *fresh;
    struct hdrs h;
    struct rows rs;

    old = fill(f, &a);
    cat_resp_ref(old);
    catalog_drop_key(f->cat, "http://h/d");
    settle(f);
    hdrs_init(&h);
    hdrs_add_str(&h, "ETag", "\"v2\"");
    fresh = catalog_refresh(f->cat, old, &h, 1800001000, 0, 1800004600, -1, 0);
    hdrs_free(&h);
    if (fresh) {
        assert_false(fresh->listed);
        assert_string_equal(fresh->etag, "\"v2\"");
        cat_resp_unref(&fresh);
    }
    assert_null(catalog_select(f->cat, "http://h/d", NULL, NULL));
    assert_counts(f, 0);
    settle(f);
    assert_null(index_row(f->idx, &rs, "http://h/d", ""));
    cat_resp_unref(&old);
}

/*
 * A 304 for the stored response A arrives while a fill of the same key
 * commits a new body B on the pool: B's row is written first, then the loop
 * refreshes A (its update is queued), then the fill lists B. B is what is
 * stored, in the catalog and in the index: the refresh of A must not put
 * A's header block and freshness on B's row (after a restart, B's bytes
 * would be served with A's ETag and Content-Encoding).
 */
static void a_refresh_never_rewrites_a_newer_body(void **state)
{
    struct fixture *f = *state;
    struct index_response a = response("http://h/n", "", "", SHA_A, 5,
                                       "ETag: \"a\"\r\nContent-Encoding: gzip\r\n");
    struct index_response b = response("http://h/n", "", "", SHA_B, 7,
                                       "ETag: \"b\"\r\nContent-Encoding: br\r\n");
    const struct cat_resp *old, *fresh, *r;
    struct hdrs h;
    struct rows rs;
    const struct row *w;

    b.stored_at = 1800000500;
    b.fresh_until = 1800000560;
    old = fill(f, &a);
    settle(f);
    /* the fill of B commits its row on the pool */
    assert_int_equal(index_commit_response(f->idx, &b, b.stored_at, "content-length", NULL), 0);
    /* the 304 for A is handled on the loop meanwhile */
    assert_int_equal(hdrs_copy(&h, &old->hdrs), 0);
    fresh = catalog_refresh(f->cat, old, &h, 1800000900, 0, 1800004500, -1, 0);
    hdrs_free(&h);
    assert_non_null(fresh);
    cat_resp_unref(&fresh);
    /* then the fill of B enters the catalog */
    assert_non_null(catalog_put(f->cat, &b, 1));
    settle(f);

    r = catalog_select(f->cat, "http://h/n", NULL, NULL);
    assert_non_null(r);
    assert_string_equal(r->sha256, SHA_B);
    w = index_row(f->idx, &rs, "http://h/n", "");
    assert_non_null(w);
    assert_string_equal(w->sha256, SHA_B);
    if (strcmp(w->headers, "ETag: \"b\"\r\nContent-Encoding: br\r\n") != 0
        || w->fresh_until != 1800000560)
        fail_msg("the index row of http://h/n names blob B but holds the headers \"%s\" and "
                 "fresh_until %lld of the refreshed response A", w->headers,
                 (long long)w->fresh_until);
}

/* ---- dropping, mapping, expectations -------------------------------------- */

static void drop_key_forgets_every_variant(void **state)
{
    struct fixture *f = *state;
    char *en = variant_of("Accept-Language: en\r\n", "accept-language");
    char *fr = variant_of("Accept-Language: fr\r\n", "accept-language");
    struct index_response a = response("http://h/k", en, "accept-language", SHA_A, 5, "");
    struct index_response b = response("http://h/k", fr, "accept-language", SHA_B, 7, "");
    struct index_response other = response("http://h/other", "", "", SHA_A, 5, "");
    int miss = -1;

    fill(f, &a);
    fill(f, &b);
    fill(f, &other);
    catalog_expect(f->cat, "http://h/k", SHA_C, 4, "api");
    assert_counts(f, 3);
    catalog_drop_key(f->cat, "http://h/k");
    assert_counts(f, 1);
    assert_null(select_for(f, "http://h/k", "Accept-Language: en\r\n", &miss));
    assert_int_equal(miss, 0);                  /* nothing stored: no vary miss */
    assert_null(select_for(f, "http://h/k", "Accept-Language: fr\r\n", NULL));
    assert_non_null(catalog_select(f->cat, "http://h/other", NULL, NULL));
    /* the blobs stay (for other keys, or eviction), and the expectation */
    assert_int_equal(catalog_blob(f->cat, SHA_B, NULL), 1);
    assert_int_equal(f->stats.objects, 2);
    assert_int_equal(f->stats.stored_bytes, 12);
    assert_non_null(catalog_expectation(f->cat, "http://h/k"));
    /* dropping a key the catalog does not know is harmless */
    catalog_drop_key(f->cat, "http://h/never");

    /* written behind */
    settle(f);
    assert_int_equal(index_maps(f->idx, "http://h/k", en, NULL), 0);
    assert_int_equal(index_maps(f->idx, "http://h/k", fr, NULL), 0);
    assert_int_equal(index_maps(f->idx, "http://h/other", "", NULL), 1);
    free(en);
    free(fr);
}

static void note_verified_by(void *ctx, const struct index_listing *l)
{
    snprintf(ctx, 32, "%s", l->verified_by ? l->verified_by : "(none)");
}

/* A hit by hash: a known blob mapped to a key. */
static void map_blob_lists_and_writes_a_response(void **state)
{
    struct fixture *f = *state;
    const struct cat_resp *r;
    char sha[65], verified[32];
    uint64_t objects, bytes;

    assert_int_equal(index_adopt_object(f->idx, SHA_A, 5, 10), 0);
    catalog_blob_added(f->cat, SHA_A, 5);
    assert_int_equal(f->stats.objects, 1);
    assert_int_equal(f->stats.stored_bytes, 5);
    r = catalog_map_blob(f->cat, "http://h/fw.swu", "https://o/fw.swu?sig=1", SHA_A, 5);
    assert_non_null(r);
    assert_true(r->listed);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->hdrs.n, 0);
    assert_string_equal(r->variant, "");
    assert_string_equal(r->vary, "");
    assert_string_equal(r->origin_url, "https://o/fw.swu?sig=1");
    assert_string_equal(r->sha256, SHA_A);
    assert_int_equal(r->size, 5);
    assert_true(r->fresh_until == INT64_MAX);
    assert_true(catalog_select(f->cat, "http://h/fw.swu", NULL, NULL) == r);
    assert_counts(f, 1);
    assert_int_equal(f->stats.objects, 1);      /* the same blob */
    assert_int_equal(f->stats.stored_bytes, 5);

    settle(f);
    assert_int_equal(index_maps(f->idx, "http://h/fw.swu", "", sha), 1);
    assert_string_equal(sha, SHA_A);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 1);
    /* the adopted blob is now known to be what its expectation said */
    memset(verified, 0, sizeof verified);
    assert_int_equal(index_list_objects(f->idx, "", 10, note_verified_by, verified), 1);
    assert_string_equal(verified, "expectation");
    /* it survives a restart as a response */
    catalog_close(&f->cat);
    open_catalog(f);
    r = catalog_select(f->cat, "http://h/fw.swu", NULL, NULL);
    assert_non_null(r);
    assert_string_equal(r->sha256, SHA_A);
    assert_int_equal(r->status, 200);
}

static void expectations_are_kept_per_key(void **state)
{
    struct fixture *f = *state;
    struct index_expectation e[2] = {
        {.key = "http://h/a", .sha256 = SHA_A, .size = 5, .source = "manifest"},
        {.key = "http://h/b", .sha256 = SHA_B, .size = -1, .source = NULL},
    };
    struct index_response r = response("http://h/a", "", "", SHA_C, 4, "");
    const struct cat_expect *x;

    assert_null(catalog_expectation(f->cat, "http://h/a"));
    catalog_expect(f->cat, "http://h/a", SHA_C, 4, "api");
    x = catalog_expectation(f->cat, "http://h/a");
    assert_non_null(x);
    assert_string_equal(x->sha256, SHA_C);
    assert_int_equal(x->size, 4);
    assert_string_equal(x->source, "api");
    /* registering again replaces it */
    catalog_expect_all(f->cat, e, 2);
    x = catalog_expectation(f->cat, "http://h/a");
    assert_non_null(x);
    assert_string_equal(x->sha256, SHA_A);
    assert_int_equal(x->size, 5);
    assert_string_equal(x->source, "manifest");
    x = catalog_expectation(f->cat, "http://h/b");
    assert_non_null(x);
    assert_string_equal(x->sha256, SHA_B);
    assert_int_equal(x->size, -1);
    assert_string_equal(x->source, "");
    assert_null(catalog_expectation(f->cat, "http://h/c"));
    /* an expectation is no stored response, and a response does not
     * disturb it */
    assert_null(catalog_select(f->cat, "http://h/a", NULL, NULL));
    assert_counts(f, 0);
    fill(f, &r);
    assert_non_null(catalog_select(f->cat, "http://h/a", NULL, NULL));
    x = catalog_expectation(f->cat, "http://h/a");
    assert_non_null(x);
    assert_string_equal(x->sha256, SHA_A);
}

/* ---- blobs and counters ------------------------------------------------------ */

static void blobs_follow_the_counters(void **state)
{
    struct fixture *f = *state;
    char *v = variant_of("X-V: v\r\n", "x-v");
    char *vw = variant_of("X-W: w\r\n", "x-w");
    struct index_response a1 = response("http://h/1", "", "", SHA_A, 5, "");
    struct index_response a2 = response("http://h/2", v, "x-v", SHA_A, 5, "");
    struct index_response a3 = response("http://h/3", "", "", SHA_A, 5, "");
    struct index_response b = response("http://h/3", vw, "x-w", SHA_B, 7, "");
    const struct cat_resp *kept;
    uint64_t size = 0;

    assert_int_equal(f->stats.objects, 0);
    catalog_blob_added(f->cat, SHA_C, 4);       /* a sideload */
    catalog_blob_added(f->cat, SHA_C, 4);       /* known: counted once */
    catalog_blob_added(f->cat, "not-a-digest", 4);
    assert_int_equal(f->stats.objects, 1);
    assert_int_equal(f->stats.stored_bytes, 4);
    assert_int_equal(catalog_blob(f->cat, SHA_C, &size), 1);
    assert_int_equal(size, 4);
    assert_int_equal(catalog_blob(f->cat, SHA_A, NULL), 0);

    /* a fill of a new blob counts it, more responses of it do not */
    fill(f, &a1);
    assert_int_equal(f->stats.objects, 2);
    assert_int_equal(f->stats.stored_bytes, 9);
    fill(f, &a2);
    fill(f, &a3);
    fill(f, &b);
    assert_int_equal(f->stats.objects, 3);
    assert_int_equal(f->stats.stored_bytes, 16);
    assert_counts(f, 4);

    /* eviction of A forgets every response of it, and nothing else */
    kept = catalog_select(f->cat, "http://h/1", NULL, NULL);
    assert_non_null(kept);
    cat_resp_ref(kept);                         /* a reader still sending it */
    catalog_blob_removed(f->cat, SHA_A);
    assert_int_equal(catalog_blob(f->cat, SHA_A, NULL), 0);
    assert_int_equal(f->stats.objects, 2);
    assert_int_equal(f->stats.stored_bytes, 11);
    assert_counts(f, 1);
    assert_null(catalog_select(f->cat, "http://h/1", NULL, NULL));
    assert_null(catalog_select(f->cat, "http://h/3", NULL, NULL));
    assert_null(select_for(f, "http://h/2", "X-V: v\r\n", NULL));
    {
        struct request q;
        const struct cat_resp *r = catalog_select(f->cat, "http://h/3",
                                                  request(&q, "X-W: w\r\n"), NULL);
        hdrs_free(&q.h);
        assert_non_null(r);
        assert_string_equal(r->sha256, SHA_B);
    }
    assert_false(kept->listed);
    assert_string_equal(kept->sha256, SHA_A);
    cat_resp_unref(&kept);
    /* removing what is not known changes nothing */
    catalog_blob_removed(f->cat, SHA_A);
    catalog_blob_removed(f->cat, "not-a-digest");
    assert_int_equal(f->stats.objects, 2);
    assert_int_equal(f->stats.stored_bytes, 11);
    catalog_blob_removed(f->cat, SHA_B);
    catalog_blob_removed(f->cat, SHA_C);
    assert_int_equal(f->stats.objects, 0);
    assert_int_equal(f->stats.stored_bytes, 0);
    assert_counts(f, 0);
    /* a removed blob can come back */
    catalog_blob_added(f->cat, SHA_A, 5);
    assert_int_equal(f->stats.objects, 1);
    assert_int_equal(catalog_blob(f->cat, SHA_A, NULL), 1);
    free(v);
    free(vw);
}

/* More keys and blobs than the tables start with. */
static void many_keys_and_blobs(void **state)
{
    struct fixture *f = *state;
    const unsigned n = 3000;
    char key[64], sha[65];
    uint64_t size;

    for (unsigned i = 0; i < n; i++) {
        snprintf(key, sizeof key, "http://h/%u", i);
        snprintf(sha, sizeof sha, "%064x", i);
        catalog_blob_added(f->cat, sha, i);
        assert_non_null(catalog_map_blob(f->cat, key, key, sha, i));
    }
    assert_int_equal(f->stats.objects, n);
    assert_counts(f, n);
    for (unsigned i = 0; i < n; i++) {
        const struct cat_resp *r;
        snprintf(key, sizeof key, "http://h/%u", i);
        snprintf(sha, sizeof sha, "%064x", i);
        r = catalog_select(f->cat, key, NULL, NULL);
        if (!r || strcmp(r->sha256, sha) != 0)
            fail_msg("%s lost", key);
        assert_int_equal(catalog_blob(f->cat, sha, &size), 1);
        assert_int_equal(size, i);
    }
    /* the write-behind writes them all, in batches */
    settle(f);
    for (unsigned i = 0; i < n; i += 499) {
        snprintf(key, sizeof key, "http://h/%u", i);
        snprintf(sha, sizeof sha, "%064x", i);
        char got[65];
        assert_int_equal(index_maps(f->idx, key, "", got), 1);
        assert_string_equal(got, sha);
    }
}

/* A sideload (POST /api/v1/import) committed after a removal of the same
 * blob keeps it listed; a removal after the commit takes it away. */
static void a_sideload_committed_after_a_removal_stays(void **state)
{
    struct fixture *f = *state;

    catalog_blob_added_at(f->cat, SHA_C, 4, 5);
    catalog_blob_removed_at(f->cat, SHA_C, 3);  /* came before the commit: ignored */
    assert_int_equal(catalog_blob(f->cat, SHA_C, NULL), 1);
    assert_int_equal(f->stats.objects, 1);
    assert_int_equal(f->stats.stored_bytes, 4);
    catalog_blob_added_at(f->cat, SHA_C, 4, 7);  /* imported again: counted once */
    assert_int_equal(f->stats.objects, 1);
    catalog_blob_removed_at(f->cat, SHA_C, 6);
    assert_int_equal(catalog_blob(f->cat, SHA_C, NULL), 1);
    catalog_blob_removed_at(f->cat, SHA_C, 8);
    assert_int_equal(catalog_blob(f->cat, SHA_C, NULL), 0);
    assert_int_equal(f->stats.objects, 0);
    assert_int_equal(f->stats.stored_bytes, 0);
}

/* ---- the write-behind ------------------------------------------------------- */

/* Changes reach the index in the order they were made. */
static void write_behind_keeps_the_order(void **state)
{
    struct fixture *f = *state;
    struct index_response a = response("http://h/o", "", "", SHA_A, 5, "ETag: \"v1\"\r\n");
    char sha[65];

    fill(f, &a);
    catalog_blob_added(f->cat, SHA_B, 7);
    assert_int_equal(index_adopt_object(f->idx, SHA_B, 7, 10), 0);
    /* forgotten, then mapped to another blob: the mapping stays */
    catalog_drop_key(f->cat, "http://h/o");
    assert_non_null(catalog_map_blob(f->cat, "http://h/o", "http://h/o", SHA_B, 7));
    /* mapped, then forgotten: nothing stays */
    assert_non_null(catalog_map_blob(f->cat, "http://h/p", "http://h/p", SHA_B, 7));
    catalog_drop_key(f->cat, "http://h/p");
    settle(f);
    assert_int_equal(index_maps(f->idx, "http://h/o", "", sha), 1);
    assert_string_equal(sha, SHA_B);
    assert_int_equal(index_maps(f->idx, "http://h/p", "", NULL), 0);
    assert_non_null(catalog_select(f->cat, "http://h/o", NULL, NULL));
    assert_null(catalog_select(f->cat, "http://h/p", NULL, NULL));
}

/* catalog_close after the loop has run: a snapshot still referenced stays
 * valid, and what was written is there after a restart. */
static void close_keeps_referenced_snapshots(void **state)
{
    struct fixture *f = *state;
    struct index_response a = response("http://h/c", "", "", SHA_A, 5, "ETag: \"c\"\r\n");
    const struct cat_resp *r;

    r = fill(f, &a);
    cat_resp_ref(r);
    settle(f);
    catalog_close(&f->cat);
    assert_null(f->cat);
    assert_string_equal(r->key, "http://h/c");
    assert_string_equal(r->etag, "\"c\"");
    assert_false(r->listed);
    cat_resp_unref(&r);
    open_catalog(f);
    r = catalog_select(f->cat, "http://h/c", NULL, NULL);
    assert_non_null(r);
    assert_string_equal(r->etag, "\"c\"");
    assert_int_equal(f->stats.objects, 1);
}

/*
 * catalog_close without the loop running: every change made is written,
 * including the one whose pool job has not run yet. The thread pool is
 * kept busy (one thread, occupied for BUSY_MS) so that the catalog's first
 * job is still queued when catalog_close is called; the index is read as
 * soon as catalog_close returns. This runs in a child process, which leaves
 * with _exit before the pool is free again (nothing is left to touch the
 * closed catalog). Its exit status tells what was missing.
 */
#define MISSING_REFRESH 1
#define MISSING_DROP 2
#define MISSING_MAP 4
#define CHILD_SETUP 8

#define BUSY_MS 2000

static uv_sem_t pool_started;

/* Other pool work (a fill's commit, an eviction) that takes a while. */
static void busy_work(uv_work_t *w)
{
    (void)w;
    uv_sem_post(&pool_started);
    uv_sleep(BUSY_MS);
}

static void busy_after(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
}

static int close_child(const char *path)
{
    struct index *idx = NULL;
    struct catalog *cat = NULL;
    struct stats stats;
    uv_loop_t loop;
    uv_work_t busy;
    char err[512];
    struct hdrs h;
    struct rows rs;
    const struct row *w;
    const struct cat_resp *old, *fresh;
    int missing = 0;

    memset(&stats, 0, sizeof stats);
    alarm(20);                                  /* a close that never returns fails */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    if (uv_loop_init(&loop) != 0 || uv_sem_init(&pool_started, 0) != 0
        || index_open(&idx, path, NULL, err, sizeof err) != 0)
        return CHILD_SETUP;
    struct catalog_env env = {.loop = &loop, .index = idx, .stats = &stats};
    if (catalog_open(&cat, &env) != 0 || catalog_load(cat) != 0)
        return CHILD_SETUP;
    if (uv_queue_work(&loop, &busy, busy_work, busy_after) != 0)
        return CHILD_SETUP;
    uv_sem_wait(&pool_started);

    old = catalog_select(cat, "http://h/one", NULL, NULL);
    if (!old)
        return CHILD_SETUP;
    hdrs_init(&h);
    hdrs_add_str(&h, "ETag", "\"v2\"");
    fresh = catalog_refresh(cat, old, &h, 1800009000, 0, 1800009060, -1, 0);
    hdrs_free(&h);
    if (!fresh)
        return CHILD_SETUP;
    cat_resp_unref(&fresh);
    catalog_drop_key(cat, "http://h/two");
    if (!catalog_map_blob(cat, "http://h/three", "http://h/three", SHA_B, 7))
        return CHILD_SETUP;
    catalog_close(&cat);

    w = index_row(idx, &rs, "http://h/one", "");
    if (!w || strcmp(w->headers, "ETag: \"v2\"\r\n") != 0 || w->fresh_until != 1800009060)
        missing |= MISSING_REFRESH;
    if (index_maps(idx, "http://h/two", "", NULL) != 0)
        missing |= MISSING_DROP;
    if (index_maps(idx, "http://h/three", "", NULL) != 1)
        missing |= MISSING_MAP;
    return missing;
}

static void close_writes_what_is_still_pending(void **state)
{
    struct fixture *f = *state;
    struct index_response one = response("http://h/one", "", "", SHA_A, 5, "ETag: \"v1\"\r\n");
    struct index_response two = response("http://h/two", "", "", SHA_A, 5, "");
    int status = 0;
    pid_t pid;

    fill(f, &one);
    fill(f, &two);
    assert_int_equal(index_adopt_object(f->idx, SHA_B, 7, 10), 0);
    settle(f);
    catalog_close(&f->cat);
    index_close(&f->idx);                       /* the child has the file to itself */

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(close_child(f->path));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("the child died of signal %d (SIGALRM: catalog_close did not return)",
                 WTERMSIG(status));
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == CHILD_SETUP)
        fail_msg("the child could not set up");
    if (WEXITSTATUS(status) != 0)
        fail_msg("after catalog_close the index lacks:%s%s%s",
                 WEXITSTATUS(status) & MISSING_REFRESH ? " the refresh of http://h/one"
                                                      " (its job was still queued)" : "",
                 WEXITSTATUS(status) & MISSING_DROP ? " the drop of http://h/two" : "",
                 WEXITSTATUS(status) & MISSING_MAP ? " the mapping of http://h/three" : "");

    /* what the child wrote is there for the next start */
    open_index(f);
    open_catalog(f);
    assert_null(catalog_select(f->cat, "http://h/two", NULL, NULL));
    assert_non_null(catalog_select(f->cat, "http://h/three", NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(load_lists_what_the_index_holds, setup, teardown),
        cmocka_unit_test_setup_teardown(select_picks_the_variant_of_the_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_response_without_vary_serves_every_request, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(vary_star_is_never_selected, setup, teardown),
        cmocka_unit_test_setup_teardown(put_replaces_its_variant_only, setup, teardown),
        cmocka_unit_test_setup_teardown(refresh_replaces_the_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(refresh_of_a_dropped_snapshot_is_not_listed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_refresh_never_rewrites_a_newer_body, setup, teardown),
        cmocka_unit_test_setup_teardown(drop_key_forgets_every_variant, setup, teardown),
        cmocka_unit_test_setup_teardown(map_blob_lists_and_writes_a_response, setup, teardown),
        cmocka_unit_test_setup_teardown(expectations_are_kept_per_key, setup, teardown),
        cmocka_unit_test_setup_teardown(blobs_follow_the_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(many_keys_and_blobs, setup, teardown),
        cmocka_unit_test_setup_teardown(a_sideload_committed_after_a_removal_stays, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(write_behind_keeps_the_order, setup, teardown),
        cmocka_unit_test_setup_teardown(close_keeps_referenced_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(close_writes_what_is_still_pending, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
