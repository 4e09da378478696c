/*
 * The SQLite index: schema (v3, stored responses), commits and lookups,
 * variants of one key, 304 updates, dropping a key, the response and
 * expectation listings, access times, drops, reopening, migrating v1 and
 * v2 databases, refusing a newer schema, and concurrent commits. Each test
 * runs in a fresh directory that is removed at the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sqlite3.h>

#include "cache/hdrs.h"
#include "cache/index.h"

#define SHA_A "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define SHA_B "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"

struct fixture {
    char dir[64];
    char path[128];
    struct index *idx;
};

/* ---- helpers ------------------------------------------------------------ */

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[512] = "";

    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/edgecache-index-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/index.db", f->dir);
    if (index_open(&f->idx, f->path, NULL, err, sizeof err) != 0)
        fail_msg("index_open: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    index_close(&f->idx);
    nftw(f->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    char err[512] = "";

    index_close(&f->idx);
    assert_null(f->idx);
    if (index_open(&f->idx, f->path, NULL, err, sizeof err) != 0)
        fail_msg("index_open: %s", err);
}

/* A digest made from n, for tests that need many distinct objects. */
static void sha_of(unsigned n, char out[65])
{
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", n * 2654435761u + (unsigned)i);
}

#define HEADERS_A "Content-Type: application/octet-stream\r\nETag: \"0x8DC\"\r\n" \
                  "Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"

/* A response as a fill of an immutable blob commits it. */
static struct index_response full_response(const char *key, const char *sha, uint64_t size)
{
    struct index_response r = {
        .key = key, .variant = "", .origin_url = "https://a.blob.core.windows.net/c/fw.swu?sig=x",
        .sha256 = sha, .size = size, .status = 200, .vary = "", .headers = HEADERS_A,
        .stored_at = 1800000000, .initial_age = 0, .fresh_until = INT64_MAX,
        .stale_if_error = -1, .flags = 0,
    };
    return r;
}

static void commit_ok(struct index *idx, const struct index_response *r, int *new_object)
{
    assert_int_equal(index_commit_response(idx, r, r->stored_at, "repr-digest", new_object), 0);
}

/* A copy of a listed response (the callback's strings live only during the
 * call). */
struct row {
    char key[128], variant[256], origin_url[256], sha256[65], vary[128], headers[1024];
    uint64_t size;
    long status;
    int64_t stored_at, initial_age, fresh_until, stale_if_error;
    unsigned flags;
};

struct rows {
    unsigned n, stop_after;     /* stop_after 0: never stop */
    struct row r[8];
};

static int collect_row(void *ctx, const struct index_response *r)
{
    struct rows *rs = ctx;
    struct row *w;

    assert_true(rs->n < 8);
    w = &rs->r[rs->n++];
    snprintf(w->key, sizeof w->key, "%s", r->key);
    snprintf(w->variant, sizeof w->variant, "%s", r->variant ? r->variant : "(null)");
    snprintf(w->origin_url, sizeof w->origin_url, "%s", r->origin_url);
    snprintf(w->sha256, sizeof w->sha256, "%s", r->sha256);
    snprintf(w->vary, sizeof w->vary, "%s", r->vary ? r->vary : "(null)");
    snprintf(w->headers, sizeof w->headers, "%s", r->headers ? r->headers : "(null)");
    w->size = r->size;
    w->status = r->status;
    w->stored_at = r->stored_at;
    w->initial_age = r->initial_age;
    w->fresh_until = r->fresh_until;
    w->stale_if_error = r->stale_if_error;
    w->flags = r->flags;
    return rs->stop_after && rs->n == rs->stop_after ? 7 : 0;
}

/* Every listed response; fails unless the walk completes. */
static void list_rows(struct index *idx, struct rows *rs)
{
    memset(rs, 0, sizeof *rs);
    assert_int_equal(index_foreach_response(idx, collect_row, rs), 0);
}

/* The listed response of (key, variant), or NULL. */
static const struct row *find_row(const struct rows *rs, const char *key, const char *variant)
{
    for (unsigned i = 0; i < rs->n; i++)
        if (strcmp(rs->r[i].key, key) == 0 && strcmp(rs->r[i].variant, variant) == 0)
            return &rs->r[i];
    return NULL;
}

/* Asserts that key's response of that variant is the blob sha. */
static void assert_maps(struct index *idx, const char *key, const char *variant,
                        const char *sha)
{
    char got[65] = "";

    assert_int_equal(index_response_sha(idx, key, variant, got), 1);
    assert_string_equal(got, sha);
}

static void assert_unmapped(struct index *idx, const char *key, const char *variant)
{
    char got[65] = "";

    assert_int_equal(index_response_sha(idx, key, variant, got), 0);
}

/* Runs a one-value query on a separate connection, as an operator would
 * with the sqlite3 shell. */
static int64_t query(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void exec(const char *path, const char *sql)
{
    sqlite3 *db;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---- tests -------------------------------------------------------------- */

static void open_creates_schema(void **state)
{
    struct fixture *f = *state;

    index_close(&f->idx);
    assert_int_equal(query(f->path, "PRAGMA user_version"), 3);
    assert_int_equal(query(f->path, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                                    " AND name IN ('objects', 'responses', 'expectations',"
                                    " 'deployments')"), 4);
    assert_int_equal(query(f->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'urls'"),
                     0);
    assert_int_equal(query(f->path, "SELECT count(*) FROM pragma_table_info('objects')"
                                    " WHERE name IN ('sha256', 'size', 'created',"
                                    " 'last_access', 'hits', 'pinned', 'verified_by')"), 7);
    assert_int_equal(query(f->path, "SELECT count(*) FROM pragma_table_info('responses')"
                                    " WHERE name IN ('key', 'variant', 'sha256', 'origin_url',"
                                    " 'status', 'vary', 'headers', 'stored_at', 'initial_age',"
                                    " 'fresh_until', 'stale_if_error', 'flags')"), 12);
    /* (key, variant) is the primary key: one response per variant */
    assert_int_equal(query(f->path, "SELECT count(*) FROM pragma_table_info('responses')"
                                    " WHERE pk > 0 AND name IN ('key', 'variant')"), 2);
    assert_int_equal(query(f->path, "SELECT count(*) FROM sqlite_schema WHERE type = 'index'"
                                    " AND tbl_name = 'responses' AND sql LIKE '%sha256%'"), 1);
    reopen(f);
}

static void open_uses_wal(void **state)
{
    struct fixture *f = *state;
    struct index_response r = full_response("http://h/a", SHA_A, 5);

    commit_ok(f->idx, &r, NULL);
    assert_int_equal(access(f->path, F_OK), 0);
    {
        char wal[160];
        snprintf(wal, sizeof wal, "%s-wal", f->path);
        assert_int_equal(access(wal, F_OK), 0);
    }
}

static void commit_then_list_returns_every_field(void **state)
{
    struct fixture *f = *state;
    struct index_response r = full_response("https://a.blob.core.windows.net/c/fw.swu", SHA_A, 5);
    struct rows rs;
    const struct row *w;

    r.variant = "accept-encoding=gzip\n";
    r.vary = "accept-encoding";
    r.status = 203;
    r.stored_at = 1800000000;
    r.initial_age = 12;
    r.fresh_until = 1800000600;
    r.stale_if_error = 30;
    r.flags = 3;
    commit_ok(f->idx, &r, NULL);
    assert_maps(f->idx, r.key, "accept-encoding=gzip\n", SHA_A);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    w = &rs.r[0];
    assert_string_equal(w->key, r.key);
    assert_string_equal(w->variant, "accept-encoding=gzip\n");
    assert_string_equal(w->sha256, SHA_A);
    assert_int_equal(w->size, 5);
    assert_string_equal(w->origin_url, r.origin_url);
    assert_int_equal(w->status, 203);
    assert_string_equal(w->vary, "accept-encoding");
    assert_string_equal(w->headers, HEADERS_A);
    assert_int_equal(w->stored_at, 1800000000);
    assert_int_equal(w->initial_age, 12);
    assert_int_equal(w->fresh_until, 1800000600);
    assert_int_equal(w->stale_if_error, 30);
    assert_int_equal(w->flags, 3);
    /* the immutable marker survives as it is */
    r = full_response("http://h/imm", SHA_B, 1);
    commit_ok(f->idx, &r, NULL);
    list_rows(f->idx, &rs);
    w = find_row(&rs, "http://h/imm", "");
    assert_non_null(w);
    assert_true(w->fresh_until == INT64_MAX);
    assert_true(w->stale_if_error == -1);
}

/* A response with nothing optional: no variant, no Vary, no header block. */
static void absent_fields_read_as_empty(void **state)
{
    struct fixture *f = *state;
    struct index_response r = {.key = "http://h/b", .origin_url = "http://h/b",
                               .sha256 = SHA_B, .size = 0, .status = 204, .stored_at = 42,
                               .fresh_until = 100, .stale_if_error = -1};
    struct rows rs;

    assert_int_equal(index_commit_response(f->idx, &r, 42, NULL, NULL), 0);
    assert_maps(f->idx, "http://h/b", "", SHA_B);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_string_equal(rs.r[0].variant, "");
    assert_string_equal(rs.r[0].vary, "");
    assert_string_equal(rs.r[0].headers, "");
    assert_int_equal(rs.r[0].size, 0);
    assert_int_equal(rs.r[0].status, 204);
    assert_int_equal(rs.r[0].stored_at, 42);
    assert_int_equal(rs.r[0].initial_age, 0);
    assert_int_equal(rs.r[0].flags, 0);
    assert_int_equal(query(f->path, "SELECT count(*) FROM objects WHERE verified_by IS NULL"), 1);
}

static void lookup_of_unknown_key_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct index_response r = full_response("http://h/known", SHA_A, 5);
    char sha[65] = "untouched";

    assert_int_equal(index_response_sha(f->idx, "http://h/none", "", sha), 0);
    assert_string_equal(sha, "untouched");
    commit_ok(f->idx, &r, NULL);
    /* the key is stored, but not for that variant */
    assert_unmapped(f->idx, "http://h/known", "accept-encoding=br\n");
    assert_unmapped(f->idx, "http://h/known/", "");
}

static void commit_replaces_the_response_of_its_variant(void **state)
{
    struct fixture *f = *state;
    struct index_response r1 = full_response("http://h/InRelease", SHA_A, 5);
    struct index_response r2 = {.key = "http://h/InRelease", .variant = "",
                                .origin_url = "http://h/InRelease", .sha256 = SHA_B, .size = 9,
                                .status = 200, .vary = "", .headers = "Content-Type: text/plain\r\n",
                                .stored_at = 1900000000, .fresh_until = 1900000060,
                                .stale_if_error = -1};
    struct rows rs;
    uint64_t objects, bytes;

    commit_ok(f->idx, &r1, NULL);
    commit_ok(f->idx, &r2, NULL);
    assert_maps(f->idx, "http://h/InRelease", "", SHA_B);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0].size, 9);
    assert_string_equal(rs.r[0].headers, "Content-Type: text/plain\r\n");
    assert_null(strstr(rs.r[0].headers, "ETag"));
    assert_int_equal(rs.r[0].stored_at, 1900000000);
    assert_int_equal(rs.r[0].fresh_until, 1900000060);
    /* the old blob stays indexed (reachable by hash) until evicted */
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 2);
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"), 1);
}

/* Vary: one key holds a response per variant, each listed, each replaced
 * on its own. */
static void a_key_holds_one_response_per_variant(void **state)
{
    struct fixture *f = *state;
    struct index_response gz = full_response("http://h/page", SHA_A, 5);
    struct index_response br = full_response("http://h/page", SHA_B, 7);
    struct index_response other = full_response("http://h/other", SHA_A, 5);
    struct rows rs;
    const struct row *w;

    gz.vary = br.vary = "accept-encoding";
    gz.variant = "accept-encoding=gzip\n";
    gz.headers = "Vary: Accept-Encoding\r\nContent-Encoding: gzip\r\n";
    br.variant = "accept-encoding=br\n";
    br.headers = "Vary: Accept-Encoding\r\nContent-Encoding: br\r\n";
    commit_ok(f->idx, &gz, NULL);
    commit_ok(f->idx, &br, NULL);
    commit_ok(f->idx, &other, NULL);
    assert_maps(f->idx, "http://h/page", "accept-encoding=gzip\n", SHA_A);
    assert_maps(f->idx, "http://h/page", "accept-encoding=br\n", SHA_B);
    assert_unmapped(f->idx, "http://h/page", "");
    assert_unmapped(f->idx, "http://h/page", "accept-encoding!\n");

    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 3);
    w = find_row(&rs, "http://h/page", "accept-encoding=gzip\n");
    assert_non_null(w);
    assert_string_equal(w->sha256, SHA_A);
    assert_string_equal(w->vary, "accept-encoding");
    assert_non_null(strstr(w->headers, "Content-Encoding: gzip"));
    w = find_row(&rs, "http://h/page", "accept-encoding=br\n");
    assert_non_null(w);
    assert_string_equal(w->sha256, SHA_B);
    assert_int_equal(w->size, 7);
    assert_non_null(strstr(w->headers, "Content-Encoding: br"));
    assert_non_null(find_row(&rs, "http://h/other", ""));

    /* a new gzip answer replaces the gzip variant only */
    gz.sha256 = SHA_B;
    gz.size = 7;
    commit_ok(f->idx, &gz, NULL);
    assert_maps(f->idx, "http://h/page", "accept-encoding=gzip\n", SHA_B);
    assert_maps(f->idx, "http://h/page", "accept-encoding=br\n", SHA_B);
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"), 3);
}

/* A 304: headers and freshness change, the body, status and Vary do not. */
static void update_response_changes_headers_and_freshness(void **state)
{
    struct fixture *f = *state;
    struct index_response r = full_response("http://h/page", SHA_A, 5);
    struct index_response sibling = full_response("http://h/page", SHA_B, 7);
    struct index_response up;
    struct rows rs;
    const struct row *w;

    r.variant = "accept-encoding=gzip\n";
    r.vary = "accept-encoding";
    r.fresh_until = 1800000060;
    r.stale_if_error = 600;
    sibling.variant = "accept-encoding=br\n";
    sibling.vary = "accept-encoding";
    sibling.fresh_until = 1800000060;
    commit_ok(f->idx, &r, NULL);
    commit_ok(f->idx, &sibling, NULL);

    up = r;
    up.status = 404;                    /* an update never changes the status */
    up.headers = "Content-Type: application/octet-stream\r\nETag: \"v2\"\r\n";
    up.stored_at = 1800001000;
    up.initial_age = 3;
    up.fresh_until = 1800004600;
    up.stale_if_error = 0;
    up.flags = 1;
    assert_int_equal(index_update_response(f->idx, &up), 0);

    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 2);
    w = find_row(&rs, "http://h/page", "accept-encoding=gzip\n");
    assert_non_null(w);
    assert_string_equal(w->headers, "Content-Type: application/octet-stream\r\nETag: \"v2\"\r\n");
    assert_int_equal(w->stored_at, 1800001000);
    assert_int_equal(w->initial_age, 3);
    assert_int_equal(w->fresh_until, 1800004600);
    assert_int_equal(w->stale_if_error, 0);
    assert_int_equal(w->flags, 1);
    assert_string_equal(w->sha256, SHA_A);
    assert_int_equal(w->status, 200);
    assert_string_equal(w->vary, "accept-encoding");
    /* the other variant is untouched */
    w = find_row(&rs, "http://h/page", "accept-encoding=br\n");
    assert_non_null(w);
    assert_string_equal(w->headers, HEADERS_A);
    assert_int_equal(w->fresh_until, 1800000060);
    assert_int_equal(w->stored_at, 1800000000);

    /* updating what is not stored stores nothing */
    up.key = "http://h/none";
    assert_int_equal(index_update_response(f->idx, &up), 0);
    assert_unmapped(f->idx, "http://h/none", "accept-encoding=gzip\n");
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"), 2);
}

/* RFC 9111 §4.4: every variant goes, the blobs and other keys stay. */
static void drop_key_drops_every_variant(void **state)
{
    struct fixture *f = *state;
    struct index_response a = full_response("http://h/page", SHA_A, 5);
    struct index_response b = full_response("http://h/page", SHA_B, 7);
    struct index_response c = full_response("http://h/page", SHA_A, 5);
    struct index_response other = full_response("http://h/other", SHA_A, 5);
    struct rows rs;
    uint64_t objects, bytes;

    a.variant = "accept-language=en\n";
    b.variant = "accept-language=fr\n";
    c.variant = "accept-language!\n";
    a.vary = b.vary = c.vary = "accept-language";
    commit_ok(f->idx, &a, NULL);
    commit_ok(f->idx, &b, NULL);
    commit_ok(f->idx, &c, NULL);
    commit_ok(f->idx, &other, NULL);
    assert_int_equal(index_drop_key(f->idx, "http://h/page"), 0);
    assert_unmapped(f->idx, "http://h/page", "accept-language=en\n");
    assert_unmapped(f->idx, "http://h/page", "accept-language=fr\n");
    assert_unmapped(f->idx, "http://h/page", "accept-language!\n");
    assert_maps(f->idx, "http://h/other", "", SHA_A);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_string_equal(rs.r[0].key, "http://h/other");
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 2);
    assert_int_equal(bytes, 12);
    /* dropping a key that holds nothing is not an error */
    assert_int_equal(index_drop_key(f->idx, "http://h/page"), 0);
    assert_int_equal(index_drop_key(f->idx, "http://h/never"), 0);
}

static void foreach_response_stops_when_asked(void **state)
{
    struct fixture *f = *state;
    struct rows rs;
    char key[64], sha[65];

    for (unsigned i = 0; i < 5; i++) {
        struct index_response r = full_response(key, sha, 1);
        snprintf(key, sizeof key, "http://h/%u", i);
        sha_of(i, sha);
        commit_ok(f->idx, &r, NULL);
    }
    memset(&rs, 0, sizeof rs);
    rs.stop_after = 2;
    assert_int_equal(index_foreach_response(f->idx, collect_row, &rs), 7);
    assert_int_equal(rs.n, 2);
    /* the index is usable after an interrupted walk */
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 5);
}

struct expectations {
    unsigned n;
    char key[4][64], sha[4][65], source[4][32];
    int64_t size[4];
    int source_null[4];
    int stop;
};

static int collect_expectation(void *ctx, const char *key, const char *sha256, int64_t size,
                               const char *source)
{
    struct expectations *x = ctx;

    assert_true(x->n < 4);
    snprintf(x->key[x->n], sizeof x->key[0], "%s", key);
    snprintf(x->sha[x->n], sizeof x->sha[0], "%s", sha256);
    snprintf(x->source[x->n], sizeof x->source[0], "%s", source ? source : "");
    x->source_null[x->n] = source == NULL;
    x->size[x->n++] = size;
    return x->stop;
}

static int expectation_of(const struct expectations *x, const char *key)
{
    for (unsigned i = 0; i < x->n; i++)
        if (strcmp(x->key[i], key) == 0)
            return (int)i;
    return -1;
}

static void foreach_expectation_lists_what_was_registered(void **state)
{
    struct fixture *f = *state;
    struct index_expectation e[3] = {
        {.key = "http://h/fw.swu", .sha256 = SHA_A, .size = 5, .source = "manifest"},
        {.key = "http://h/other", .sha256 = SHA_B, .size = -1, .source = NULL},
        {.key = "http://h/fw.swu", .sha256 = SHA_B, .size = 7, .source = "api"},
    };
    struct index_expectation bad = {.key = "http://h/bad", .sha256 = "ABC", .size = 1};
    struct expectations x = {0};
    int i;

    assert_int_equal(index_foreach_expectation(f->idx, collect_expectation, &x), 0);
    assert_int_equal(x.n, 0);
    assert_int_equal(index_expect_put(f->idx, e, 2), 0);
    assert_int_equal(index_expect_put(f->idx, &e[2], 1), 0);   /* replaces the first */
    assert_int_equal(index_expect_put(f->idx, &bad, 1), -1);
    assert_int_equal(index_foreach_expectation(f->idx, collect_expectation, &x), 0);
    assert_int_equal(x.n, 2);
    i = expectation_of(&x, "http://h/fw.swu");
    assert_true(i >= 0);
    assert_string_equal(x.sha[i], SHA_B);
    assert_int_equal(x.size[i], 7);
    assert_string_equal(x.source[i], "api");
    i = expectation_of(&x, "http://h/other");
    assert_true(i >= 0);
    assert_string_equal(x.sha[i], SHA_B);
    assert_int_equal(x.size[i], -1);             /* unknown size stays unknown */
    assert_string_equal(x.source[i], "");        /* no source: NULL or "" */
    assert_int_equal(expectation_of(&x, "http://h/bad"), -1);

    /* a non-zero return stops the walk and is returned */
    memset(&x, 0, sizeof x);
    x.stop = 5;
    assert_int_equal(index_foreach_expectation(f->idx, collect_expectation, &x), 5);
    assert_int_equal(x.n, 1);
    /* and the expectations survive a reopen */
    reopen(f);
    memset(&x, 0, sizeof x);
    assert_int_equal(index_foreach_expectation(f->idx, collect_expectation, &x), 0);
    assert_int_equal(x.n, 2);
}

static void new_object_tells_whether_the_row_was_new(void **state)
{
    struct fixture *f = *state;
    struct index_response c1 = full_response("http://h/one", SHA_A, 5);
    struct index_response c2 = full_response("http://h/two", SHA_A, 5);
    struct index_response c3 = full_response("http://h/three", SHA_B, 7);
    int fresh = -1;

    commit_ok(f->idx, &c1, &fresh);
    assert_int_equal(fresh, 1);
    commit_ok(f->idx, &c2, &fresh);
    assert_int_equal(fresh, 0);
    commit_ok(f->idx, &c1, &fresh);
    assert_int_equal(fresh, 0);
    commit_ok(f->idx, &c3, &fresh);
    assert_int_equal(fresh, 1);
    commit_ok(f->idx, &c3, NULL);
}

static void totals_count_objects_not_responses(void **state)
{
    struct fixture *f = *state;
    struct index_response c1 = full_response("http://h/one", SHA_A, 5);
    struct index_response c2 = full_response("http://h/two", SHA_A, 5);
    struct index_response c3 = full_response("http://h/three", SHA_B, 1000000);
    struct index_response c4 = full_response("http://h/three", SHA_B, 1000000);
    uint64_t objects = 99, bytes = 99;

    c4.variant = "accept-encoding=gzip\n";
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 0);
    assert_int_equal(bytes, 0);
    commit_ok(f->idx, &c1, NULL);
    commit_ok(f->idx, &c2, NULL);
    commit_ok(f->idx, &c3, NULL);
    commit_ok(f->idx, &c4, NULL);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 2);
    assert_int_equal(bytes, 1000005);
}

static void touches_are_written_by_flush(void **state)
{
    struct fixture *f = *state;
    struct index_response c = full_response("http://h/a", SHA_A, 5);

    c.stored_at = 100;
    commit_ok(f->idx, &c, NULL);
    index_touch(f->idx, SHA_A, 200);
    index_touch(f->idx, SHA_A, 300);
    index_touch(f->idx, SHA_A, 150);    /* an older time never moves it back */
    index_touch(f->idx, SHA_B, 500);    /* no such object: ignored */
    index_touch(f->idx, "not-a-digest", 500);
    assert_int_equal(query(f->path, "SELECT hits FROM objects"), 0);
    assert_int_equal(query(f->path, "SELECT last_access FROM objects"), 100);

    assert_int_equal(index_flush_touches(f->idx), 0);
    assert_int_equal(query(f->path, "SELECT hits FROM objects"), 3);
    assert_int_equal(query(f->path, "SELECT last_access FROM objects"), 300);
    assert_int_equal(query(f->path, "SELECT count(*) FROM objects"), 1);

    /* a second flush adds only what came since */
    index_touch(f->idx, SHA_A, 250);
    assert_int_equal(index_flush_touches(f->idx), 0);
    assert_int_equal(index_flush_touches(f->idx), 0);
    assert_int_equal(query(f->path, "SELECT hits FROM objects"), 4);
    assert_int_equal(query(f->path, "SELECT last_access FROM objects"), 300);
}

static void close_flushes_touches(void **state)
{
    struct fixture *f = *state;
    struct index_response c = full_response("http://h/a", SHA_A, 5);

    c.stored_at = 100;
    commit_ok(f->idx, &c, NULL);
    index_touch(f->idx, SHA_A, 700);
    index_touch(f->idx, SHA_A, 700);
    index_close(&f->idx);
    assert_int_equal(query(f->path, "SELECT hits FROM objects"), 2);
    assert_int_equal(query(f->path, "SELECT last_access FROM objects"), 700);
    reopen(f);
}

/* More distinct objects read between two flushes than a batch holds: the
 * earliest are given up, the rest are written, memory stays bounded. */
static void touch_batch_is_bounded(void **state)
{
    struct fixture *f = *state;
    const unsigned n = 5000, cap = 4096;
    char sha[65];

    for (unsigned i = 0; i < n; i++) {
        sha_of(i, sha);
        assert_int_equal(index_adopt_object(f->idx, sha, 1, 10), 0);
    }
    for (unsigned i = 0; i < n; i++) {
        sha_of(i, sha);
        index_touch(f->idx, sha, 1000 + i);
    }
    /* the latest cap objects are all still remembered: a second read of
     * each is merged into its entry and gives nothing else up */
    for (unsigned i = n - cap; i < n; i++) {
        sha_of(i, sha);
        index_touch(f->idx, sha, 1000 + i);
    }
    assert_int_equal(index_flush_touches(f->idx), 0);
    assert_int_equal(query(f->path, "SELECT count(*) FROM objects WHERE hits = 2"), cap);
    assert_int_equal(query(f->path, "SELECT count(*) FROM objects WHERE hits = 0"), n - cap);
    assert_int_equal(query(f->path, "SELECT min(last_access) FROM objects WHERE hits = 2"),
                     1000 + n - cap);
    assert_int_equal(query(f->path, "SELECT max(last_access) FROM objects WHERE hits = 0"), 10);
}

static void drop_object_removes_its_responses(void **state)
{
    struct fixture *f = *state;
    struct index_response c1 = full_response("http://h/one", SHA_A, 5);
    struct index_response c2 = full_response("http://h/two", SHA_A, 5);
    struct index_response c3 = full_response("http://h/three", SHA_B, 7);
    struct index_response c4 = full_response("http://h/three", SHA_A, 5);
    struct rows rs;
    uint64_t objects, bytes;

    c4.variant = "accept-encoding=gzip\n";
    commit_ok(f->idx, &c1, NULL);
    commit_ok(f->idx, &c2, NULL);
    commit_ok(f->idx, &c3, NULL);
    commit_ok(f->idx, &c4, NULL);
    assert_int_equal(index_drop_object(f->idx, SHA_A), 0);
    assert_unmapped(f->idx, "http://h/one", "");
    assert_unmapped(f->idx, "http://h/two", "");
    assert_unmapped(f->idx, "http://h/three", "accept-encoding=gzip\n");
    assert_maps(f->idx, "http://h/three", "", SHA_B);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 1);
    assert_int_equal(bytes, 7);
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"), 1);
    /* dropping what is not there is not an error */
    assert_int_equal(index_drop_object(f->idx, SHA_A), 0);
}

/* An object's URLs (what `edgecache verify` names a bad blob by): each
 * once, sorted, whatever its variants; none for an unknown or sideloaded
 * blob. */
static void object_urls_lists_each_url_once(void **state)
{
    struct fixture *f = *state;
    struct index_response c1 = full_response("http://h/one", SHA_A, 5);
    struct index_response c2 = full_response("http://h/two", SHA_A, 5);
    struct index_response c3 = full_response("http://h/two", SHA_A, 5);

    c1.origin_url = "http://h/one";
    c2.origin_url = c3.origin_url = "http://a/two";
    c3.variant = "accept-encoding=gzip\n";
    commit_ok(f->idx, &c1, NULL);
    commit_ok(f->idx, &c2, NULL);
    commit_ok(f->idx, &c3, NULL);
    char *urls = index_object_urls(f->idx, SHA_A);
    assert_non_null(urls);
    assert_string_equal(urls, "http://a/two\nhttp://h/one");
    free(urls);
    assert_null(index_object_urls(f->idx, SHA_B));
    assert_int_equal(index_import_object(f->idx, SHA_B, 7, 1), 0);
    assert_null(index_object_urls(f->idx, SHA_B));
}

/* A responses row whose objects row is gone (a database edited by hand)
 * reads as not stored, and is not listed. */
static void response_without_object_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct index_response c = full_response("http://h/one", SHA_A, 5);
    struct rows rs;

    commit_ok(f->idx, &c, NULL);
    exec(f->path, "PRAGMA foreign_keys = OFF; DELETE FROM objects;");
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"), 1);
    assert_unmapped(f->idx, "http://h/one", "");
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 0);
}

struct listing {
    unsigned n;
    char sha[4][65];
    uint64_t size[4];
};

static int list_object(void *ctx, const char *sha256, uint64_t size)
{
    struct listing *l = ctx;

    if (l->n == 4)
        return 1;
    snprintf(l->sha[l->n], 65, "%s", sha256);
    l->size[l->n++] = size;
    return 0;
}

static void adopted_objects_are_listed_not_looked_up(void **state)
{
    struct fixture *f = *state;
    struct index_response c = full_response("http://h/one", SHA_B, 7);
    struct listing l = {0};
    struct rows rs;
    int fresh = -1;

    assert_int_equal(index_adopt_object(f->idx, SHA_A, 5, 123), 0);
    assert_int_equal(index_adopt_object(f->idx, SHA_A, 5, 456), 0);    /* kept */
    commit_ok(f->idx, &c, NULL);
    assert_int_equal(index_foreach_object(f->idx, list_object, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.sha[0], SHA_A);       /* primary key order */
    assert_int_equal(l.size[0], 5);
    assert_string_equal(l.sha[1], SHA_B);
    assert_int_equal(l.size[1], 7);
    assert_int_equal(query(f->path, "SELECT created FROM objects WHERE verified_by ="
                                    " 'adopted'"), 123);
    /* an adopted blob is no response */
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_string_equal(rs.r[0].sha256, SHA_B);

    /* a fill of the same bytes later maps a key to it and records its check */
    c = full_response("http://h/two", SHA_A, 5);
    commit_ok(f->idx, &c, &fresh);
    assert_int_equal(fresh, 0);
    assert_maps(f->idx, "http://h/two", "", SHA_A);
    assert_int_equal(query(f->path, "SELECT count(*) FROM objects WHERE verified_by ="
                                    " 'repr-digest'"), 2);
    assert_int_equal(query(f->path, "SELECT last_access FROM objects WHERE sha256 = '"
                                    SHA_A "'"), 1800000000);
}

static void foreach_stops_when_asked(void **state)
{
    struct fixture *f = *state;
    struct listing l = {.n = 3};
    char sha[65];

    for (unsigned i = 0; i < 5; i++) {
        sha_of(i, sha);
        assert_int_equal(index_adopt_object(f->idx, sha, i, 1), 0);
    }
    assert_int_equal(index_foreach_object(f->idx, list_object, &l), 1);
    assert_int_equal(l.n, 4);
    /* the index is usable after an interrupted walk */
    assert_int_equal(index_drop_object(f->idx, sha), 0);
}

static void batches_adopt_and_drop_together(void **state)
{
    struct fixture *f = *state;
    struct index_response c = full_response("http://h/one", SHA_A, 5);
    struct index_object objs[3] = {{SHA_A, 5, 10}, {SHA_B, 7, 20}, {"bad", 1, 30}};
    const char *drop[2] = {SHA_A, SHA_B};
    uint64_t objects, bytes;

    /* one bad row: the whole batch is rolled back */
    assert_int_equal(index_adopt_objects(f->idx, objs, 3), -1);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 0);

    assert_int_equal(index_adopt_objects(f->idx, objs, 2), 0);
    commit_ok(f->idx, &c, NULL);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 2);
    assert_int_equal(bytes, 12);
    assert_int_equal(index_drop_objects(f->idx, drop, 2), 0);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 0);
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"), 0);
}

static void reopen_keeps_data(void **state)
{
    struct fixture *f = *state;
    struct index_response c = full_response("http://h/one", SHA_A, 5);
    struct rows rs;
    uint64_t objects, bytes;

    commit_ok(f->idx, &c, NULL);
    reopen(f);
    assert_maps(f->idx, "http://h/one", "", SHA_A);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_non_null(strstr(rs.r[0].headers, "ETag: \"0x8DC\"\r\n"));
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 1);
    assert_int_equal(bytes, 5);
}

static void newer_schema_is_refused(void **state)
{
    struct fixture *f = *state;
    struct index *idx = (struct index *)1;
    char err[512] = "";

    index_close(&f->idx);
    exec(f->path, "PRAGMA user_version = 4");
    assert_int_equal(index_open(&idx, f->path, NULL, err, sizeof err), -1);
    assert_null(idx);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, "version 4"));
    /* the file is left as it was */
    assert_int_equal(query(f->path, "PRAGMA user_version"), 4);
}

/* Creates an empty database file at f->path, the index closed. */
static void fresh_file(struct fixture *f)
{
    sqlite3 *db;

    index_close(&f->idx);
    unlink(f->path);
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* A version-1 index (before freshness) is migrated in place: its rows keep
 * being served as immutable. */
static void version_1_is_migrated(void **state)
{
    struct fixture *f = *state;
    struct index_response up;
    struct rows rs;
    char err[512] = "";
    static const char sha[] = "1111111111111111111111111111111111111111111111111111111111111111";

    fresh_file(f);
    exec(f->path, "CREATE TABLE objects(sha256 TEXT PRIMARY KEY NOT NULL, size INTEGER NOT NULL,"
                  " created INTEGER NOT NULL, last_access INTEGER NOT NULL, hits INTEGER NOT NULL"
                  " DEFAULT 0, pinned INTEGER NOT NULL DEFAULT 0, verified_by TEXT) WITHOUT ROWID;"
                  "CREATE TABLE urls(key TEXT PRIMARY KEY NOT NULL, sha256 TEXT NOT NULL,"
                  " origin_url TEXT NOT NULL, content_type TEXT, last_modified INTEGER NOT NULL"
                  " DEFAULT 0, origin_etag TEXT, stored_at INTEGER NOT NULL);"
                  "CREATE TABLE expectations(key TEXT PRIMARY KEY NOT NULL, sha256 TEXT NOT NULL,"
                  " size INTEGER, source TEXT);"
                  "CREATE TABLE deployments(id TEXT PRIMARY KEY NOT NULL, created INTEGER NOT NULL,"
                  " body TEXT);"
                  "INSERT INTO objects VALUES('1111111111111111111111111111111111111111111111111111111111111111',"
                  " 5, 1, 1, 0, 0, NULL);"
                  "INSERT INTO urls VALUES('http://h/x', '1111111111111111111111111111111111111111111111111111111111111111',"
                  " 'http://h/x', NULL, 0, NULL, 7);"
                  "PRAGMA user_version = 1;");
    if (index_open(&f->idx, f->path, NULL, err, sizeof err) != 0)
        fail_msg("index_open: %s", err);
    assert_int_equal(query(f->path, "PRAGMA user_version"), 3);
    assert_maps(f->idx, "http://h/x", "", sha);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_true(rs.r[0].fresh_until == INT64_MAX);
    assert_true(rs.r[0].stale_if_error == -1);
    assert_int_equal(rs.r[0].stored_at, 7);
    assert_int_equal(rs.r[0].status, 200);
    assert_string_equal(rs.r[0].headers, "");   /* it kept no fields */
    up = (struct index_response){.key = "http://h/x", .variant = "", .sha256 = sha,
                                 .headers = "", .stored_at = 900, .fresh_until = 1000,
                                 .stale_if_error = 60};
    assert_int_equal(index_update_response(f->idx, &up), 0);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 1);
    assert_true(rs.r[0].fresh_until == 1000 && rs.r[0].stale_if_error == 60
                && rs.r[0].stored_at == 900);
}

/* A version-2 index (one urls row per key, four chosen fields) becomes
 * responses of status 200 without a variant, whose header blocks hold
 * those fields. The v2 tables are created exactly as schema 2 did. */
static void version_2_is_migrated(void **state)
{
    struct fixture *f = *state;
    struct rows rs;
    const struct row *w;
    struct hdrs h;
    uint64_t objects, bytes;
    char err[512] = "";

    fresh_file(f);
    exec(f->path,
         "CREATE TABLE IF NOT EXISTS objects("
         " sha256 TEXT PRIMARY KEY NOT NULL,"
         " size INTEGER NOT NULL,"
         " created INTEGER NOT NULL,"
         " last_access INTEGER NOT NULL,"
         " hits INTEGER NOT NULL DEFAULT 0,"
         " pinned INTEGER NOT NULL DEFAULT 0,"
         " verified_by TEXT) WITHOUT ROWID;"
         "CREATE TABLE IF NOT EXISTS urls("
         " key TEXT PRIMARY KEY NOT NULL,"
         " sha256 TEXT NOT NULL REFERENCES objects(sha256) ON DELETE CASCADE,"
         " origin_url TEXT NOT NULL,"
         " content_type TEXT,"
         " last_modified INTEGER NOT NULL DEFAULT 0,"
         " origin_etag TEXT,"
         " stored_at INTEGER NOT NULL,"
         " fresh_until INTEGER NOT NULL DEFAULT 9223372036854775807,"
         " stale_if_error INTEGER NOT NULL DEFAULT -1,"
         " cache_control TEXT);"
         "CREATE INDEX IF NOT EXISTS urls_by_sha256 ON urls(sha256);"
         "CREATE INDEX IF NOT EXISTS objects_by_last_access ON objects(last_access);"
         "CREATE TABLE IF NOT EXISTS expectations("
         " key TEXT PRIMARY KEY NOT NULL,"
         " sha256 TEXT NOT NULL,"
         " size INTEGER,"
         " source TEXT);"
         "CREATE TABLE IF NOT EXISTS deployments("
         " id TEXT PRIMARY KEY NOT NULL,"
         " created INTEGER NOT NULL,"
         " body TEXT);"
         "INSERT INTO objects VALUES('" SHA_A "', 5, 1, 1, 3, 0, 'repr-digest');"
         "INSERT INTO objects VALUES('" SHA_B "', 7, 1, 1, 0, 0, NULL);"
         "INSERT INTO urls VALUES('http://h/InRelease', '" SHA_A "', 'http://o/InRelease',"
         " 'text/plain', 1700000000, '\"abc\"', 1800000000, 1800000060, 600,"
         " 'max-age=60, stale-if-error=600');"
         "INSERT INTO urls(key, sha256, origin_url, stored_at)"
         " VALUES('http://h/bare', '" SHA_B "', 'http://o/bare', 5);"
         "INSERT INTO expectations VALUES('http://h/fw', '" SHA_A "', 5, 'api');"
         "PRAGMA user_version = 2;");
    if (index_open(&f->idx, f->path, NULL, err, sizeof err) != 0)
        fail_msg("index_open: %s", err);
    assert_int_equal(query(f->path, "PRAGMA user_version"), 3);
    assert_int_equal(query(f->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'urls'"),
                     0);

    assert_maps(f->idx, "http://h/InRelease", "", SHA_A);
    assert_maps(f->idx, "http://h/bare", "", SHA_B);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 2);
    w = find_row(&rs, "http://h/InRelease", "");
    assert_non_null(w);
    assert_int_equal(w->status, 200);
    assert_string_equal(w->vary, "");
    assert_string_equal(w->origin_url, "http://o/InRelease");
    assert_int_equal(w->size, 5);
    assert_int_equal(w->stored_at, 1800000000);
    assert_int_equal(w->fresh_until, 1800000060);
    assert_int_equal(w->stale_if_error, 600);
    assert_int_equal(w->initial_age, 0);
    hdrs_init(&h);
    assert_int_equal(hdrs_parse_block(&h, w->headers, strlen(w->headers)), 0);
    assert_int_equal(h.n, 4);
    assert_non_null(hdrs_get(&h, "Content-Type"));
    assert_string_equal(hdrs_get(&h, "Content-Type"), "text/plain");
    assert_non_null(hdrs_get(&h, "Last-Modified"));
    assert_string_equal(hdrs_get(&h, "Last-Modified"), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_non_null(hdrs_get(&h, "ETag"));
    assert_string_equal(hdrs_get(&h, "ETag"), "\"abc\"");
    assert_non_null(hdrs_get(&h, "Cache-Control"));
    assert_string_equal(hdrs_get(&h, "Cache-Control"), "max-age=60, stale-if-error=600");
    hdrs_free(&h);
    /* a row that kept none of the fields gets an empty block, and the
     * defaults of its freshness columns */
    w = find_row(&rs, "http://h/bare", "");
    assert_non_null(w);
    assert_int_equal(w->status, 200);
    assert_string_equal(w->headers, "");
    assert_true(w->fresh_until == INT64_MAX);
    assert_true(w->stale_if_error == -1);
    assert_int_equal(w->stored_at, 5);

    /* the objects and expectations are kept, and the result is a plain v3
     * index: reopening it changes nothing */
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 2);
    assert_int_equal(bytes, 12);
    assert_int_equal(query(f->path, "SELECT hits FROM objects WHERE sha256 = '" SHA_A "'"), 3);
    assert_int_equal(query(f->path, "SELECT count(*) FROM expectations"), 1);
    reopen(f);
    list_rows(f->idx, &rs);
    assert_int_equal(rs.n, 2);
    /* and the cascade holds for migrated rows */
    assert_int_equal(index_drop_object(f->idx, SHA_A), 0);
    assert_unmapped(f->idx, "http://h/InRelease", "");
}

static void a_file_that_is_no_database_is_refused(void **state)
{
    struct fixture *f = *state;
    struct index *idx = NULL;
    char path[160], err[512] = "";
    FILE *fp;

    snprintf(path, sizeof path, "%s/junk.db", f->dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("this is not an SQLite database, but it is long enough to have a header\n", fp);
    fclose(fp);
    /* -2: damaged, so start-up may set it aside and begin anew */
    assert_int_equal(index_open(&idx, path, NULL, err, sizeof err), -2);
    assert_null(idx);
    assert_non_null(strstr(err, path));
}

struct writer {
    struct index *idx;
    unsigned id;
    int failures;
};

#define WRITERS 4
#define COMMITS_PER_WRITER 50

static void *write_many(void *arg)
{
    struct writer *w = arg;
    char key[64], sha[65];

    for (unsigned i = 0; i < COMMITS_PER_WRITER; i++) {
        unsigned n = w->id * 1000 + i;
        struct index_response r = {.key = key, .variant = "", .origin_url = key, .sha256 = sha,
                                   .size = 10, .status = 200, .stored_at = n,
                                   .fresh_until = INT64_MAX, .stale_if_error = -1};
        snprintf(key, sizeof key, "http://h/%u", n);
        sha_of(n, sha);
        if (index_commit_response(w->idx, &r, n, NULL, NULL) != 0)
            w->failures++;
        index_touch(w->idx, sha, n);
        if (i % 10 == 0 && index_flush_touches(w->idx) != 0)
            w->failures++;
    }
    return NULL;
}

static void concurrent_commits_all_land(void **state)
{
    struct fixture *f = *state;
    pthread_t t[WRITERS];
    struct writer w[WRITERS];
    uint64_t objects, bytes;
    char sha[65];

    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){.idx = f->idx, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
    }
    /* another thread keeps looking up while the pool writes */
    for (unsigned i = 0; i < 200; i++)
        assert_in_range(index_response_sha(f->idx, "http://h/1001", "", sha), 0, 1);
    for (unsigned i = 0; i < WRITERS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(index_flush_touches(f->idx), 0);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, WRITERS * COMMITS_PER_WRITER);
    assert_int_equal(bytes, 10 * WRITERS * COMMITS_PER_WRITER);
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"),
                     WRITERS * COMMITS_PER_WRITER);
    assert_int_equal(query(f->path, "SELECT sum(hits) FROM objects"),
                     WRITERS * COMMITS_PER_WRITER);
    sha_of(3049, sha);
    assert_maps(f->idx, "http://h/3049", "", sha);
}

static void bad_commit_is_refused(void **state)
{
    struct fixture *f = *state;
    struct index_response c = full_response("http://h/one", "2CF24DBA", 5);
    uint64_t objects, bytes;

    assert_int_equal(index_commit_response(f->idx, &c, 1, NULL, NULL), -1);
    c.sha256 = "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824";
    assert_int_equal(index_commit_response(f->idx, &c, 1, NULL, NULL), -1);  /* upper case */
    c.sha256 = SHA_A;
    c.origin_url = NULL;
    assert_int_equal(index_commit_response(f->idx, &c, 1, NULL, NULL), -1);
    c.origin_url = "http://h/one";
    c.key = NULL;
    assert_int_equal(index_commit_response(f->idx, &c, 1, NULL, NULL), -1);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 0);
    assert_int_equal(query(f->path, "SELECT count(*) FROM responses"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_creates_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(object_urls_lists_each_url_once, setup, teardown),
        cmocka_unit_test_setup_teardown(version_1_is_migrated, setup, teardown),
        cmocka_unit_test_setup_teardown(version_2_is_migrated, setup, teardown),
        cmocka_unit_test_setup_teardown(open_uses_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_then_list_returns_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(absent_fields_read_as_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(lookup_of_unknown_key_is_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_replaces_the_response_of_its_variant, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_key_holds_one_response_per_variant, setup, teardown),
        cmocka_unit_test_setup_teardown(update_response_changes_headers_and_freshness, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(drop_key_drops_every_variant, setup, teardown),
        cmocka_unit_test_setup_teardown(foreach_response_stops_when_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(foreach_expectation_lists_what_was_registered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(new_object_tells_whether_the_row_was_new, setup, teardown),
        cmocka_unit_test_setup_teardown(totals_count_objects_not_responses, setup, teardown),
        cmocka_unit_test_setup_teardown(touches_are_written_by_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(close_flushes_touches, setup, teardown),
        cmocka_unit_test_setup_teardown(touch_batch_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(drop_object_removes_its_responses, setup, teardown),
        cmocka_unit_test_setup_teardown(response_without_object_is_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(adopted_objects_are_listed_not_looked_up, setup, teardown),
        cmocka_unit_test_setup_teardown(foreach_stops_when_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(batches_adopt_and_drop_together, setup, teardown),
        cmocka_unit_test_setup_teardown(reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(a_file_that_is_no_database_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_commits_all_land, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_commit_is_refused, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
