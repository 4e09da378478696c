/*
 * The SQLite index: schema, commits and lookups, access times, drops,
 * reopening, refusing a newer schema, and concurrent commits. Each test
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

static struct index_commit full_commit(const char *key, const char *sha, uint64_t size)
{
    struct index_commit c = {
        .key = key, .origin_url = "https://a.blob.core.windows.net/c/fw.swu?sig=x",
        .sha256 = sha, .size = size, .content_type = "application/octet-stream",
        .origin_etag = "\"0x8DC\"", .last_modified = 1700000000, .now = 1800000000,
        .verified_by = "repr-digest",
    };
    return c;
}

static void commit_ok(struct index *idx, const struct index_commit *c, int *new_object)
{
    assert_int_equal(index_commit_object(idx, c, new_object), 0);
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
    assert_int_equal(query(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(query(f->path, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                                    " AND name IN ('objects', 'urls', 'expectations',"
                                    " 'deployments')"), 4);
    assert_int_equal(query(f->path, "SELECT count(*) FROM pragma_table_info('objects')"
                                    " WHERE name IN ('sha256', 'size', 'created',"
                                    " 'last_access', 'hits', 'pinned', 'verified_by')"), 7);
    reopen(f);
}

static void open_uses_wal(void **state)
{
    struct fixture *f = *state;
    struct index_commit c = full_commit("http://h/a", SHA_A, 5);

    commit_ok(f->idx, &c, NULL);
    assert_int_equal(access(f->path, F_OK), 0);
    {
        char wal[160];
        snprintf(wal, sizeof wal, "%s-wal", f->path);
        assert_int_equal(access(wal, F_OK), 0);
    }
}

static void commit_then_lookup_returns_every_field(void **state)
{
    struct fixture *f = *state;
    struct index_commit c = full_commit("https://a.blob.core.windows.net/c/fw.swu", SHA_A, 5);
    struct index_entry e;

    commit_ok(f->idx, &c, NULL);
    assert_int_equal(index_lookup(f->idx, c.key, &e), 1);
    assert_string_equal(e.sha256, SHA_A);
    assert_int_equal(e.size, 5);
    assert_string_equal(e.origin_url, c.origin_url);
    assert_string_equal(e.content_type, "application/octet-stream");
    assert_string_equal(e.origin_etag, "\"0x8DC\"");
    assert_int_equal(e.last_modified, 1700000000);
    assert_int_equal(e.stored_at, 1800000000);
    index_entry_free(&e);
    assert_null(e.origin_url);
}

static void lookup_returns_nulls_as_nulls(void **state)
{
    struct fixture *f = *state;
    struct index_commit c = {.key = "http://h/b", .origin_url = "http://h/b",
                             .sha256 = SHA_B, .size = 0, .now = 42};
    struct index_entry e;

    commit_ok(f->idx, &c, NULL);
    assert_int_equal(index_lookup(f->idx, "http://h/b", &e), 1);
    assert_string_equal(e.sha256, SHA_B);
    assert_int_equal(e.size, 0);
    assert_null(e.content_type);
    assert_null(e.origin_etag);
    assert_int_equal(e.last_modified, 0);
    assert_int_equal(e.stored_at, 42);
    index_entry_free(&e);
}

static void lookup_of_unknown_key_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct index_entry e;

    assert_int_equal(index_lookup(f->idx, "http://h/none", &e), 0);
    assert_null(e.origin_url);
}

static void commit_replaces_the_url_row(void **state)
{
    struct fixture *f = *state;
    struct index_commit c1 = full_commit("http://h/InRelease", SHA_A, 5);
    struct index_commit c2 = {.key = "http://h/InRelease", .origin_url = "http://h/InRelease",
                              .sha256 = SHA_B, .size = 9, .content_type = "text/plain",
                              .now = 1900000000};
    struct index_entry e;
    uint64_t objects, bytes;

    commit_ok(f->idx, &c1, NULL);
    commit_ok(f->idx, &c2, NULL);
    assert_int_equal(index_lookup(f->idx, "http://h/InRelease", &e), 1);
    assert_string_equal(e.sha256, SHA_B);
    assert_int_equal(e.size, 9);
    assert_string_equal(e.content_type, "text/plain");
    assert_null(e.origin_etag);
    assert_int_equal(e.stored_at, 1900000000);
    index_entry_free(&e);
    /* the old blob stays indexed (reachable by hash) until evicted */
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 2);
    assert_int_equal(query(f->path, "SELECT count(*) FROM urls"), 1);
}

static void new_object_tells_whether_the_row_was_new(void **state)
{
    struct fixture *f = *state;
    struct index_commit c1 = full_commit("http://h/one", SHA_A, 5);
    struct index_commit c2 = full_commit("http://h/two", SHA_A, 5);
    struct index_commit c3 = full_commit("http://h/three", SHA_B, 7);
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

static void totals_count_objects_not_urls(void **state)
{
    struct fixture *f = *state;
    struct index_commit c1 = full_commit("http://h/one", SHA_A, 5);
    struct index_commit c2 = full_commit("http://h/two", SHA_A, 5);
    struct index_commit c3 = full_commit("http://h/three", SHA_B, 1000000);
    uint64_t objects = 99, bytes = 99;

    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 0);
    assert_int_equal(bytes, 0);
    commit_ok(f->idx, &c1, NULL);
    commit_ok(f->idx, &c2, NULL);
    commit_ok(f->idx, &c3, NULL);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 2);
    assert_int_equal(bytes, 1000005);
}

static void touches_are_written_by_flush(void **state)
{
    struct fixture *f = *state;
    struct index_commit c = full_commit("http://h/a", SHA_A, 5);

    c.now = 100;
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
    struct index_commit c = full_commit("http://h/a", SHA_A, 5);

    c.now = 100;
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

static void drop_object_removes_its_urls(void **state)
{
    struct fixture *f = *state;
    struct index_commit c1 = full_commit("http://h/one", SHA_A, 5);
    struct index_commit c2 = full_commit("http://h/two", SHA_A, 5);
    struct index_commit c3 = full_commit("http://h/three", SHA_B, 7);
    struct index_entry e;
    uint64_t objects, bytes;

    commit_ok(f->idx, &c1, NULL);
    commit_ok(f->idx, &c2, NULL);
    commit_ok(f->idx, &c3, NULL);
    assert_int_equal(index_drop_object(f->idx, SHA_A), 0);
    assert_int_equal(index_lookup(f->idx, "http://h/one", &e), 0);
    assert_int_equal(index_lookup(f->idx, "http://h/two", &e), 0);
    assert_int_equal(index_lookup(f->idx, "http://h/three", &e), 1);
    index_entry_free(&e);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 1);
    assert_int_equal(bytes, 7);
    assert_int_equal(query(f->path, "SELECT count(*) FROM urls"), 1);
    /* dropping what is not there is not an error */
    assert_int_equal(index_drop_object(f->idx, SHA_A), 0);
}

/* A urls row whose objects row is gone (a database edited by hand) reads
 * as not stored. */
static void url_without_object_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct index_commit c = full_commit("http://h/one", SHA_A, 5);
    struct index_entry e;

    commit_ok(f->idx, &c, NULL);
    exec(f->path, "PRAGMA foreign_keys = OFF; DELETE FROM objects;");
    assert_int_equal(query(f->path, "SELECT count(*) FROM urls"), 1);
    assert_int_equal(index_lookup(f->idx, "http://h/one", &e), 0);
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
    struct index_commit c = full_commit("http://h/one", SHA_B, 7);
    struct listing l = {0};
    struct index_entry e;
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

    /* a fill of the same bytes later maps a key to it and records its check */
    c = full_commit("http://h/two", SHA_A, 5);
    commit_ok(f->idx, &c, &fresh);
    assert_int_equal(fresh, 0);
    assert_int_equal(index_lookup(f->idx, "http://h/two", &e), 1);
    index_entry_free(&e);
    assert_int_equal(query(f->path, "SELECT count(*) FROM objects WHERE verified_by ="
                                    " 'repr-digest'"), 2);
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
    struct index_commit c = full_commit("http://h/one", SHA_A, 5);
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
    assert_int_equal(query(f->path, "SELECT count(*) FROM urls"), 0);
}

static void reopen_keeps_data(void **state)
{
    struct fixture *f = *state;
    struct index_commit c = full_commit("http://h/one", SHA_A, 5);
    struct index_entry e;
    uint64_t objects, bytes;

    commit_ok(f->idx, &c, NULL);
    reopen(f);
    assert_int_equal(index_lookup(f->idx, "http://h/one", &e), 1);
    assert_string_equal(e.sha256, SHA_A);
    assert_string_equal(e.origin_etag, "\"0x8DC\"");
    index_entry_free(&e);
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
    exec(f->path, "PRAGMA user_version = 3");
    assert_int_equal(index_open(&idx, f->path, NULL, err, sizeof err), -1);
    assert_null(idx);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, "version 3"));
    /* the file is left as it was */
    assert_int_equal(query(f->path, "PRAGMA user_version"), 3);
}

/* A version-1 index (before freshness) is migrated in place: its rows keep
 * being served as immutable. */
static void version_1_is_migrated(void **state)
{
    struct fixture *f = *state;
    struct index_entry e;
    char err[512] = "";
    static const char sha[] = "1111111111111111111111111111111111111111111111111111111111111111";

    index_close(&f->idx);
    unlink(f->path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     NULL), SQLITE_OK);
    sqlite3_close(db);
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
    assert_int_equal(index_open(&f->idx, f->path, NULL, err, sizeof err), 0);
    assert_int_equal(query(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(index_lookup(f->idx, "http://h/x", &e), 1);
    assert_string_equal(e.sha256, sha);
    assert_true(e.fresh_until == INT64_MAX);
    assert_true(e.stale_if_error == -1);
    assert_int_equal(e.stored_at, 7);
    index_entry_free(&e);
    assert_int_equal(index_refresh_url(f->idx, "http://h/x", 1000, 60, 900), 0);
    assert_int_equal(index_lookup(f->idx, "http://h/x", &e), 1);
    assert_true(e.fresh_until == 1000 && e.stale_if_error == 60 && e.stored_at == 900);
    index_entry_free(&e);
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
    assert_int_equal(index_open(&idx, path, NULL, err, sizeof err), -1);
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
        struct index_commit c = {.key = key, .origin_url = key, .sha256 = sha,
                                 .size = 10, .now = n};
        snprintf(key, sizeof key, "http://h/%u", n);
        sha_of(n, sha);
        if (index_commit_object(w->idx, &c, NULL) != 0)
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
    struct index_entry e;

    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){.idx = f->idx, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
    }
    /* the loop thread keeps looking up while the pool writes */
    for (unsigned i = 0; i < 200; i++) {
        assert_in_range(index_lookup(f->idx, "http://h/1001", &e), 0, 1);
        index_entry_free(&e);
    }
    for (unsigned i = 0; i < WRITERS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(index_flush_touches(f->idx), 0);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, WRITERS * COMMITS_PER_WRITER);
    assert_int_equal(bytes, 10 * WRITERS * COMMITS_PER_WRITER);
    assert_int_equal(query(f->path, "SELECT count(*) FROM urls"), WRITERS * COMMITS_PER_WRITER);
    assert_int_equal(query(f->path, "SELECT sum(hits) FROM objects"),
                     WRITERS * COMMITS_PER_WRITER);
    assert_int_equal(index_lookup(f->idx, "http://h/3049", &e), 1);
    index_entry_free(&e);
}

static void bad_commit_is_refused(void **state)
{
    struct fixture *f = *state;
    struct index_commit c = full_commit("http://h/one", "2CF24DBA", 5);
    uint64_t objects, bytes;

    assert_int_equal(index_commit_object(f->idx, &c, NULL), -1);
    c.sha256 = SHA_A;
    c.origin_url = NULL;
    assert_int_equal(index_commit_object(f->idx, &c, NULL), -1);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_creates_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(version_1_is_migrated, setup, teardown),
        cmocka_unit_test_setup_teardown(open_uses_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_then_lookup_returns_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(lookup_returns_nulls_as_nulls, setup, teardown),
        cmocka_unit_test_setup_teardown(lookup_of_unknown_key_is_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_replaces_the_url_row, setup, teardown),
        cmocka_unit_test_setup_teardown(new_object_tells_whether_the_row_was_new, setup, teardown),
        cmocka_unit_test_setup_teardown(totals_count_objects_not_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(touches_are_written_by_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(close_flushes_touches, setup, teardown),
        cmocka_unit_test_setup_teardown(touch_batch_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(drop_object_removes_its_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(url_without_object_is_not_found, setup, teardown),
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
