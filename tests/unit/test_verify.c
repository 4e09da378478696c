/*
 * verify: a store built with the store and index calls, damaged the ways a
 * disk or a hand edit damages it, checked, repaired, and checked again.
 * Each test runs in a fresh mkdtemp directory removed at the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/digest.h"
#include "cache/index.h"
#include "cache/store.h"
#include "cache/verify.h"

#define MAX_SEEN 16

struct fixture {
    char dir[64];               /* cache_dir: the mkdtemp directory */
    struct store store;
    struct index *idx;
};

/* What the callbacks of one run saw. */
struct seen {
    unsigned n;
    struct verify_finding f[MAX_SEEN];
    char name[MAX_SEEN][PATH_MAX];
    char detail[MAX_SEEN][512];
    unsigned progress_calls;
    int progress_went_back;
    struct verify_progress last;
};

/* A store with one blob of every kind verify tells apart. */
struct damaged {
    char good1[65], good2[65], flipped[65], sized[65], gone[65], orphan[65];
    uint64_t file_bytes;        /* every blob file's size, added up */
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
    char err[512] = "", db[PATH_MAX];

    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/edgecache-verify-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    if (store_open(&f->store, f->dir, NULL, err, sizeof err) != 0)
        fail_msg("store_open: %s", err);
    store_index_path(&f->store, db, sizeof db);
    if (index_open(&f->idx, db, NULL, err, sizeof err) != 0)
        fail_msg("index_open: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    index_close(&f->idx);
    store_close(&f->store);
    nftw(f->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void sha256_of(const void *data, size_t len, char hex[65])
{
    struct digest d = {0};
    unsigned char bin[DIGEST_SHA256_LEN];

    assert_int_equal(digest_init(&d), 0);
    digest_update(&d, data, len);
    digest_final(&d, bin);
    digest_free(&d);
    digest_hex(bin, sizeof bin, hex);
}

/* Commits data as a blob the way a fill does; writes its digest to hex. */
static uint64_t put_blob(const struct fixture *f, const void *data, size_t len, char hex[65])
{
    char tmp[PATH_MAX];
    int fd = store_temp_create(&f->store, tmp, sizeof tmp);

    sha256_of(data, len, hex);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(store_commit(&f->store, fd, tmp, hex), 0);
    close(fd);
    return len;
}

static void put_row(const struct fixture *f, const char *key, const char *hex, uint64_t size)
{
    struct index_response r = {.key = key, .variant = "", .origin_url = key, .sha256 = hex,
                               .size = size, .status = 200, .vary = "", .headers = "",
                               .stored_at = 1000, .fresh_until = INT64_MAX,
                               .stale_if_error = -1};

    assert_int_equal(index_commit_response(f->idx, &r, 1000, "content-length", NULL), 0);
}

static void blob_path(const struct fixture *f, const char *hex, char *out, size_t len)
{
    store_blob_path(&f->store, hex, out, len);
    assert_true(out[0] != '\0');
}

static int blob_exists(const struct fixture *f, const char *hex)
{
    char path[PATH_MAX];

    blob_path(f, hex, path, sizeof path);
    return access(path, F_OK) == 0;
}

/* Inverts the byte at offset in the blob file, as a bad sector would. */
static void flip_byte(const struct fixture *f, const char *hex, off_t offset)
{
    char path[PATH_MAX];
    unsigned char b;
    int fd;

    blob_path(f, hex, path, sizeof path);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, offset), 1);
    b ^= 0xff;
    assert_int_equal(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

/* Rows in `table` whose sha256 column is hex, read straight from the file. */
static int rows_for(const struct fixture *f, const char *table, const char *hex)
{
    char db[PATH_MAX], sql[128];
    sqlite3 *conn = NULL;
    sqlite3_stmt *st = NULL;
    int n = -1;

    store_index_path(&f->store, db, sizeof db);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE sha256 = ?1", table);
    assert_int_equal(sqlite3_open_v2(db, &conn, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(conn, sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, hex, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(conn);
    return n;
}

static void record_finding(void *ctx, const struct verify_finding *f)
{
    struct seen *s = ctx;

    assert_true(s->n < MAX_SEEN);
    s->f[s->n] = *f;
    snprintf(s->name[s->n], sizeof s->name[0], "%s", f->name);
    snprintf(s->detail[s->n], sizeof s->detail[0], "%s", f->detail);
    s->f[s->n].name = s->name[s->n];
    s->f[s->n].detail = s->detail[s->n];
    s->n++;
}

static void record_progress(void *ctx, const struct verify_progress *p)
{
    struct seen *s = ctx;

    if (s->progress_calls++
        && (p->bytes_done < s->last.bytes_done || p->blobs_done < s->last.blobs_done))
        s->progress_went_back = 1;
    s->last = *p;
}

/* Runs verify; returns what it reported through the callbacks. */
static struct seen *run(const struct fixture *f, int repair, struct verify_report *r)
{
    static struct seen s;
    struct verify_options o = {.repair = repair, .on_finding = record_finding,
                               .on_progress = record_progress, .ctx = &s};

    memset(&s, 0, sizeof s);
    assert_int_equal(verify_run(&f->store, f->idx, &o, r), 0);
    return &s;
}

/* The finding about name, or NULL. */
static const struct verify_finding *finding_for(const struct seen *s, const char *name)
{
    for (unsigned i = 0; i < s->n; i++)
        if (strcmp(s->f[i].name, name) == 0)
            return &s->f[i];
    return NULL;
}

static void assert_finding(const struct seen *s, const char *name, enum verify_kind kind,
                           enum verify_repair repair)
{
    const struct verify_finding *f = finding_for(s, name);

    if (!f)
        fail_msg("no finding about %s", name);
    assert_int_equal(f->kind, kind);
    assert_int_equal(f->repair, repair);
}

/*
 * Two good blobs with rows; one whose byte was flipped after it was
 * stored; one whose row says a size one byte too large; a row whose blob
 * file is gone; a blob whose row is gone.
 */
static void build_damaged_store(const struct fixture *f, struct damaged *d)
{
    static const char flip_me[] = "firmware image that a bad sector will damage";
    char path[PATH_MAX];

    d->file_bytes = put_blob(f, "hello", 5, d->good1);
    put_row(f, "http://o/hello", d->good1, 5);
    put_row(f, "http://o/hello-again", d->good1, 5);
    d->file_bytes += put_blob(f, "world!", 6, d->good2);
    put_row(f, "http://o/world", d->good2, 6);

    d->file_bytes += put_blob(f, flip_me, strlen(flip_me), d->flipped);
    put_row(f, "http://o/flipped", d->flipped, strlen(flip_me));
    flip_byte(f, d->flipped, 9);

    d->file_bytes += put_blob(f, "sized", 5, d->sized);
    put_row(f, "http://o/sized", d->sized, 6);

    put_blob(f, "gone", 4, d->gone);
    put_row(f, "http://o/gone", d->gone, 4);
    blob_path(f, d->gone, path, sizeof path);
    assert_int_equal(unlink(path), 0);

    d->file_bytes += put_blob(f, "adopt me", 8, d->orphan);
}

/* ---- checking ----------------------------------------------------------- */

static void a_healthy_store_is_good(void **state)
{
    struct fixture *f = *state;
    struct verify_report r;
    char a[65], b[65];
    struct seen *s;

    put_blob(f, "hello", 5, a);
    put_row(f, "http://o/hello", a, 5);
    put_blob(f, "world!", 6, b);
    put_row(f, "http://o/world", b, 6);
    s = run(f, 0, &r);
    assert_int_equal(r.blobs, 2);
    assert_int_equal(r.good, 2);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.bytes, 11);
    assert_int_equal(verify_remaining(&r), 0);
    assert_int_equal(s->n, 0);
}

static void an_empty_store_is_good(void **state)
{
    struct fixture *f = *state;
    struct verify_report r;
    char summary[256];

    run(f, 0, &r);
    assert_int_equal(r.blobs, 0);
    assert_int_equal(verify_remaining(&r), 0);
    verify_summary(&r, false, summary, sizeof summary);
    assert_string_equal(summary, "verified 0 blobs (0 B): 0 good, 0 bad, 0 without index row");
}

static void every_kind_of_damage_is_reported(void **state)
{
    struct fixture *f = *state;
    struct verify_report r;
    struct damaged d;
    struct seen *s;

    build_damaged_store(f, &d);
    s = run(f, 0, &r);

    assert_int_equal(r.blobs, 6);
    assert_int_equal(r.good, 3);                /* good1, good2, orphan */
    assert_int_equal(r.bad, 3);
    assert_int_equal(r.kinds[VERIFY_DIGEST_MISMATCH], 1);
    assert_int_equal(r.kinds[VERIFY_SIZE_MISMATCH], 1);
    assert_int_equal(r.kinds[VERIFY_MISSING_BLOB], 1);
    assert_int_equal(r.kinds[VERIFY_NO_ROW], 1);
    assert_int_equal(r.kinds[VERIFY_UNREADABLE], 0);
    assert_int_equal(r.removed, 0);
    assert_int_equal(verify_remaining(&r), 3);
    assert_int_equal(r.bytes, d.file_bytes);

    assert_int_equal(s->n, 4);
    assert_finding(s, d.flipped, VERIFY_DIGEST_MISMATCH, VERIFY_NOT_REPAIRED);
    assert_finding(s, d.sized, VERIFY_SIZE_MISMATCH, VERIFY_NOT_REPAIRED);
    assert_finding(s, d.gone, VERIFY_MISSING_BLOB, VERIFY_NOT_REPAIRED);
    assert_finding(s, d.orphan, VERIFY_NO_ROW, VERIFY_NOT_REPAIRED);
    assert_null(finding_for(s, d.good1));
    assert_non_null(strstr(finding_for(s, d.sized)->detail, "6 bytes"));

    /* Checking changes nothing. */
    assert_true(blob_exists(f, d.flipped));
    assert_true(blob_exists(f, d.sized));
    assert_int_equal(rows_for(f, "objects", d.gone), 1);
    assert_int_equal(rows_for(f, "responses", d.flipped), 1);
    assert_int_equal(rows_for(f, "objects", d.orphan), 0);
}

static void the_digest_of_the_content_is_named(void **state)
{
    struct fixture *f = *state;
    static const char text[] = "firmware image that a bad sector will damage";
    char damaged_text[sizeof text], actual[65], hex[65];
    struct verify_report r;
    struct seen *s;

    put_blob(f, text, strlen(text), hex);
    put_row(f, "http://o/x", hex, strlen(text));
    flip_byte(f, hex, 0);
    memcpy(damaged_text, text, sizeof text);
    damaged_text[0] ^= (char)0xff;
    sha256_of(damaged_text, strlen(text), actual);
    s = run(f, 0, &r);
    assert_int_equal(s->n, 1);
    assert_non_null(strstr(s->f[0].detail, actual));
}

static void blobs_larger_than_a_chunk_are_hashed_whole(void **state)
{
    struct fixture *f = *state;
    size_t len = (5u << 20) / 2;                /* 2.5 MiB: three reads */
    unsigned char *data = malloc(len);
    struct verify_report r;
    char good[65], late[65];
    struct seen *s;

    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 24);
    put_blob(f, data, len, good);
    put_row(f, "http://o/big", good, len);
    data[0] ^= 1;                               /* other bytes, another blob */
    put_blob(f, data, len, late);
    put_row(f, "http://o/big2", late, len);
    flip_byte(f, late, (off_t)len - 1);         /* in the last chunk */
    free(data);

    s = run(f, 0, &r);
    assert_int_equal(r.good, 1);
    assert_int_equal(r.bad, 1);
    assert_finding(s, late, VERIFY_DIGEST_MISMATCH, VERIFY_NOT_REPAIRED);
    assert_int_equal(r.bytes, 2 * (uint64_t)len);
}

static void progress_counts_up_to_the_totals(void **state)
{
    struct fixture *f = *state;
    struct verify_report r;
    struct damaged d;
    struct seen *s;

    build_damaged_store(f, &d);
    s = run(f, 0, &r);
    assert_true(s->progress_calls >= 6);
    assert_false(s->progress_went_back);
    assert_int_equal(s->last.blobs_total, 6);
    assert_int_equal(s->last.blobs_done, 6);
    assert_int_equal(s->last.bytes_total, d.file_bytes);
    assert_int_equal(s->last.bytes_done, d.file_bytes);
}

static void entries_that_are_not_blobs_are_notes(void **state)
{
    struct fixture *f = *state;
    struct verify_report r;
    char path[PATH_MAX], hex[65], misplaced[PATH_MAX];
    struct seen *s;
    FILE *fp;

    put_blob(f, "hello", 5, hex);
    put_row(f, "http://o/hello", hex, 5);
    snprintf(path, sizeof path, "%s/blobs/README", f->dir);
    assert_non_null(fp = fopen(path, "w"));
    fclose(fp);
    /* A digest name in the wrong ab/cd directory. */
    snprintf(path, sizeof path, "%s/blobs/00", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/blobs/00/00", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(misplaced, sizeof misplaced, "blobs/00/00/%s", hex);
    snprintf(path, sizeof path, "%s/%s", f->dir, misplaced);
    assert_non_null(fp = fopen(path, "w"));
    fclose(fp);

    s = run(f, 1, &r);
    assert_int_equal(r.kinds[VERIFY_NOT_A_BLOB], 2);
    assert_int_equal(r.blobs, 1);
    assert_int_equal(r.bad, 0);
    assert_int_equal(verify_remaining(&r), 0);
    assert_finding(s, "blobs/README", VERIFY_NOT_A_BLOB, VERIFY_NOT_REPAIRED);
    assert_finding(s, misplaced, VERIFY_NOT_A_BLOB, VERIFY_NOT_REPAIRED);
    assert_int_equal(access(path, F_OK), 0);    /* left for start-up recovery */
}

static void an_unreadable_blob_is_bad_and_kept(void **state)
{
    struct fixture *f = *state;
    struct verify_report r;
    char path[PATH_MAX], hex[65];
    struct seen *s;

    if (geteuid() == 0)
        skip();                                 /* root reads any file */
    put_blob(f, "locked", 6, hex);
    put_row(f, "http://o/locked", hex, 6);
    blob_path(f, hex, path, sizeof path);
    assert_int_equal(chmod(path, 0), 0);
    s = run(f, 1, &r);
    assert_int_equal(r.kinds[VERIFY_UNREADABLE], 1);
    assert_finding(s, hex, VERIFY_UNREADABLE, VERIFY_NOT_REPAIRED);
    assert_int_equal(verify_remaining(&r), 1);
    assert_true(blob_exists(f, hex));
}

/* ---- repair ------------------------------------------------------------- */

static void repair_drops_what_is_bad_and_a_second_run_is_clean(void **state)
{
    struct fixture *f = *state;
    char sha[65];
    struct verify_report r;
    struct damaged d;
    struct seen *s;

    build_damaged_store(f, &d);
    s = run(f, 1, &r);
    assert_int_equal(r.bad, 3);
    assert_int_equal(r.removed, 3);
    assert_int_equal(r.repair_failed, 0);
    assert_int_equal(verify_remaining(&r), 0);
    assert_finding(s, d.flipped, VERIFY_DIGEST_MISMATCH, VERIFY_REMOVED);
    assert_finding(s, d.sized, VERIFY_SIZE_MISMATCH, VERIFY_REMOVED);
    assert_finding(s, d.gone, VERIFY_MISSING_BLOB, VERIFY_REMOVED);
    assert_finding(s, d.orphan, VERIFY_NO_ROW, VERIFY_NOT_REPAIRED);

    /* The bad blobs' files and rows are gone... */
    assert_false(blob_exists(f, d.flipped));
    assert_false(blob_exists(f, d.sized));
    assert_int_equal(rows_for(f, "objects", d.flipped), 0);
    assert_int_equal(rows_for(f, "responses", d.flipped), 0);
    assert_int_equal(rows_for(f, "objects", d.sized), 0);
    assert_int_equal(rows_for(f, "responses", d.sized), 0);
    assert_int_equal(rows_for(f, "objects", d.gone), 0);
    assert_int_equal(rows_for(f, "responses", d.gone), 0);
    assert_int_equal(index_response_sha(f->idx, "http://o/flipped", "", sha), 0);
    /* ...and the rest is untouched: good blobs with all their URLs, and the
     * blob without a row (the daemon adopts it). */
    assert_true(blob_exists(f, d.good1));
    assert_true(blob_exists(f, d.orphan));
    assert_int_equal(rows_for(f, "responses", d.good1), 2);
    assert_int_equal(index_response_sha(f->idx, "http://o/world", "", sha), 1);
    assert_string_equal(sha, d.good2);

    s = run(f, 0, &r);
    assert_int_equal(r.blobs, 3);
    assert_int_equal(r.good, 3);
    assert_int_equal(r.bad, 0);
    assert_int_equal(r.kinds[VERIFY_NO_ROW], 1);
    assert_int_equal(verify_remaining(&r), 0);
    assert_int_equal(s->n, 1);
}

static void a_failed_repair_leaves_the_blob_bad(void **state)
{
    struct fixture *f = *state;
    struct verify_report r;
    char hex[65], dir[PATH_MAX];
    struct seen *s;

    if (geteuid() == 0)
        skip();                                 /* root unlinks in any directory */
    put_blob(f, "flip", 4, hex);
    put_row(f, "http://o/flip", hex, 4);
    flip_byte(f, hex, 0);
    snprintf(dir, sizeof dir, "%s/blobs/%.2s/%.2s", f->dir, hex, hex + 2);
    assert_int_equal(chmod(dir, 0555), 0);
    s = run(f, 1, &r);
    chmod(dir, 0755);
    assert_int_equal(r.removed, 0);
    assert_int_equal(r.repair_failed, 1);
    assert_int_equal(verify_remaining(&r), 1);
    assert_finding(s, hex, VERIFY_DIGEST_MISMATCH, VERIFY_REPAIR_FAILED);
    assert_int_equal(rows_for(f, "objects", hex), 1);
}

/* ---- text --------------------------------------------------------------- */

static void the_summary_names_counts_and_kinds(void **state)
{
    struct verify_report r = {.blobs = 1234, .bytes = 6012954214ull, .good = 1232, .bad = 2};
    char out[256];

    (void)state;
    r.kinds[VERIFY_DIGEST_MISMATCH] = 1;
    r.kinds[VERIFY_MISSING_BLOB] = 1;
    verify_summary(&r, false, out, sizeof out);
    assert_string_equal(out, "verified 1234 blobs (5.6 GiB): 1232 good, 2 bad (1 digest"
                        " mismatch, 1 missing blob), 0 without index row");
    r.removed = 2;
    verify_summary(&r, true, out, sizeof out);
    assert_string_equal(out, "verified 1234 blobs (5.6 GiB): 1232 good, 2 bad (1 digest"
                        " mismatch, 1 missing blob), 0 without index row, removed 2");
    r.kinds[VERIFY_DIGEST_MISMATCH] = 2;
    r.kinds[VERIFY_MISSING_BLOB] = 0;
    r.kinds[VERIFY_NOT_A_BLOB] = 1;
    r.removed = 1;
    r.repair_failed = 1;
    verify_summary(&r, true, out, sizeof out);
    assert_string_equal(out, "verified 1234 blobs (5.6 GiB): 1232 good, 2 bad (2 digest"
                        " mismatches), 0 without index row, removed 1, 1 could not be"
                        " removed, 1 other entry under blobs/");
}

static void a_finding_line_names_the_blob(void **state)
{
    struct verify_finding fd = {.kind = VERIFY_DIGEST_MISMATCH, .name = "abc",
                                .detail = "content hashes to def", .repair = VERIFY_REMOVED};
    char out[256];

    (void)state;
    verify_finding_line(&fd, out, sizeof out);
    assert_string_equal(out, "abc: digest mismatch: content hashes to def (removed)");
    fd.kind = VERIFY_MISSING_BLOB;
    fd.detail = "";
    fd.repair = VERIFY_NOT_REPAIRED;
    verify_finding_line(&fd, out, sizeof out);
    assert_string_equal(out, "abc: missing blob");
}

/* A digest field's base64 is the alphabet with '=' only as its padding:
 * OpenSSL's decoder reads a '=' inside as zero bits, so "=AAA...A=" used to
 * read as a SHA-256 (found by fuzz_digest). */
static void base64_digests_are_strict(void **state)
{
    (void)state;
    unsigned char bin[DIGEST_SHA256_LEN], md5[DIGEST_MD5_LEN];
    const char *good = "LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=";
    assert_int_equal(digest_from_base64(good, bin, sizeof bin), 0);
    assert_int_equal(digest_from_base64("=Ca0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=", bin,
                                        sizeof bin), -1);
    assert_int_equal(digest_from_base64("LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm56==", bin,
                                        sizeof bin), -1);
    assert_int_equal(digest_from_base64("LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm5640", bin,
                                        sizeof bin), -1);
    assert_int_equal(digest_from_base64("LCa0a2j/xo/5m0U8HTBBNBNCLX.kg7+g+YpeiGJm564=", bin,
                                        sizeof bin), -1);
    assert_int_equal(digest_from_base64("h=aa", bin, 3), -1);
    assert_int_equal(digest_from_fields("sha-256=:=Ca0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=:",
                                        NULL, bin), -1);
    assert_int_equal(digest_md5_from_field("XUFAKrxLKna5cZ2REBfFkg==", md5), 0);
    assert_int_equal(digest_md5_from_field("XUFAKrxLKna5cZ2REBf=kg==", md5), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_healthy_store_is_good, setup, teardown),
        cmocka_unit_test_setup_teardown(an_empty_store_is_good, setup, teardown),
        cmocka_unit_test_setup_teardown(every_kind_of_damage_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(the_digest_of_the_content_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(blobs_larger_than_a_chunk_are_hashed_whole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(progress_counts_up_to_the_totals, setup, teardown),
        cmocka_unit_test_setup_teardown(entries_that_are_not_blobs_are_notes, setup, teardown),
        cmocka_unit_test_setup_teardown(an_unreadable_blob_is_bad_and_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(repair_drops_what_is_bad_and_a_second_run_is_clean,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_repair_leaves_the_blob_bad, setup, teardown),
        cmocka_unit_test(the_summary_names_counts_and_kinds),
        cmocka_unit_test(a_finding_line_names_the_blob),
        cmocka_unit_test(base64_digests_are_strict),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
