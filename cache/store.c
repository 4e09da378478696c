/*
 * store — the blob files under cache_dir (cache/store.h).
 *
 * A blob reaches its name in four steps, each durable before the next:
 * the fill's temp file is fsynced; blobs/ab and blobs/ab/cd are created
 * (their parents fsynced when they are new); the temp file is renamed onto
 * the blob's name (atomic: the name shows either nothing or every byte);
 * the directory holding the blob is fsynced so the name survives a power
 * cut. Only then does the caller write the index row, so a row never names
 * a blob that a crash could take away, and a blob whose row was lost is
 * adopted at the next start.
 *
 * Recovery walks blobs/ once, keeping every well-named regular file in an
 * array sorted by digest, then walks the index once, finding each row's
 * blob by binary search: O(n log n) for n blobs and rows. Rows without a
 * blob are remembered during the index walk and dropped after it (the walk
 * holds the index's write connection).
 */
#include "cache/store.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/index.h"

#define HEX_LEN 64
#define RECOVER_BATCH 1024              /* index rows per transaction */

struct store_sync {
    pthread_mutex_t lock;
    uint64_t seq;
};

/* A well-named blob found under blobs/. */
struct found_blob {
    char hex[HEX_LEN + 1];
    bool has_row;
    uint64_t size;
    int64_t mtime;
};

/* What one store_recover() run has seen and done. */
struct recovery {
    const struct store *s;
    struct found_blob *blobs;           /* owned, sorted by hex after the walk */
    size_t n_blobs, cap_blobs;
    char (*orphans)[HEX_LEN + 1];       /* owned: rows without a blob */
    size_t n_orphans, cap_orphans;
    bool out_of_memory;
    bool live;                          /* the daemon serves meanwhile: check again */
    const atomic_bool *cancel;          /* may be NULL */
    uint64_t *orphan_seq;               /* live: the removal's number, 0 if kept */
    bool *adopted;                      /* live: per blob, adopted by this run */
    unsigned temps_removed;
    unsigned misnamed_removed;
    unsigned rows_dropped;
    unsigned blobs_adopted;
};

/* Table of contents. */
static char *path_join(const char *dir, const char *name);
static int mkdir_p(const char *path, char *err, size_t errlen);
static int mkdir_one(const char *path, char *err, size_t errlen);
static int check_writable(const char *path, char *err, size_t errlen);
static bool is_lower_hex(const char *s, size_t len);
static int commit_failed(const struct store *s, const char *tmp_path, const char *blob,
                         const char *step, int rc);
static int ensure_dir(const char *parent, const char *path);
static int fsync_dir(const char *path);
static int remove_entry(int dir_fd, const char *name);
static int remove_children(int fd);
static int clear_tmp(struct recovery *r);
static int walk_blobs(struct recovery *r);
static int walk_level(struct recovery *r, int fd, const char *dirpath,
                      const char *prefix, int depth);
static int consider_dir(struct recovery *r, int dir_fd, const char *dirpath,
                        const char *name, const char *prefix, int depth);
static int consider_blob(struct recovery *r, int dir_fd, const char *dirpath,
                         const char *name, const char *prefix);
static void remove_misnamed(struct recovery *r, int dir_fd, const char *dirpath,
                            const char *name);
static int add_blob(struct recovery *r, const char *hex, const struct stat *st);
static int compare_blobs(const void *a, const void *b);
static int match_row(void *ctx, const char *sha256, uint64_t size);
static int reconcile(struct recovery *r, struct index *idx);
static int drop_orphans(struct recovery *r, struct index *idx);
static int adopt_unindexed(struct recovery *r, struct index *idx);
static bool blob_still_there(const struct recovery *r, const struct found_blob *b);
static int drop_orphans_live(struct recovery *r, struct index *idx);

/* ---- open and paths ----------------------------------------------------- */

int store_open(struct store *s, const char *cache_dir, const struct logger *log,
               char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->log = log;
    s->sync = calloc(1, sizeof *s->sync);
    if (s->sync)
        pthread_mutex_init(&s->sync->lock, NULL);
    s->dir = strdup(cache_dir);
    s->blobs_dir = path_join(cache_dir, "blobs");
    s->tmp_dir = path_join(cache_dir, "tmp");
    if (!s->dir || !s->blobs_dir || !s->tmp_dir || !s->sync) {
        snprintf(err, errlen, "cache_dir %s: out of memory", cache_dir);
        store_close(s);
        return -1;
    }
    if (mkdir_p(s->dir, err, errlen) || mkdir_one(s->blobs_dir, err, errlen)
        || mkdir_one(s->tmp_dir, err, errlen)
        || check_writable(s->blobs_dir, err, errlen)
        || check_writable(s->tmp_dir, err, errlen)) {
        store_close(s);
        return -1;
    }
    return 0;
}

void store_close(struct store *s)
{
    if (s->sync) {
        pthread_mutex_destroy(&s->sync->lock);
        free(s->sync);
        s->sync = NULL;
    }
    free(s->dir);
    free(s->blobs_dir);
    free(s->tmp_dir);
    s->dir = s->blobs_dir = s->tmp_dir = NULL;
}

void store_index_path(const struct store *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/index.db", s->dir);
}

void store_blob_path(const struct store *s, const char *hex, char *out, size_t outlen)
{
    if (!is_lower_hex(hex, HEX_LEN)) {
        if (outlen)
            out[0] = '\0';
        return;
    }
    snprintf(out, outlen, "%s/%.2s/%.2s/%s", s->blobs_dir, hex, hex + 2, hex);
}

static char *path_join(const char *dir, const char *name)
{
    char *p = NULL;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

/* Creates path and its missing parents, like mkdir -p. */
static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof buf) {
        snprintf(err, errlen, "cache_dir '%s': %s", path,
                 len ? "path too long" : "empty path");
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/' || p[-1] == '/')
            continue;
        *p = '\0';
        int rc = mkdir_one(buf, err, errlen);
        *p = '/';
        if (rc)
            return -1;
    }
    return mkdir_one(buf, err, errlen);
}

/* mkdir path (mode 0755) unless a directory of that name exists. */
static int mkdir_one(const char *path, char *err, size_t errlen)
{
    struct stat st;

    if (mkdir(path, 0755) == 0)
        return 0;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    if (errno == EEXIST)
        errno = ENOTDIR;
    snprintf(err, errlen, "cannot create directory %s (for cache_dir): %s", path,
             strerror(errno));
    return -1;
}

static int check_writable(const char *path, char *err, size_t errlen)
{
    if (access(path, W_OK | X_OK) == 0)
        return 0;
    snprintf(err, errlen, "cannot write to %s (in cache_dir): %s", path, strerror(errno));
    return -1;
}

static bool is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[len] == '\0';
}

/* ---- temp files and commits --------------------------------------------- */

int store_temp_create(const struct store *s, char *path_out, size_t outlen)
{
    int fd;

    if ((size_t)snprintf(path_out, outlen, "%s/fill-XXXXXX", s->tmp_dir) >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path_out, O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fchmod(fd, 0644) != 0) {
        int e = errno;
        close(fd);
        unlink(path_out);
        errno = e;
        return -1;
    }
    return fd;
}

int store_commit(const struct store *s, int fd, const char *tmp_path, const char *hex)
{
    return store_commit_recorded(s, fd, tmp_path, hex, NULL, NULL, NULL);
}

static void sync_lock(const struct store *s, uint64_t *seq)
{
    if (s->sync)
        pthread_mutex_lock(&s->sync->lock);
    if (s->sync && seq)
        *seq = ++s->sync->seq;
}

static void sync_unlock(const struct store *s)
{
    if (s->sync)
        pthread_mutex_unlock(&s->sync->lock);
}

/* The blob's name appears (or is found there already) and record() runs
 * under the store's lock, so that no removal of the same blob comes
 * between the file and its index row. */
static int publish(const struct store *s, const char *tmp_path, const char *blob,
                   const char *cd, int (*record)(void *), void *ctx, uint64_t *seq)
{
    int rc = 0;
    sync_lock(s, seq);
    if (access(blob, F_OK) == 0) {
        /* Same name, same bytes: keep the blob that readers may hold. */
        if (unlink(tmp_path) != 0)
            rc = commit_failed(s, tmp_path, blob, "remove the duplicate", -errno);
    } else if (rename(tmp_path, blob) != 0) {
        rc = commit_failed(s, tmp_path, blob, "rename into place", -errno);
    } else if ((rc = fsync_dir(cd)) != 0) {
        rc = commit_failed(s, tmp_path, blob, "fsync the blob's directory", rc);
    }
    if (rc == 0 && record && record(ctx) != 0)
        rc = -EIO;
    sync_unlock(s);
    return rc;
}

int store_commit_recorded(const struct store *s, int fd, const char *tmp_path, const char *hex,
                          int (*record)(void *ctx), void *ctx, uint64_t *seq)
{
    char ab[PATH_MAX], cd[PATH_MAX], blob[PATH_MAX];
    int rc;

    if (!is_lower_hex(hex, HEX_LEN))
        return -EINVAL;
    snprintf(ab, sizeof ab, "%s/%.2s", s->blobs_dir, hex);
    snprintf(cd, sizeof cd, "%s/%.2s/%.2s", s->blobs_dir, hex, hex + 2);
    store_blob_path(s, hex, blob, sizeof blob);
    if (fsync(fd) != 0)
        return commit_failed(s, tmp_path, blob, "fsync the temp file", -errno);
    if ((rc = ensure_dir(s->blobs_dir, ab)) != 0 || (rc = ensure_dir(ab, cd)) != 0)
        return commit_failed(s, tmp_path, blob, "create the blob's directory", rc);
    return publish(s, tmp_path, blob, cd, record, ctx, seq);
}

/* Logs which step of a commit failed and returns rc (-errno). */
static int commit_failed(const struct store *s, const char *tmp_path, const char *blob,
                         const char *step, int rc)
{
    log_msg(s->log, LOG_ERROR, "store", "commit of %s as %s: %s: %s", tmp_path, blob,
            step, strerror(-rc));
    return rc;
}

/* mkdir path unless it exists; a new directory is made durable by
 * fsyncing its parent. Returns 0 or -errno. */
static int ensure_dir(const char *parent, const char *path)
{
    if (mkdir(path, 0755) == 0)
        return fsync_dir(parent);
    return errno == EEXIST ? 0 : -errno;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

void store_temp_discard(const struct store *s, const char *tmp_path)
{
    if (unlink(tmp_path) != 0 && errno != ENOENT)
        log_msg(s->log, LOG_WARN, "store", "cannot remove temp file %s: %s", tmp_path,
                strerror(errno));
}

int store_blob_open(const struct store *s, const char *hex, uint64_t *size)
{
    char path[PATH_MAX];
    struct stat st;
    int fd;

    if (!is_lower_hex(hex, HEX_LEN)) {
        errno = EINVAL;
        return -1;
    }
    store_blob_path(s, hex, path, sizeof path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

int store_blob_remove(const struct store *s, const char *hex)
{
    return store_blob_remove_recorded(s, hex, NULL, NULL, NULL);
}

int store_blob_remove_recorded(const struct store *s, const char *hex,
                               int (*record)(void *ctx), void *ctx, uint64_t *seq)
{
    char path[PATH_MAX];
    int rc;

    if (!is_lower_hex(hex, HEX_LEN))
        return -EINVAL;
    store_blob_path(s, hex, path, sizeof path);
    sync_lock(s, seq);
    rc = unlink(path) == 0 ? 0 : -errno;
    if ((rc == 0 || rc == -ENOENT) && record && record(ctx) != 0)
        rc = -EIO;
    sync_unlock(s);
    return rc;
}

/* ---- recovery ----------------------------------------------------------- */

static void recovery_log(const struct recovery *r)
{
    log_msg(r->s->log, LOG_INFO, "store", "recovered %s: %zu blobs; removed %u temp"
            " files and %u misnamed entries; dropped %u index rows without a blob;"
            " adopted %u blobs without a row", r->s->dir, r->n_blobs, r->temps_removed,
            r->misnamed_removed, r->rows_dropped, r->blobs_adopted);
}

int store_recover(const struct store *s, struct index *idx,
                  unsigned *temps_removed, unsigned *rows_dropped,
                  unsigned *blobs_adopted)
{
    struct recovery r = {.s = s};
    int rc = clear_tmp(&r);

    if (rc == 0)
        rc = walk_blobs(&r);
    if (rc == 0)
        rc = reconcile(&r, idx);
    if (rc == 0)
        recovery_log(&r);
    if (temps_removed)
        *temps_removed = r.temps_removed;
    if (rows_dropped)
        *rows_dropped = r.rows_dropped;
    if (blobs_adopted)
        *blobs_adopted = r.blobs_adopted;
    free(r.blobs);
    free(r.orphans);
    return rc;
}

int store_clear_tmp(const struct store *s, unsigned *temps_removed)
{
    struct recovery r = {.s = s};
    int rc = clear_tmp(&r);
    if (temps_removed)
        *temps_removed = r.temps_removed;
    return rc;
}

int store_reconcile(const struct store *s, struct index *idx, const atomic_bool *cancel,
                    struct store_reconciled *out)
{
    struct recovery r = {.s = s, .live = true, .cancel = cancel};
    memset(out, 0, sizeof *out);
    int rc = walk_blobs(&r);
    if (rc == 0 && cancel && atomic_load(cancel))
        rc = 1;
    if (rc == 0)
        rc = reconcile(&r, idx);
    if (rc == 0)
        recovery_log(&r);
    out->blobs = r.n_blobs;
    out->misnamed_removed = r.misnamed_removed;
    out->rows_dropped = r.rows_dropped;
    out->blobs_adopted = r.blobs_adopted;
    /* what the caller tells its catalog: the rows dropped (with the
     * removal's number) and the blobs adopted */
    out->dropped = calloc(r.rows_dropped ? r.rows_dropped : 1, sizeof *out->dropped);
    out->adopted = calloc(r.blobs_adopted ? r.blobs_adopted : 1, sizeof *out->adopted);
    if (!out->dropped || !out->adopted) {
        rc = -1;
    } else {
        for (size_t i = 0; i < r.n_orphans && r.orphan_seq; i++)
            if (r.orphan_seq[i] && out->n_dropped < r.rows_dropped) {
                memcpy(out->dropped[out->n_dropped].sha256, r.orphans[i], HEX_LEN + 1);
                out->dropped[out->n_dropped++].seq = r.orphan_seq[i];
            }
        for (size_t i = 0; i < r.n_blobs && r.adopted; i++)
            if (r.adopted[i] && out->n_adopted < r.blobs_adopted) {
                memcpy(out->adopted[out->n_adopted].sha256, r.blobs[i].hex, HEX_LEN + 1);
                out->adopted[out->n_adopted++].size = r.blobs[i].size;
            }
    }
    free(r.blobs);
    free(r.orphans);
    free(r.orphan_seq);
    free(r.adopted);
    return rc;
}

void store_reconciled_free(struct store_reconciled *out)
{
    free(out->dropped);
    free(out->adopted);
    memset(out, 0, sizeof *out);
}

/* Everything under tmp/ is a fill that a stop or a crash interrupted. */
static int clear_tmp(struct recovery *r)
{
    int fd = open(r->s->tmp_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    struct dirent *de;

    if (!d) {
        log_msg(r->s->log, LOG_ERROR, "store", "cannot read %s: %s", r->s->tmp_dir,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (remove_entry(fd, de->d_name) == 0)
            r->temps_removed++;
        else
            log_msg(r->s->log, LOG_WARN, "store", "cannot remove %s/%s: %s",
                    r->s->tmp_dir, de->d_name, strerror(errno));
    }
    closedir(d);
    return 0;
}

/* Removes name (a file, a link, or a directory tree) relative to dir_fd.
 * Returns 0, or -1 with errno set. */
static int remove_entry(int dir_fd, const char *name)
{
    struct stat st;
    int fd;

    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dir_fd, name, 0);
    fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || remove_children(fd) != 0)
        return -1;
    return unlinkat(dir_fd, name, AT_REMOVEDIR);
}

/* Empties the directory open as fd, and closes fd. */
static int remove_children(int fd)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    int rc = 0;

    if (!d) {
        close(fd);
        return -1;
    }
    while (rc == 0 && (de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            rc = remove_entry(dirfd(d), de->d_name);
    closedir(d);
    return rc;
}

static int walk_blobs(struct recovery *r)
{
    int fd = open(r->s->blobs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0) {
        log_msg(r->s->log, LOG_ERROR, "store", "cannot read %s: %s", r->s->blobs_dir,
                strerror(errno));
        return -1;
    }
    if (walk_level(r, fd, r->s->blobs_dir, "", 0) != 0)
        return -1;
    if (r->n_blobs > 1)
        qsort(r->blobs, r->n_blobs, sizeof *r->blobs, compare_blobs);
    return 0;
}

/*
 * Walks the directory open as fd (and closes it). depth 0 is blobs/,
 * depth 1 is blobs/ab, depth 2 is blobs/ab/cd; prefix is the hex the
 * names below must start with ("", "ab", "abcd"). Directories at depth 0
 * and 1 must be named by the next two hex digits; files at depth 2 must be
 * blobs. Anything else is removed.
 */
static int walk_level(struct recovery *r, int fd, const char *dirpath,
                      const char *prefix, int depth)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    int rc = 0;

    if (!d) {
        close(fd);
        log_msg(r->s->log, LOG_ERROR, "store", "cannot read %s: %s", dirpath,
                strerror(errno));
        return -1;
    }
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (r->cancel && atomic_load(r->cancel)) {
            rc = 1;                 /* the daemon stops: the next start walks again */
            break;
        }
        if (depth == 2)
            rc = consider_blob(r, dirfd(d), dirpath, de->d_name, prefix);
        else
            rc = consider_dir(r, dirfd(d), dirpath, de->d_name, prefix, depth);
    }
    closedir(d);
    return rc;
}

/* Walks name when it is a directory named by the next two hex digits;
 * removes it when it is anything else. */
static int consider_dir(struct recovery *r, int dir_fd, const char *dirpath,
                        const char *name, const char *prefix, int depth)
{
    char sub_prefix[8], sub_path[PATH_MAX];
    int sub;

    if (!is_lower_hex(name, 2)) {
        remove_misnamed(r, dir_fd, dirpath, name);
        return 0;
    }
    sub = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0 && (errno == ENOTDIR || errno == ELOOP)) {
        remove_misnamed(r, dir_fd, dirpath, name);
        return 0;
    }
    snprintf(sub_path, sizeof sub_path, "%s/%s", dirpath, name);
    if (sub < 0) {
        log_msg(r->s->log, LOG_ERROR, "store", "cannot read %s: %s", sub_path,
                strerror(errno));
        return -1;
    }
    snprintf(sub_prefix, sizeof sub_prefix, "%s%s", prefix, name);
    return walk_level(r, sub, sub_path, sub_prefix, depth + 1);
}

/* Keeps name when it is a regular file named by 64 hex digits that start
 * with prefix; removes it otherwise. Returns -1 only when out of memory. */
static int consider_blob(struct recovery *r, int dir_fd, const char *dirpath,
                         const char *name, const char *prefix)
{
    struct stat st;
    bool ok = is_lower_hex(name, HEX_LEN) && strncmp(name, prefix, 4) == 0
              && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0
              && S_ISREG(st.st_mode);

    if (ok)
        return add_blob(r, name, &st);
    remove_misnamed(r, dir_fd, dirpath, name);
    return 0;
}

/* Removes something under blobs/ that is not a blob; a failure is logged
 * and recovery goes on (the entry stays unused). */
static void remove_misnamed(struct recovery *r, int dir_fd, const char *dirpath,
                            const char *name)
{
    if (remove_entry(dir_fd, name) == 0)
        r->misnamed_removed++;
    else
        log_msg(r->s->log, LOG_WARN, "store", "cannot remove misnamed %s/%s: %s",
                dirpath, name, strerror(errno));
}

static int add_blob(struct recovery *r, const char *hex, const struct stat *st)
{
    if (r->n_blobs == r->cap_blobs) {
        size_t cap = r->cap_blobs ? 2 * r->cap_blobs : 1024;
        struct found_blob *p = realloc(r->blobs, cap * sizeof *p);
        if (!p) {
            log_msg(r->s->log, LOG_ERROR, "store", "recovery: out of memory after %zu blobs",
                    r->n_blobs);
            return -1;
        }
        r->blobs = p;
        r->cap_blobs = cap;
    }
    struct found_blob *b = &r->blobs[r->n_blobs++];
    memcpy(b->hex, hex, sizeof b->hex);
    b->has_row = false;
    b->size = (uint64_t)st->st_size;
    b->mtime = (int64_t)st->st_mtime;
    return 0;
}

static int compare_blobs(const void *a, const void *b)
{
    return strcmp(((const struct found_blob *)a)->hex, ((const struct found_blob *)b)->hex);
}

/* index_foreach_object callback: marks the row's blob, or remembers the
 * row as an orphan. Returns 1 (stop) when out of memory. */
static int match_row(void *ctx, const char *sha256, uint64_t size)
{
    struct recovery *r = ctx;
    struct found_blob key;
    struct found_blob *b;

    (void)size;
    snprintf(key.hex, sizeof key.hex, "%s", sha256);
    b = r->n_blobs ? bsearch(&key, r->blobs, r->n_blobs, sizeof *r->blobs, compare_blobs)
                   : NULL;
    if (b) {
        b->has_row = true;
        return 0;
    }
    if (r->n_orphans == r->cap_orphans) {
        size_t cap = r->cap_orphans ? 2 * r->cap_orphans : 64;
        char (*p)[HEX_LEN + 1] = realloc(r->orphans, cap * sizeof *p);
        if (!p) {
            r->out_of_memory = true;
            return 1;
        }
        r->orphans = p;
        r->cap_orphans = cap;
    }
    snprintf(r->orphans[r->n_orphans++], HEX_LEN + 1, "%s", sha256);
    return 0;
}

/* Drops the rows without a blob, then adopts the blobs without a row. */
static int reconcile(struct recovery *r, struct index *idx)
{
    int rc = index_foreach_object(idx, match_row, r);

    if (rc != 0) {
        if (r->out_of_memory)
            log_msg(r->s->log, LOG_ERROR, "store", "recovery: out of memory listing"
                    " the index");
        return -1;
    }
    if (drop_orphans(r, idx) != 0 || adopt_unindexed(r, idx) != 0)
        return -1;
    return 0;
}

/* Live: true when the blob the walk found is still there (a stat). */
static bool blob_still_there(const struct recovery *r, const struct found_blob *b)
{
    char path[PATH_MAX];
    struct stat st;
    store_blob_path(r->s, b->hex, path, sizeof path);
    return stat(path, &st) == 0;
}

/* Live: one row at a time, each under the store's lock and only when its
 * blob is still missing (a fill may have committed it since the walk);
 * the removal's number lets the catalog ignore it when a commit of the
 * same blob came after. */
static int drop_orphans_live(struct recovery *r, struct index *idx)
{
    if (!(r->orphan_seq = calloc(r->n_orphans ? r->n_orphans : 1, sizeof *r->orphan_seq)))
        return -1;
    for (size_t i = 0; i < r->n_orphans; i++) {
        char path[PATH_MAX];
        struct stat st;
        const char *one = r->orphans[i];
        uint64_t seq = 0;
        int rc = 0;
        store_blob_path(r->s, one, path, sizeof path);
        sync_lock(r->s, &seq);
        if (stat(path, &st) != 0 && errno == ENOENT) {
            rc = index_drop_objects(idx, &one, 1);
            if (rc == 0) {
                r->orphan_seq[i] = seq ? seq : 1;
                r->rows_dropped++;
            }
        }
        sync_unlock(r->s);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* In transactions of up to RECOVER_BATCH rows. */
static int drop_orphans(struct recovery *r, struct index *idx)
{
    const char *batch[RECOVER_BATCH];
    size_t n = 0;

    if (r->live)
        return drop_orphans_live(r, idx);

    for (size_t i = 0; i < r->n_orphans; i++) {
        batch[n++] = r->orphans[i];
        if (n == RECOVER_BATCH || i + 1 == r->n_orphans) {
            if (index_drop_objects(idx, batch, n) != 0)
                return -1;
            r->rows_dropped += n;
            n = 0;
        }
    }
    return 0;
}

/* In transactions of up to RECOVER_BATCH blobs. An adopted blob's access
 * time is its file's mtime, so eviction still sees roughly when it came. */
static int adopt_unindexed(struct recovery *r, struct index *idx)
{
    struct index_object batch[RECOVER_BATCH];
    size_t n = 0;

    if (r->live && !(r->adopted = calloc(r->n_blobs ? r->n_blobs : 1, sizeof *r->adopted)))
        return -1;
    for (size_t i = 0; i < r->n_blobs; i++) {
        const struct found_blob *b = &r->blobs[i];
        if (!b->has_row && r->live && !blob_still_there(r, b)) {
            continue;               /* evicted or purged since the walk */
        }
        if (!b->has_row) {
            batch[n++] = (struct index_object){b->hex, b->size, b->mtime};
            if (r->live)
                r->adopted[i] = true;
        }
        if (n == RECOVER_BATCH || (n > 0 && i + 1 == r->n_blobs)) {
            if (index_adopt_objects(idx, batch, n) != 0)
                return -1;
            r->blobs_adopted += n;
            n = 0;
        }
    }
    return 0;
}
