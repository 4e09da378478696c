/*
 * store — the blob files under cache_dir (DESIGN.md §6).
 *
 *   <cache_dir>/blobs/ab/cd/<sha256-hex>   content-addressed, immutable
 *   <cache_dir>/tmp/fill-XXXXXX            a fill in progress
 *   <cache_dir>/index.db (+ -wal, -shm)    the SQLite index (cache/index.h)
 *
 * Invariants:
 *  - A blob file exists under its name only once its bytes were fsynced and
 *    their SHA-256 equals the name: it is written as a temp file, fsynced,
 *    renamed into place, and the directory fsynced. Two URLs with the same
 *    bytes share one blob.
 *  - Nothing under tmp/ survives a restart: store_recover() deletes it.
 *  - A blob is never modified in place; a reader holding its fd keeps its
 *    inode even if the blob is unlinked.
 *
 * Thread: store_commit() and store_recover() block on disk and run on the
 * libuv thread pool (or at start-up, before the loop runs); the rest is
 * cheap and may run on the loop thread. The struct is read-only after
 * store_open() but for its lock (struct store_sync), so any thread may use
 * it.
 */
#ifndef EDGECACHE_STORE_H
#define EDGECACHE_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config/log.h"

struct index;

/* Serialises a blob's appearance with its index row against a blob's
 * removal with its rows (a commit and an eviction of the same bytes), and
 * numbers them, so the loop can tell which came last. */
struct store_sync;

struct store {
    char *dir;                  /* cache_dir, owned */
    struct store_sync *sync;    /* owned; the only part that changes after open */
    char *blobs_dir;            /* <dir>/blobs, owned */
    char *tmp_dir;              /* <dir>/tmp, owned */
    const struct logger *log;   /* not owned */
};

/* Creates cache_dir, blobs/ and tmp/ as needed (mode 0755). Returns 0, or -1
 * with a message naming the path and the errno text in err. */
int store_open(struct store *s, const char *cache_dir, const struct logger *log,
               char *err, size_t errlen);
void store_close(struct store *s);

/* <dir>/index.db, for index_open(). */
void store_index_path(const struct store *s, char *out, size_t outlen);

/* <dir>/blobs/ab/cd/<hex> for a 64-character lower-case hex digest; an
 * empty string for anything else (so a bad name never reaches the disk). */
void store_blob_path(const struct store *s, const char *hex, char *out, size_t outlen);

/* A new temp file under tmp/, opened O_RDWR|O_CLOEXEC, mode 0644. Writes its
 * path to path_out. Returns the fd or -1 (errno set). */
int store_temp_create(const struct store *s, char *path_out, size_t outlen);

/* Blocking. fsync(fd); mkdir blobs/ab/cd; rename(tmp_path -> blob path);
 * fsync the blob's directory. If a blob of that name already exists (same
 * bytes from another URL), the temp file is unlinked instead. The fd stays
 * open (readers keep reading it). Returns 0 or -errno (-EINVAL for a bad
 * digest); the failing step is logged with its path, and the temp file is
 * left under tmp/ for the caller to discard — nothing partial is ever
 * visible under blobs/. */
int store_commit(const struct store *s, int fd, const char *tmp_path, const char *hex);

/* The same, with record(ctx) (the index row) run once the blob is in
 * place, under the store's lock, which store_blob_remove_recorded() takes
 * too: a removal of the same blob comes wholly before or after. *seq (may
 * be NULL) receives this step's number in the order of such steps.
 * record's failure makes the commit return -EIO (the blob stays, and is
 * adopted at the next start). */
int store_commit_recorded(const struct store *s, int fd, const char *tmp_path, const char *hex,
                          int (*record)(void *ctx), void *ctx, uint64_t *seq);

/* Blocking but cheap: unlink a temp file (a failed fill). */
void store_temp_discard(const struct store *s, const char *tmp_path);

/* Opens a blob for reading (O_RDONLY|O_CLOEXEC); *size from fstat. Returns
 * the fd, or -1 when missing (errno set; EINVAL for a bad digest). */
int store_blob_open(const struct store *s, const char *hex, uint64_t *size);

/* Blocking: unlink a blob (a blob found bad, a purge). Returns 0 or -errno. */
int store_blob_remove(const struct store *s, const char *hex);
/* The same, with record(ctx) (dropping the index rows) under the store's
 * lock when the blob was there or already gone; *seq as above. */
int store_blob_remove_recorded(const struct store *s, const char *hex,
                               int (*record)(void *ctx), void *ctx, uint64_t *seq);

/*
 * Start-up recovery (the command-line tools; the daemon runs it in two
 * parts, below):
 *  - every file under tmp/ is deleted (a fill that a crash interrupted);
 *  - every index row whose blob is missing is dropped (index_drop_object);
 *  - every blob without a row is adopted (index_adopt_object, size from
 *    stat; it is reachable by hash, not by URL) — files under blobs/ whose
 *    name is not a 64-hex digest in the right ab/cd directory are deleted.
 * Counts what it did into the out-parameters (any may be NULL) and logs one
 * info line. Rows are dropped and blobs adopted in batched transactions,
 * and the blob list is sorted once, so ~100k blobs recover in seconds.
 * Running it again changes nothing. Returns 0, or -1 when the store cannot
 * be read or the index cannot be written (logged).
 */
int store_recover(const struct store *s, struct index *idx,
                  unsigned *temps_removed, unsigned *rows_dropped,
                  unsigned *blobs_adopted);

/* The same recovery in two parts, so that the daemon serves from its
 * index at once, however many blobs the store holds:
 *  - store_clear_tmp(), before anything listens (tmp/ holds only what
 *    fills in flight wrote, so it is quick);
 *  - store_reconcile(), on the thread pool while the daemon serves: the
 *    walk of blobs/, then each row without a blob dropped (checked again
 *    under the store's lock, since a fill may have committed it meanwhile)
 *    and each blob without a row adopted (checked again, since eviction
 *    may have removed it). What it changed is listed in *out for the
 *    caller's catalog (free with store_reconciled_free). It stops early
 *    (non-zero) once *cancel is set. Until it ends, a row whose blob is
 *    gone is what it always is at serve time: a miss, fetched again. */
struct store_reconciled {
    size_t blobs;                       /* found by the walk */
    unsigned misnamed_removed, rows_dropped, blobs_adopted;
    struct { char sha256[65]; uint64_t seq; } *dropped;
    size_t n_dropped;
    struct { char sha256[65]; uint64_t size; } *adopted;
    size_t n_adopted;
};
int store_clear_tmp(const struct store *s, unsigned *temps_removed);
int store_reconcile(const struct store *s, struct index *idx, const atomic_bool *cancel,
                    struct store_reconciled *out);
void store_reconciled_free(struct store_reconciled *out);

#endif
