/*
 * The blob store: directories, temp files, commits, blob access and
 * start-up recovery against a real index. Each test runs in a fresh
 * directory that is removed at the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/index.h"
#include "cache/store.h"

/* SHA-256 of "hello", "world" and "gone". */
#define SHA_HELLO "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define SHA_WORLD "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"
#define SHA_GONE "283bb9deef02e6843abfb538efa1eca70801bd8a701c3f98191e123496339247"

#define ZEROS60 "000000000000000000000000000000000000000000000000000000000000"
#define ONES60 "111111111111111111111111111111111111111111111111111111111111"

struct fixture {
    char top[64];               /* the mkdtemp directory */
    char dir[128];              /* cache_dir, two levels below top */
    struct store store;
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
    char err[512] = "", db[PATH_MAX];

    assert_non_null(f);
    snprintf(f->top, sizeof f->top, "/tmp/edgecache-store-XXXXXX");
    assert_non_null(mkdtemp(f->top));
    snprintf(f->dir, sizeof f->dir, "%s/var/cache", f->top);
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
    nftw(f->top, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void path_in(const struct fixture *f, const char *rel, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", f->dir, rel);
}

static int exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static void write_file(const char *path, const char *content)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    fputs(content, fp);
    assert_int_equal(fclose(fp), 0);
}

static void mkdir_in(const struct fixture *f, const char *rel)
{
    char path[PATH_MAX];

    path_in(f, rel, path, sizeof path);
    assert_int_equal(mkdir(path, 0755), 0);
}

/* The whole content of path, in a static buffer. */
static const char *read_file(const char *path)
{
    static char buf[256];
    int fd = open(path, O_RDONLY);
    ssize_t n;

    assert_true(fd >= 0);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    return buf;
}

static unsigned count_entries(const char *dirpath)
{
    DIR *d = opendir(dirpath);
    struct dirent *de;
    unsigned n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* A temp file holding content, as a fill leaves it. Returns its fd. */
static int temp_with(const struct fixture *f, const char *content, char *path, size_t len)
{
    int fd = store_temp_create(&f->store, path, len);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    return fd;
}

static void store_blob(const struct fixture *f, const char *content, const char *hex)
{
    char tmp[PATH_MAX];
    int fd = temp_with(f, content, tmp, sizeof tmp);

    assert_int_equal(store_commit(&f->store, fd, tmp, hex), 0);
    close(fd);
}

static void index_row(const struct fixture *f, const char *key, const char *hex, uint64_t size)
{
    struct index_response r = {.key = key, .variant = "", .origin_url = key, .sha256 = hex,
                               .size = size, .status = 200, .vary = "", .headers = "",
                               .stored_at = 1000, .fresh_until = INT64_MAX,
                               .stale_if_error = -1};

    assert_int_equal(index_commit_response(f->idx, &r, 1000, NULL, NULL), 0);
}

struct listing {
    unsigned n;
    char sha[8][65];
    uint64_t size[8];
};

static int list_object(void *ctx, const char *sha256, uint64_t size)
{
    struct listing *l = ctx;

    if (l->n == 8)
        return 1;
    snprintf(l->sha[l->n], 65, "%s", sha256);
    l->size[l->n++] = size;
    return 0;
}

/* ---- directories and paths ---------------------------------------------- */

static void open_creates_directories(void **state)
{
    struct fixture *f = *state;
    struct stat st;
    char path[PATH_MAX];

    assert_int_equal(stat(f->dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    path_in(f, "blobs", path, sizeof path);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_string_equal(f->store.blobs_dir, path);
    path_in(f, "tmp", path, sizeof path);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_string_equal(f->store.tmp_dir, path);
    store_index_path(&f->store, path, sizeof path);
    assert_non_null(strstr(path, "/var/cache/index.db"));
    assert_true(exists(path));
}

static void open_again_keeps_what_is_there(void **state)
{
    struct fixture *f = *state;
    struct store again;
    char err[512] = "", blob[PATH_MAX];

    store_blob(f, "hello", SHA_HELLO);
    assert_int_equal(store_open(&again, f->dir, NULL, err, sizeof err), 0);
    store_blob_path(&again, SHA_HELLO, blob, sizeof blob);
    assert_string_equal(read_file(blob), "hello");
    store_close(&again);
    assert_null(again.dir);
}

static void open_names_the_path_it_cannot_create(void **state)
{
    struct fixture *f = *state;
    struct store s;
    char file[256], dir[PATH_MAX], err[512] = "";

    snprintf(file, sizeof file, "%s/plainfile", f->top);
    write_file(file, "x");
    snprintf(dir, sizeof dir, "%s/sub/cache", file);
    assert_int_equal(store_open(&s, dir, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, file));
    assert_non_null(strstr(err, strerror(ENOTDIR)));
    assert_null(s.dir);
}

static void blob_path_is_sharded_by_the_first_four_digits(void **state)
{
    struct fixture *f = *state;
    char path[PATH_MAX], want[PATH_MAX];

    store_blob_path(&f->store, SHA_HELLO, path, sizeof path);
    snprintf(want, sizeof want, "%s/blobs/2c/f2/%s", f->dir, SHA_HELLO);
    assert_string_equal(path, want);
    store_blob_path(&f->store, "../../etc/passwd", path, sizeof path);
    assert_string_equal(path, "");
    store_blob_path(&f->store, "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
                    path, sizeof path);
    assert_string_equal(path, "");
}

/* ---- temp files and commits --------------------------------------------- */

static void temp_files_live_under_tmp(void **state)
{
    struct fixture *f = *state;
    char path[PATH_MAX], prefix[PATH_MAX];
    struct stat st;
    int fd = store_temp_create(&f->store, path, sizeof path);

    assert_true(fd >= 0);
    snprintf(prefix, sizeof prefix, "%s/tmp/fill-", f->dir);
    assert_memory_equal(path, prefix, strlen(prefix));
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    assert_int_equal(store_temp_create(&f->store, path, 10), -1);
    assert_int_equal(errno, ENAMETOOLONG);
}

static void commit_moves_the_temp_file_into_place(void **state)
{
    struct fixture *f = *state;
    char tmp[PATH_MAX], blob[PATH_MAX], back[8] = "";
    int fd = temp_with(f, "hello", tmp, sizeof tmp);
    uint64_t size = 0;
    int rfd;

    assert_int_equal(store_commit(&f->store, fd, tmp, SHA_HELLO), 0);
    assert_false(exists(tmp));
    store_blob_path(&f->store, SHA_HELLO, blob, sizeof blob);
    assert_string_equal(read_file(blob), "hello");
    /* the fill's fd still reads the same inode */
    assert_int_equal(pread(fd, back, 5, 0), 5);
    assert_string_equal(back, "hello");
    close(fd);

    rfd = store_blob_open(&f->store, SHA_HELLO, &size);
    assert_true(rfd >= 0);
    assert_int_equal(size, 5);
    assert_true(fcntl(rfd, F_GETFD) & FD_CLOEXEC);
    close(rfd);
    path_in(f, "tmp", tmp, sizeof tmp);
    assert_int_equal(count_entries(tmp), 0);
}

static void commit_of_a_stored_digest_drops_the_temp_file(void **state)
{
    struct fixture *f = *state;
    char tmp[PATH_MAX], blob[PATH_MAX], shard[PATH_MAX];
    struct stat before, after;
    int fd;

    store_blob(f, "hello", SHA_HELLO);
    store_blob_path(&f->store, SHA_HELLO, blob, sizeof blob);
    assert_int_equal(stat(blob, &before), 0);

    fd = temp_with(f, "hello", tmp, sizeof tmp);
    assert_int_equal(store_commit(&f->store, fd, tmp, SHA_HELLO), 0);
    close(fd);
    assert_false(exists(tmp));
    assert_int_equal(stat(blob, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);      /* readers keep their inode */
    path_in(f, "blobs/2c/f2", shard, sizeof shard);
    assert_int_equal(count_entries(shard), 1);
    path_in(f, "tmp", tmp, sizeof tmp);
    assert_int_equal(count_entries(tmp), 0);
}

/* A commit that cannot complete leaves the temp file for the caller to
 * discard and nothing under blobs/. */
static void failed_commit_leaves_nothing_under_blobs(void **state)
{
    struct fixture *f = *state;
    char tmp[PATH_MAX], in_the_way[PATH_MAX], blob[PATH_MAX];
    int fd = temp_with(f, "hello", tmp, sizeof tmp);

    assert_int_equal(store_commit(&f->store, fd, tmp, "not-a-digest"), -EINVAL);
    path_in(f, "blobs/2c", in_the_way, sizeof in_the_way);
    write_file(in_the_way, "a file where a directory belongs");
    assert_int_equal(store_commit(&f->store, fd, tmp, SHA_HELLO), -ENOTDIR);
    close(fd);
    assert_true(exists(tmp));
    store_blob_path(&f->store, SHA_HELLO, blob, sizeof blob);
    assert_false(exists(blob));
    store_temp_discard(&f->store, tmp);
    assert_false(exists(tmp));
}

static void temp_discard_removes_the_file(void **state)
{
    struct fixture *f = *state;
    char tmp[PATH_MAX];
    int fd = temp_with(f, "partial", tmp, sizeof tmp);

    close(fd);
    assert_true(exists(tmp));
    store_temp_discard(&f->store, tmp);
    assert_false(exists(tmp));
    store_temp_discard(&f->store, tmp);         /* already gone: harmless */
    path_in(f, "tmp", tmp, sizeof tmp);
    assert_int_equal(count_entries(tmp), 0);
}

/* ---- blobs -------------------------------------------------------------- */

static void blob_open_reports_size_and_absence(void **state)
{
    struct fixture *f = *state;
    uint64_t size = 0;
    char buf[8] = "";
    int fd;

    store_blob(f, "world", SHA_WORLD);
    fd = store_blob_open(&f->store, SHA_WORLD, &size);
    assert_true(fd >= 0);
    assert_int_equal(size, 5);
    assert_int_equal(read(fd, buf, sizeof buf), 5);
    assert_string_equal(buf, "world");
    close(fd);

    errno = 0;
    assert_int_equal(store_blob_open(&f->store, SHA_HELLO, &size), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(store_blob_open(&f->store, "../index.db", &size), -1);
    assert_int_equal(errno, EINVAL);
}

static void blob_remove_keeps_open_readers(void **state)
{
    struct fixture *f = *state;
    uint64_t size = 0;
    char buf[8] = "";
    int fd;

    store_blob(f, "world", SHA_WORLD);
    fd = store_blob_open(&f->store, SHA_WORLD, &size);
    assert_true(fd >= 0);
    assert_int_equal(store_blob_remove(&f->store, SHA_WORLD), 0);
    assert_int_equal(store_blob_open(&f->store, SHA_WORLD, &size), -1);
    assert_int_equal(read(fd, buf, sizeof buf), 5);
    assert_string_equal(buf, "world");
    close(fd);
    assert_int_equal(store_blob_remove(&f->store, SHA_WORLD), -ENOENT);
    assert_int_equal(store_blob_remove(&f->store, "../index.db"), -EINVAL);
}

/* ---- recovery ----------------------------------------------------------- */

/* The state a crash can leave, plus what an operator may have dropped in:
 *  - "hello": blob and index row (healthy);
 *  - "world": blob without a row (the row's commit was lost);
 *  - "gone":  row without a blob (the blob was deleted by hand);
 *  - temp files of interrupted fills, and a stray directory under tmp/;
 *  - misnamed things under blobs/. */
static void make_crashed_store(const struct fixture *f)
{
    char path[PATH_MAX], target[PATH_MAX], tmp[PATH_MAX];

    store_blob(f, "hello", SHA_HELLO);
    index_row(f, "http://h/hello", SHA_HELLO, 5);
    store_blob(f, "world", SHA_WORLD);
    index_row(f, "http://h/gone", SHA_GONE, 4);

    close(temp_with(f, "half a fi", tmp, sizeof tmp));
    close(temp_with(f, "", tmp, sizeof tmp));
    mkdir_in(f, "tmp/stray");
    path_in(f, "tmp/stray/file", path, sizeof path);
    write_file(path, "x");

    path_in(f, "blobs/2c/f2/notes.txt", path, sizeof path);
    write_file(path, "not a blob");
    path_in(f, "blobs/2c/f2/" SHA_WORLD, path, sizeof path);     /* wrong shard */
    write_file(path, "world");
    path_in(f, "blobs/2c/f2/2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
            path, sizeof path);                                 /* upper case */
    write_file(path, "hello");
    mkdir_in(f, "blobs/ab");
    mkdir_in(f, "blobs/ab/cd");
    store_blob_path(&f->store, SHA_HELLO, target, sizeof target);
    path_in(f, "blobs/ab/cd/abcd" ZEROS60,
            path, sizeof path);                                 /* a symlink */
    assert_int_equal(symlink(target, path), 0);
    path_in(f, "blobs/ab/cd/abcd" ONES60,
            path, sizeof path);                                 /* a directory */
    assert_int_equal(mkdir(path, 0755), 0);
    mkdir_in(f, "blobs/zz");
    path_in(f, "blobs/zz/file", path, sizeof path);
    write_file(path, "x");
    path_in(f, "blobs/README", path, sizeof path);
    write_file(path, "x");
    path_in(f, "blobs/ef", path, sizeof path);                  /* a file, not a shard */
    write_file(path, "x");
}

/* What a healthy store looks like after recovering make_crashed_store(). */
static void assert_recovered(const struct fixture *f)
{
    struct listing l = {0};
    char path[PATH_MAX], sha[65];

    assert_int_equal(index_response_sha(f->idx, "http://h/hello", "", sha), 1);
    assert_string_equal(sha, SHA_HELLO);
    assert_int_equal(index_response_sha(f->idx, "http://h/gone", "", sha), 0);

    /* the adopted blob is reachable by hash, not by any key */
    assert_int_equal(index_foreach_object(f->idx, list_object, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.sha[0], SHA_HELLO);
    assert_int_equal(l.size[0], 5);
    assert_string_equal(l.sha[1], SHA_WORLD);
    assert_int_equal(l.size[1], 5);

    store_blob_path(&f->store, SHA_HELLO, path, sizeof path);
    assert_string_equal(read_file(path), "hello");
    store_blob_path(&f->store, SHA_WORLD, path, sizeof path);
    assert_string_equal(read_file(path), "world");

    path_in(f, "tmp", path, sizeof path);
    assert_int_equal(count_entries(path), 0);
    path_in(f, "blobs", path, sizeof path);
    assert_int_equal(count_entries(path), 3);                   /* 2c 48 ab */
    path_in(f, "blobs/2c/f2", path, sizeof path);
    assert_int_equal(count_entries(path), 1);
    path_in(f, "blobs/ab/cd", path, sizeof path);
    assert_int_equal(count_entries(path), 0);
}

static void recover_repairs_a_crashed_store(void **state)
{
    struct fixture *f = *state;
    unsigned temps = 99, dropped = 99, adopted = 99;

    make_crashed_store(f);
    assert_int_equal(store_recover(&f->store, f->idx, &temps, &dropped, &adopted), 0);
    assert_int_equal(temps, 3);
    assert_int_equal(dropped, 1);
    assert_int_equal(adopted, 1);
    assert_recovered(f);
}

static void recover_twice_changes_nothing_more(void **state)
{
    struct fixture *f = *state;
    unsigned temps = 99, dropped = 99, adopted = 99;

    make_crashed_store(f);
    assert_int_equal(store_recover(&f->store, f->idx, NULL, NULL, NULL), 0);
    assert_int_equal(store_recover(&f->store, f->idx, &temps, &dropped, &adopted), 0);
    assert_int_equal(temps, 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(adopted, 0);
    assert_recovered(f);
}

/* The index file lost (deleted by hand): every blob comes back by hash. */
static void recover_adopts_every_blob_into_a_new_index(void **state)
{
    struct fixture *f = *state;
    char db[PATH_MAX], err[512] = "", hex[65];
    unsigned adopted = 0, n = 300;
    uint64_t objects = 0, bytes = 0;

    for (unsigned i = 0; i < n; i++) {
        char content[16], tmp[PATH_MAX];
        int fd;
        /* names need not match contents for the store, only the shape */
        snprintf(content, sizeof content, "blob %u", i);
        for (int j = 0; j < 8; j++)
            snprintf(hex + 8 * j, 9, "%08x", i * 2654435761u + (unsigned)j);
        fd = temp_with(f, content, tmp, sizeof tmp);
        assert_int_equal(store_commit(&f->store, fd, tmp, hex), 0);
        close(fd);
    }
    index_close(&f->idx);
    store_index_path(&f->store, db, sizeof db);
    assert_int_equal(unlink(db), 0);
    if (index_open(&f->idx, db, NULL, err, sizeof err) != 0)
        fail_msg("index_open: %s", err);

    assert_int_equal(store_recover(&f->store, f->idx, NULL, NULL, &adopted), 0);
    assert_int_equal(adopted, n);
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, n);
    assert_int_equal(bytes, 10 * 6 + 90 * 7 + 200 * 8);         /* "blob 0".."blob 299" */
}

/* The daemon's two parts: tmp/ at start, then the walk while it serves,
 * which lists what it changed for the catalog; a cancelled walk stops. */
static void reconcile_lists_what_it_changed(void **state)
{
    struct fixture *f = *state;
    struct store_reconciled r;
    unsigned temps = 99;

    make_crashed_store(f);
    assert_int_equal(store_clear_tmp(&f->store, &temps), 0);
    assert_int_equal(temps, 3);
    assert_int_equal(store_reconcile(&f->store, f->idx, NULL, &r), 0);
    assert_int_equal(r.rows_dropped, 1);
    assert_int_equal(r.n_dropped, 1);
    assert_string_equal(r.dropped[0].sha256, SHA_GONE);
    assert_true(r.dropped[0].seq > 0);
    assert_int_equal(r.blobs_adopted, 1);
    assert_int_equal(r.n_adopted, 1);
    assert_string_equal(r.adopted[0].sha256, SHA_WORLD);
    assert_int_equal(r.adopted[0].size, 5);
    store_reconciled_free(&r);
    assert_recovered(f);

    /* again: nothing to change */
    assert_int_equal(store_reconcile(&f->store, f->idx, NULL, &r), 0);
    assert_int_equal(r.n_dropped + r.n_adopted, 0);
    store_reconciled_free(&r);

    /* cancelled at once: it stops, and changes nothing */
    atomic_bool cancel = true;
    index_row(f, "http://h/gone2", SHA_GONE, 4);
    assert_int_not_equal(store_reconcile(&f->store, f->idx, &cancel, &r), 0);
    store_reconciled_free(&r);
    uint64_t objects = 0, bytes = 0;
    assert_int_equal(index_totals(f->idx, &objects, &bytes), 0);
    assert_int_equal(objects, 3);
}

static void recover_of_an_empty_store_does_nothing(void **state)
{
    struct fixture *f = *state;
    unsigned temps = 99, dropped = 99, adopted = 99;

    assert_int_equal(store_recover(&f->store, f->idx, &temps, &dropped, &adopted), 0);
    assert_int_equal(temps + dropped + adopted, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_creates_directories, setup, teardown),
        cmocka_unit_test_setup_teardown(open_again_keeps_what_is_there, setup, teardown),
        cmocka_unit_test_setup_teardown(open_names_the_path_it_cannot_create, setup, teardown),
        cmocka_unit_test_setup_teardown(blob_path_is_sharded_by_the_first_four_digits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(temp_files_live_under_tmp, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_moves_the_temp_file_into_place, setup, teardown),
        cmocka_unit_test_setup_teardown(commit_of_a_stored_digest_drops_the_temp_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(failed_commit_leaves_nothing_under_blobs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(temp_discard_removes_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(blob_open_reports_size_and_absence, setup, teardown),
        cmocka_unit_test_setup_teardown(blob_remove_keeps_open_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(recover_repairs_a_crashed_store, setup, teardown),
        cmocka_unit_test_setup_teardown(recover_twice_changes_nothing_more, setup, teardown),
        cmocka_unit_test_setup_teardown(recover_adopts_every_blob_into_a_new_index, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(reconcile_lists_what_it_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(recover_of_an_empty_store_does_nothing, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
