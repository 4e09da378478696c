/*
 * verify — the offline check of the store (cache/verify.h).
 *
 * A run has three steps:
 *  1. list: every objects row becomes an item (digest, row size), then
 *     every well-named file under blobs/ becomes an item (digest, file
 *     size); entries that are not blobs are reported as notes on the way.
 *     Rows come first so that a fill committing meanwhile (file, then row)
 *     can only look like a blob without a row, never like a missing blob.
 *  2. merge: the items are sorted by digest and the row item and file item
 *     of one digest folded into one, so each digest is checked once and
 *     the totals for the progress display are known before any hashing.
 *  3. check: each digest in order: its file is rehashed in 1 MiB chunks,
 *     compared with its name and its row, and (on request) repaired.
 *
 * Memory is one item per digest (about 90 bytes; ~9 MB for 100k blobs) and
 * one read buffer, all freed before verify_run() returns.
 */
#include "cache/verify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/digest.h"
#include "cache/index.h"
#include "cache/store.h"

#define CHUNK (1u << 20)                /* bytes read and hashed at once */
#define HEX_LEN 64

/* One digest: its objects row, its blob file, or both. */
struct item {
    char hex[HEX_LEN + 1];
    bool has_row, has_file;
    uint64_t row_size, file_size;
};

/* The state of one verify_run(). */
struct run {
    const struct store *s;
    struct index *idx;
    const struct verify_options *o;
    struct verify_report *r;
    struct item *items;                 /* owned */
    size_t n_items, cap_items;
    bool out_of_memory;
    unsigned char *buf;                 /* owned, CHUNK bytes */
    struct digest d;
    struct verify_progress prog;
};

/* What hashing one blob file found. */
struct hashed {
    int err;                            /* 0, or the errno that stopped it */
    uint64_t size;                      /* bytes read */
    char hex[DIGEST_SHA256_HEX];        /* the content's digest when err == 0 */
};

/* Table of contents. */
static int list_rows(struct run *run);
static int add_row(void *ctx, const char *sha256, uint64_t size);
static struct item *new_item(struct run *run, const char *hex);
static int walk_blobs(struct run *run);
static int walk_dir(struct run *run, int fd, const char *rel, int depth);
static int consider(struct run *run, int dir_fd, const char *rel, const char *name,
                    int depth);
static bool is_blob_name(const char *name, const char *rel);
static void note_not_a_blob(struct run *run, const char *rel, const char *name,
                            const char *why);
static int compare_items(const void *a, const void *b);
static void merge_items(struct run *run);
static int check_all(struct run *run);
static void check_item(struct run *run, const struct item *it);
static void check_file(struct run *run, const struct item *it, const struct hashed *h);
static int hash_blob(struct run *run, const char *hex, struct hashed *h);
static void progress(struct run *run);
static void finding(struct run *run, enum verify_kind kind, const char *name,
                    const char *detail, enum verify_repair repair, const char *urls);
static void bad(struct run *run, const struct item *it, enum verify_kind kind,
                const char *detail);
static enum verify_repair repair(struct run *run, const struct item *it, bool remove_file,
                                 char *why, size_t whylen);

/* ---- kinds and reports -------------------------------------------------- */

static const struct {
    const char *one, *many;
    bool bad;
} kinds[VERIFY_KIND_COUNT] = {
    [VERIFY_DIGEST_MISMATCH] = {"digest mismatch", "digest mismatches", true},
    [VERIFY_SIZE_MISMATCH] = {"size mismatch", "size mismatches", true},
    [VERIFY_MISSING_BLOB] = {"missing blob", "missing blobs", true},
    [VERIFY_UNREADABLE] = {"unreadable", "unreadable", true},
    [VERIFY_NO_ROW] = {"no index row", "no index row", false},
    [VERIFY_NOT_A_BLOB] = {"not a blob", "not a blob", false},
};

bool verify_kind_is_bad(enum verify_kind kind)
{
    return kind < VERIFY_KIND_COUNT && kinds[kind].bad;
}

const char *verify_kind_name(enum verify_kind kind)
{
    return kind < VERIFY_KIND_COUNT ? kinds[kind].one : "?";
}

uint64_t verify_remaining(const struct verify_report *r)
{
    return r->bad - r->removed;
}

/* ---- the run ------------------------------------------------------------ */

int verify_run(const struct store *s, struct index *idx, const struct verify_options *o,
               struct verify_report *r)
{
    static const struct verify_options none;
    struct run run = {.s = s, .idx = idx, .o = o ? o : &none, .r = r};
    int rc = -1;

    memset(r, 0, sizeof *r);
    run.buf = malloc(CHUNK);
    if (!run.buf || digest_init(&run.d) != 0)
        log_msg(s->log, LOG_ERROR, "verify", "%s: out of memory", s->dir);
    else if (list_rows(&run) == 0 && walk_blobs(&run) == 0)
        rc = check_all(&run);
    digest_free(&run.d);
    free(run.buf);
    free(run.items);
    return rc;
}

/* ---- step 1: list rows and files ---------------------------------------- */

static int list_rows(struct run *run)
{
    int rc = index_foreach_object(run->idx, add_row, run);

    if (rc != 0 && run->out_of_memory)
        log_msg(run->s->log, LOG_ERROR, "verify", "%s: out of memory listing the index",
                run->s->dir);
    return rc == 0 ? 0 : -1;
}

/* index_foreach_object callback (runs under the index's write lock: it
 * only collects). A row whose key is not a digest names no blob file (the
 * index never writes one); it is logged and left alone. */
static int add_row(void *ctx, const char *sha256, uint64_t size)
{
    struct run *run = ctx;
    struct item *it;

    if (!digest_is_sha256_hex(sha256)) {
        log_msg(run->s->log, LOG_WARN, "verify", "%s: objects row '%s' is not a digest;"
                " skipped", run->s->dir, sha256);
        return 0;
    }
    it = new_item(run, sha256);
    if (!it)
        return 1;
    it->has_row = true;
    it->row_size = size;
    return 0;
}

static struct item *new_item(struct run *run, const char *hex)
{
    if (run->n_items == run->cap_items) {
        size_t cap = run->cap_items ? 2 * run->cap_items : 1024;
        struct item *p = realloc(run->items, cap * sizeof *p);
        if (!p) {
            run->out_of_memory = true;
            return NULL;
        }
        run->items = p;
        run->cap_items = cap;
    }
    struct item *it = &run->items[run->n_items++];
    memset(it, 0, sizeof *it);
    snprintf(it->hex, sizeof it->hex, "%s", hex);
    return it;
}

static int walk_blobs(struct run *run)
{
    int fd = open(run->s->blobs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0) {
        log_msg(run->s->log, LOG_ERROR, "verify", "cannot read %s: %s", run->s->blobs_dir,
                strerror(errno));
        return -1;
    }
    return walk_dir(run, fd, "", 0);
}

/* Walks the directory open as fd (and closes it). rel is its path below
 * blobs/ ("", "ab", "ab/cd"); depth 0 and 1 hold directories named by two
 * hex digits, depth 2 holds the blobs. Returns 0, or -1 when a directory
 * cannot be read or memory runs out (logged). */
static int walk_dir(struct run *run, int fd, const char *rel, int depth)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    int rc = 0;

    if (!d) {
        close(fd);
        log_msg(run->s->log, LOG_ERROR, "verify", "cannot read %s/%s: %s",
                run->s->blobs_dir, rel, strerror(errno));
        return -1;
    }
    errno = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            rc = consider(run, dirfd(d), rel, de->d_name, depth);
        errno = 0;
    }
    if (rc == 0 && errno != 0) {
        log_msg(run->s->log, LOG_ERROR, "verify", "cannot list %s/%s: %s",
                run->s->blobs_dir, rel, strerror(errno));
        rc = -1;
    }
    closedir(d);
    return rc;
}

/* One entry of a directory under blobs/: a blob (an item), a directory to
 * walk, or something else (a note). */
static int consider(struct run *run, int dir_fd, const char *rel, const char *name,
                    int depth)
{
    char sub[PATH_MAX];
    struct stat st;

    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return 0;                   /* removed since it was listed */
        log_msg(run->s->log, LOG_ERROR, "verify", "cannot stat %s/%s%s%s: %s",
                run->s->blobs_dir, rel, *rel ? "/" : "", name, strerror(errno));
        return -1;
    }
    if (depth == 2) {
        if (!S_ISREG(st.st_mode) || !is_blob_name(name, rel)) {
            note_not_a_blob(run, rel, name, S_ISREG(st.st_mode)
                            ? "its name is not the digest of its directory"
                            : "not a regular file");
            return 0;
        }
        struct item *it = new_item(run, name);
        if (!it) {
            log_msg(run->s->log, LOG_ERROR, "verify", "out of memory after %zu blobs",
                    run->n_items);
            return -1;
        }
        it->has_file = true;
        it->file_size = (uint64_t)st.st_size;
        return 0;
    }
    bool hex2 = strlen(name) == 2 && strspn(name, "0123456789abcdef") == 2;
    if (!S_ISDIR(st.st_mode) || !hex2) {
        note_not_a_blob(run, rel, name, "blobs/ holds only ab/cd/<sha256> files");
        return 0;
    }
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", name);
    if (fd < 0) {
        log_msg(run->s->log, LOG_ERROR, "verify", "cannot read %s/%s: %s",
                run->s->blobs_dir, sub, strerror(errno));
        return -1;
    }
    return walk_dir(run, fd, sub, depth + 1);
}

/* True when name is a digest whose first four hex digits are rel's "ab/cd". */
static bool is_blob_name(const char *name, const char *rel)
{
    return digest_is_sha256_hex(name) && strncmp(name, rel, 2) == 0
           && strncmp(name + 2, rel + 3, 2) == 0;
}

static void note_not_a_blob(struct run *run, const char *rel, const char *name,
                            const char *why)
{
    char path[PATH_MAX], detail[160];

    snprintf(path, sizeof path, "blobs/%s%s%s", rel, *rel ? "/" : "", name);
    snprintf(detail, sizeof detail, "%s; the daemon deletes it at start", why);
    finding(run, VERIFY_NOT_A_BLOB, path, detail, VERIFY_NOT_REPAIRED, NULL);
}

/* ---- step 2: one item per digest ---------------------------------------- */

static int compare_items(const void *a, const void *b)
{
    return strcmp(((const struct item *)a)->hex, ((const struct item *)b)->hex);
}

/* Sorts the items and folds each digest's row item and file item into one. */
static void merge_items(struct run *run)
{
    size_t w = 0;

    if (run->n_items > 1)
        qsort(run->items, run->n_items, sizeof *run->items, compare_items);
    for (size_t i = 0; i < run->n_items; i++) {
        const struct item *it = &run->items[i];
        struct item *prev = w ? &run->items[w - 1] : NULL;
        if (prev && strcmp(prev->hex, it->hex) == 0) {
            prev->has_row |= it->has_row;
            prev->row_size = it->has_row ? it->row_size : prev->row_size;
            prev->has_file |= it->has_file;
            prev->file_size = it->has_file ? it->file_size : prev->file_size;
            continue;
        }
        run->items[w++] = *it;
    }
    run->n_items = w;
}

/* ---- step 3: check each digest ------------------------------------------ */

static int check_all(struct run *run)
{
    merge_items(run);
    run->prog.blobs_total = run->n_items;
    for (size_t i = 0; i < run->n_items; i++)
        if (run->items[i].has_file)
            run->prog.bytes_total += run->items[i].file_size;
    progress(run);
    for (size_t i = 0; i < run->n_items; i++) {
        check_item(run, &run->items[i]);
        run->prog.blobs_done++;
        progress(run);
    }
    return 0;
}

static void check_item(struct run *run, const struct item *it)
{
    struct hashed h = {0};

    if (it->has_file && hash_blob(run, it->hex, &h) != 0 && h.err == ENOENT) {
        /* Gone since the walk (a running daemon evicted it): only its
         * row, if any, is left to judge. */
        if (it->has_row)
            bad(run, it, VERIFY_MISSING_BLOB, "the index has a row, the store has no file");
        return;
    }
    if (it->has_file)
        check_file(run, it, &h);
    else
        bad(run, it, VERIFY_MISSING_BLOB, "the index has a row, the store has no file");
}

/* A blob file that was there when hashing started. */
static void check_file(struct run *run, const struct item *it, const struct hashed *h)
{
    char detail[160];

    run->r->bytes += h->size;
    if (h->err) {
        bad(run, it, VERIFY_UNREADABLE, strerror(h->err));
    } else if (strcmp(h->hex, it->hex) != 0) {
        snprintf(detail, sizeof detail, "content hashes to %s", h->hex);
        bad(run, it, VERIFY_DIGEST_MISMATCH, detail);
    } else if (it->has_row && it->row_size != h->size) {
        snprintf(detail, sizeof detail, "the index says %" PRIu64 " bytes, the file"
                 " has %" PRIu64, it->row_size, h->size);
        bad(run, it, VERIFY_SIZE_MISMATCH, detail);
    } else {
        run->r->blobs++;
        run->r->good++;
        if (!it->has_row)
            finding(run, VERIFY_NO_ROW, it->hex,
                    "a note, not a fault: the daemon adopts it at start", VERIFY_NOT_REPAIRED,
                    NULL);
    }
}

/* Reads the blob in CHUNK pieces through the digest, reporting progress
 * after each. Returns 0, or -1 with h->err set (ENOENT: the file is gone). */
static int hash_blob(struct run *run, const char *hex, struct hashed *h)
{
    unsigned char bin[DIGEST_SHA256_LEN];
    uint64_t size;
    int fd = store_blob_open(run->s, hex, &size);

    if (fd < 0) {
        h->err = errno;
        return -1;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    digest_init(&run->d);
    for (;;) {
        ssize_t n = read(fd, run->buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            h->err = n < 0 ? errno : 0;
            break;
        }
        digest_update(&run->d, run->buf, (size_t)n);
        h->size += (uint64_t)n;
        run->prog.bytes_done += (uint64_t)n;
        progress(run);
    }
    close(fd);
    digest_final(&run->d, bin);
    if (h->err)
        return -1;
    digest_hex(bin, sizeof bin, h->hex);
    return 0;
}

static void progress(struct run *run)
{
    if (run->o->on_progress)
        run->o->on_progress(run->o->ctx, &run->prog);
}

static void finding(struct run *run, enum verify_kind kind, const char *name,
                    const char *detail, enum verify_repair rep, const char *urls)
{
    struct verify_finding f = {.kind = kind, .name = name, .detail = detail, .repair = rep,
                               .urls = urls};

    run->r->kinds[kind]++;
    if (run->o->on_finding)
        run->o->on_finding(run->o->ctx, &f);
}

/* Counts a bad digest, repairs it when asked, and reports it. */
static void bad(struct run *run, const struct item *it, enum verify_kind kind,
                const char *detail)
{
    char text[512], why[256] = "";
    enum verify_repair rep = VERIFY_NOT_REPAIRED;

    char *urls = it->has_row ? index_object_urls(run->idx, it->hex) : NULL;

    run->r->blobs++;
    run->r->bad++;
    if (run->o->repair && kind != VERIFY_UNREADABLE)
        rep = repair(run, it, kind != VERIFY_MISSING_BLOB, why, sizeof why);
    if (rep == VERIFY_REMOVED)
        run->r->removed++;
    if (rep == VERIFY_REPAIR_FAILED)
        run->r->repair_failed++;
    snprintf(text, sizeof text, "%s%s%s", detail, why[0] ? "; " : "", why);
    finding(run, kind, it->hex, text, rep, urls);
    free(urls);
}

/* The blob file first, then the rows: a crash in between leaves a row
 * without a blob, which the next start drops. */
static enum verify_repair repair(struct run *run, const struct item *it, bool remove_file,
                                 char *why, size_t whylen)
{
    int rc = remove_file ? store_blob_remove(run->s, it->hex) : 0;

    if (rc != 0 && rc != -ENOENT) {
        snprintf(why, whylen, "cannot remove the blob file: %s", strerror(-rc));
        return VERIFY_REPAIR_FAILED;
    }
    if (it->has_row && index_drop_object(run->idx, it->hex) != 0) {
        snprintf(why, whylen, "cannot drop its index rows (logged above)");
        return VERIFY_REPAIR_FAILED;
    }
    return VERIFY_REMOVED;
}

/* ---- text --------------------------------------------------------------- */

/* "123 B", "4.0 KiB", "5.6 GiB". */
static void human_bytes(uint64_t n, char *out, size_t outlen)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    size_t u = 0;

    if (n < 1024) {
        snprintf(out, outlen, "%" PRIu64 " B", n);
        return;
    }
    v /= 1024;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    snprintf(out, outlen, "%.1f %s", v, units[u]);
}

/* Appends to a summary being built; never overruns out. */
static void append(char *out, size_t outlen, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *out, size_t outlen, size_t *used, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*used >= outlen)
        return;
    va_start(ap, fmt);
    n = vsnprintf(out + *used, outlen - *used, fmt, ap);
    va_end(ap);
    *used = n < 0 ? outlen : *used + (size_t)n;
}

/* " (1 digest mismatch, 2 missing blobs)" for the bad kinds seen. */
static void append_bad_kinds(const struct verify_report *r, char *out, size_t outlen,
                             size_t *used)
{
    const char *sep = " (";

    for (int k = 0; k < VERIFY_KIND_COUNT; k++) {
        if (!kinds[k].bad || r->kinds[k] == 0)
            continue;
        append(out, outlen, used, "%s%" PRIu64 " %s", sep, r->kinds[k],
               r->kinds[k] == 1 ? kinds[k].one : kinds[k].many);
        sep = ", ";
    }
    if (sep[0] == ',')
        append(out, outlen, used, ")");
}

void verify_summary(const struct verify_report *r, bool repaired, char *out, size_t outlen)
{
    char size[32];
    size_t used = 0;
    uint64_t others = r->kinds[VERIFY_NOT_A_BLOB];

    if (outlen)
        out[0] = '\0';
    human_bytes(r->bytes, size, sizeof size);
    append(out, outlen, &used, "verified %" PRIu64 " blob%s (%s): %" PRIu64 " good, %"
           PRIu64 " bad", r->blobs, r->blobs == 1 ? "" : "s", size, r->good, r->bad);
    append_bad_kinds(r, out, outlen, &used);
    append(out, outlen, &used, ", %" PRIu64 " without index row", r->kinds[VERIFY_NO_ROW]);
    if (repaired)
        append(out, outlen, &used, ", removed %" PRIu64, r->removed);
    if (repaired && r->repair_failed)
        append(out, outlen, &used, ", %" PRIu64 " could not be removed", r->repair_failed);
    if (others)
        append(out, outlen, &used, ", %" PRIu64 " other entr%s under blobs/", others,
               others == 1 ? "y" : "ies");
}

void verify_finding_line(const struct verify_finding *f, char *out, size_t outlen)
{
    static const char *const outcome[] = {
        [VERIFY_NOT_REPAIRED] = "",
        [VERIFY_REMOVED] = " (removed)",
        [VERIFY_REPAIR_FAILED] = " (not removed)",
    };
    const char *detail = f->detail ? f->detail : "";

    snprintf(out, outlen, "%s: %s%s%s%s", f->name, verify_kind_name(f->kind),
             detail[0] ? ": " : "", detail, outcome[f->repair]);
}
