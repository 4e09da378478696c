/*
 * verify — an offline check of the whole store (`edgecache verify`,
 * DESIGN.md §3): every blob file under blobs/ is rehashed with SHA-256 and
 * compared with its name and with its objects row, and every objects row
 * is checked for its blob.
 *
 * What one run finds, per digest (the union of blob files and rows):
 *   good             the content hashes to the name and the row's size is
 *                    the file's size
 *   digest mismatch  bad: the content does not hash to the name
 *   size mismatch    bad: the row's size is not the file's size
 *   missing blob     bad: an objects row without its blob file
 *   unreadable       bad: the blob file cannot be opened or read
 *   no index row     a note, not a fault: a well-hashed blob without a
 *                    row (the daemon adopts it at start); counted as good
 * Anything else under blobs/ (a name that is not a digest, a digest in
 * the wrong ab/cd directory, a directory or link where a blob belongs) is
 * a note too, "not a blob": store_recover() deletes it at start. An
 * objects row whose key is not a digest (the index never writes one) is
 * logged and skipped.
 *
 * Repair (verify_options.repair) drops what is bad: for a digest or size
 * mismatch the blob file is unlinked first and then its objects row and
 * urls rows are dropped, so a crash in between leaves a row without a
 * blob, which the next start drops; a row without a blob is dropped. The
 * URLs are then fetched again on their next request. An unreadable blob is
 * left alone (a permission or disk problem for the operator to look at:
 * unlinking it would hide the cause), so it stays bad.
 *
 * The module owns nothing between calls: verify_run() takes an open store
 * and index, holds its own lists and buffer for the run, and frees them.
 *
 * Running beside the daemon: reading is safe (SQLite WAL, blobs are
 * immutable), rows are listed before the files are walked so a fill that
 * commits meanwhile shows at worst as a blob without a row; an eviction
 * meanwhile can show as a missing blob. --repair is meant for a stopped
 * daemon: a running one may commit, evict or serve what repair removes.
 *
 * Thread: verify_run() blocks on disk for as long as the store takes to
 * read; call it from a command's main thread, never from the loop.
 */
#ifndef EDGECACHE_VERIFY_H
#define EDGECACHE_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct index;

enum verify_kind {
    VERIFY_DIGEST_MISMATCH,     /* bad */
    VERIFY_SIZE_MISMATCH,       /* bad */
    VERIFY_MISSING_BLOB,        /* bad */
    VERIFY_UNREADABLE,          /* bad; never repaired */
    VERIFY_NO_ROW,              /* note */
    VERIFY_NOT_A_BLOB,          /* note */
    VERIFY_KIND_COUNT
};

/* True for the kinds that make a store bad. */
bool verify_kind_is_bad(enum verify_kind kind);
/* "digest mismatch", "size mismatch", "missing blob", "unreadable",
 * "no index row", "not a blob". */
const char *verify_kind_name(enum verify_kind kind);

enum verify_repair {
    VERIFY_NOT_REPAIRED,        /* not asked, or a note */
    VERIFY_REMOVED,             /* blob file and rows are gone */
    VERIFY_REPAIR_FAILED,       /* still there; `detail` says why */
};

/* One finding, passed to verify_options.on_finding. Strings belong to the
 * run and live until the callback returns. */
struct verify_finding {
    enum verify_kind kind;
    const char *name;           /* the digest, or for VERIFY_NOT_A_BLOB the
                                   path below cache_dir ("blobs/ab/README") */
    const char *detail;         /* e.g. "content hashes to 3fe1…", an errno
                                   text; "" when there is nothing to add */
    enum verify_repair repair;
    const char *urls;           /* a bad digest's origin URLs from the index (read
                                   before any repair), one per line; NULL none */
};

/* Where a run stands, passed to verify_options.on_progress after every
 * chunk hashed and after every digest checked. */
struct verify_progress {
    uint64_t bytes_done, bytes_total;   /* blob bytes hashed / to hash */
    uint64_t blobs_done, blobs_total;   /* digests checked / to check */
};

struct verify_options {
    bool repair;
    /* Each may be NULL. */
    void (*on_finding)(void *ctx, const struct verify_finding *f);
    void (*on_progress)(void *ctx, const struct verify_progress *p);
    void *ctx;
};

/* What a run found; every count is of digests except `bytes`. */
struct verify_report {
    uint64_t blobs;             /* digests checked: good + bad */
    uint64_t bytes;             /* blob bytes hashed */
    uint64_t good;
    uint64_t bad;
    uint64_t kinds[VERIFY_KIND_COUNT];  /* findings of each kind */
    uint64_t removed;           /* bad ones repaired */
    uint64_t repair_failed;     /* bad ones whose repair failed */
};

/* Bad digests still in the store after the run: bad - removed. */
uint64_t verify_remaining(const struct verify_report *r);

/*
 * Checks every blob and objects row of the store (see the top of this
 * file), reporting each finding and the progress through `o`, and fills
 * *r. Does not run store_recover() and changes nothing unless o->repair.
 * Returns 0 when the whole store was checked, -1 when it could not be
 * read (blobs/ or the index unreadable, out of memory: logged through the
 * store's logger); *r then holds what was counted so far.
 */
int verify_run(const struct store *s, struct index *idx, const struct verify_options *o,
               struct verify_report *r);

/*
 * The one-line summary, without a newline, e.g.
 *   "verified 1234 blobs (5.6 GiB): 1232 good, 2 bad (1 digest mismatch,
 *    1 missing blob), 0 without index row"
 * followed, when `repaired` (a --repair run), by ", removed 2" (and
 * ", 1 could not be removed" when a repair failed), and by
 * ", 3 other files under blobs/" when there were any. The wording is
 * stable: scripts and tests match it.
 */
void verify_summary(const struct verify_report *r, bool repaired, char *out, size_t outlen);

/* One line for a finding, without a newline, e.g.
 *   "2cf2…9824: digest mismatch: content hashes to 486e…a8b7 (removed)" */
void verify_finding_line(const struct verify_finding *f, char *out, size_t outlen);

#endif
