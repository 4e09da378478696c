/*
 * index — the SQLite index of what the store holds (cache/index.h).
 *
 * Data model: an objects row stands for one blob (by SHA-256); a urls row
 * maps one cache key to one objects row, and several keys may share a row.
 * A urls row never outlives its objects row: index_drop_object() deletes
 * both in one transaction, the schema cascades the delete, and a lookup
 * joins the two tables, so a urls row left without its object (a database
 * edited by hand) reads as "not stored".
 *
 * Connections and threads:
 *  - `wr` and its prepared statements are used only with wr_lock held, from
 *    whichever thread writes (the libuv thread pool, or start-up code).
 *  - `rd` and its one statement belong to the loop thread. WAL lets it read
 *    while a write transaction on `wr` is under way.
 *  - Every statement is prepared once at open and reset right after use, so
 *    no statement keeps a read transaction open between calls.
 *
 * Access times: index_touch() adds to the active touch batch under
 * touch_lock (a few hash probes, no I/O). index_flush_touches() takes
 * wr_lock, swaps the active batch with the idle one under touch_lock, then
 * writes the swapped-out batch and empties it. A batch holds at most
 * TOUCH_CAP distinct digests; when it is full, the entry that was added
 * first is given up (counted, and reported by the next flush), so memory
 * never grows and the worst outcome is an object that looks less recently
 * used than it is.
 */
#include "cache/index.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#define INDEX_MAGIC 0x1dec5e11u
#define SCHEMA_VERSION 2
#define BUSY_TIMEOUT_MS 5000
#define TOUCH_CAP 4096                  /* distinct digests in one batch */
#define TOUCH_SLOTS (2 * TOUCH_CAP)     /* hash slots: a power of two */
#define SHA256_LEN 32

/* Statements run on `wr`, prepared at open. */
enum wr_stmt {
    WR_BEGIN,
    WR_COMMIT,
    WR_ROLLBACK,
    WR_INSERT_OBJECT,
    WR_REFRESH_OBJECT,
    WR_PUT_URL,
    WR_REFRESH_URL,
    WR_DROP_URL,
    WR_LRU,
    WR_IMPORT,
    WR_LIST_OBJECTS,
    WR_OBJECT_SIZE,
    WR_TOUCH,
    WR_TOTALS,
    WR_FOREACH,
    WR_DROP_URLS,
    WR_DROP_OBJECT,
    WR_ADOPT,
    WR_PUT_EXPECT,
    WR_PIN,
    WR_PUT_DEPLOYMENT,
    WR_DROP_DEPLOYMENT,
    WR_LIST_DEPLOYMENTS,
    WR_COUNT
};

struct stmt_def {
    const char *purpose;                /* what it does, for error messages */
    const char *sql;
};

static const struct stmt_def wr_defs[WR_COUNT] = {
    [WR_BEGIN] = {"begin a write transaction", "BEGIN IMMEDIATE"},
    [WR_COMMIT] = {"commit a write transaction", "COMMIT"},
    [WR_ROLLBACK] = {"roll back a write transaction", "ROLLBACK"},
    [WR_INSERT_OBJECT] = {"insert an object",
        "INSERT OR IGNORE INTO objects"
        "(sha256, size, created, last_access, hits, pinned, verified_by)"
        " VALUES (?1, ?2, ?3, ?3, 0, 0, ?4)"},
    /* A known object stored again: it was just used, and a real check
     * replaces the 'adopted' (or missing) provenance. */
    [WR_REFRESH_OBJECT] = {"refresh an object",
        "UPDATE objects SET last_access = max(last_access, ?2),"
        " verified_by = CASE WHEN ?3 IS NOT NULL"
        " AND (verified_by IS NULL OR verified_by = 'adopted')"
        " THEN ?3 ELSE verified_by END"
        " WHERE sha256 = ?1"},
    [WR_PUT_URL] = {"store a URL",
        "INSERT OR REPLACE INTO urls"
        "(key, sha256, origin_url, content_type, last_modified, origin_etag,"
        " stored_at, fresh_until, stale_if_error, cache_control)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"},
    [WR_DROP_URL] = {"forget a URL", "DELETE FROM urls WHERE key = ?1"},
    [WR_LIST_OBJECTS] = {"list objects with their URLs",
        "SELECT o.sha256, o.size, o.created, o.last_access, o.hits, o.pinned, o.verified_by,"
        " (SELECT group_concat(u.origin_url, char(10)) FROM urls u WHERE u.sha256 = o.sha256)"
        " FROM objects o WHERE o.sha256 > ?1 ORDER BY o.sha256 LIMIT ?2"},
    [WR_OBJECT_SIZE] = {"read an object's size", "SELECT size FROM objects WHERE sha256 = ?1"},
    [WR_IMPORT] = {"record a sideloaded object",
        "INSERT INTO objects(sha256, size, created, last_access, hits, pinned, verified_by)"
        " VALUES (?1, ?2, ?3, ?3, 0, 0, 'import') ON CONFLICT(sha256) DO UPDATE SET"
        " verified_by = 'import' WHERE verified_by IS NULL OR verified_by IN ('adopted', 'unverified')"},
    [WR_LRU] = {"list eviction candidates",
        "SELECT sha256, size FROM objects WHERE pinned = 0"
        " ORDER BY last_access ASC, created ASC LIMIT ?1"},
    [WR_REFRESH_URL] = {"refresh a URL's freshness",
        "UPDATE urls SET fresh_until = ?2, stale_if_error = ?3, stored_at = ?4"
        " WHERE key = ?1"},
    [WR_TOUCH] = {"record access times",
        "UPDATE objects SET last_access = max(last_access, ?2),"
        " hits = hits + ?3 WHERE sha256 = ?1"},
    [WR_TOTALS] = {"count objects",
        "SELECT count(*), coalesce(sum(size), 0) FROM objects"},
    [WR_FOREACH] = {"list objects", "SELECT sha256, size FROM objects"},
    [WR_DROP_URLS] = {"drop the URLs of an object",
        "DELETE FROM urls WHERE sha256 = ?1"},
    [WR_DROP_OBJECT] = {"drop an object",
        "DELETE FROM objects WHERE sha256 = ?1"},
    [WR_ADOPT] = {"adopt an object",
        "INSERT OR IGNORE INTO objects"
        "(sha256, size, created, last_access, hits, pinned, verified_by)"
        " VALUES (?1, ?2, ?3, ?3, 0, 0, 'adopted')"},
    [WR_PUT_EXPECT] = {"register an expectation",
        "INSERT OR REPLACE INTO expectations(key, sha256, size, source)"
        " VALUES (?1, ?2, ?3, ?4)"},
    [WR_PIN] = {"pin or unpin an object",
        "UPDATE objects SET pinned = max(0, pinned + ?2) WHERE sha256 = ?1"},
    [WR_PUT_DEPLOYMENT] = {"store a deployment",
        "INSERT OR REPLACE INTO deployments(id, created, body) VALUES (?1, ?2, ?3)"},
    [WR_DROP_DEPLOYMENT] = {"drop a deployment", "DELETE FROM deployments WHERE id = ?1"},
    [WR_LIST_DEPLOYMENTS] = {"list deployments",
        "SELECT id, created, body FROM deployments ORDER BY created, id"},
};

static const struct stmt_def lookup_def = {"look up a key",
    "SELECT o.sha256, o.size, u.origin_url, u.content_type, u.origin_etag,"
    " u.last_modified, u.stored_at, u.fresh_until, u.stale_if_error, u.cache_control"
    " FROM urls u JOIN objects o ON o.sha256 = u.sha256 WHERE u.key = ?1"};

static const struct stmt_def expect_def = {"look up an expectation",
    "SELECT sha256, size, source FROM expectations WHERE key = ?1"};

/* Schema version 2. Keep in step with the table list in cache/index.h. */
static const char schema_sql[] =
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
    "PRAGMA user_version = 2;";

/* Version 1 to 2: freshness of mutable content (RFC 9111). Rows stored by
 * version 1 were served as immutable and stay so. */
static const char migrate_v2_sql[] =
    "ALTER TABLE urls ADD COLUMN fresh_until INTEGER NOT NULL DEFAULT 9223372036854775807;"
    "ALTER TABLE urls ADD COLUMN stale_if_error INTEGER NOT NULL DEFAULT -1;"
    "ALTER TABLE urls ADD COLUMN cache_control TEXT;"
    "PRAGMA user_version = 2;";

/* One remembered access: hits reads of sha since the last flush, the
 * latest at `last`. */
struct touch {
    uint8_t sha[SHA256_LEN];
    int64_t last;
    uint32_t hits;
};

/* Entries fill ent[0..count); once full they form a ring whose oldest
 * entry is ent[head]. slot[] is an open-addressing table (linear probing)
 * of entry index + 1, 0 meaning empty; it is never more than half full. */
struct touch_batch {
    struct touch ent[TOUCH_CAP];
    uint16_t slot[TOUCH_SLOTS];
    unsigned count;
    unsigned head;
    uint64_t dropped;                   /* entries given up while full */
};

struct index {
    unsigned magic;
    char *path;                         /* owned */
    const struct logger *log;           /* not owned */
    sqlite3 *rd;
    sqlite3_stmt *lookup;               /* on rd */
    sqlite3_stmt *expect;               /* on rd */
    pthread_mutex_t wr_lock;            /* guards wr, wr_stmt, the idle batch */
    sqlite3 *wr;
    sqlite3_stmt *wr_stmt[WR_COUNT];
    pthread_mutex_t touch_lock;         /* guards `active` and its batch */
    struct touch_batch batch[2];
    int active;                         /* the batch index_touch() fills */
};

/* Table of contents. */
static int open_conn(struct index *idx, int flags, sqlite3 **db, char *err, size_t errlen);
static int setup_wr(struct index *idx, char *err, size_t errlen);
static int check_wal(struct index *idx, char *err, size_t errlen);
static int ensure_schema(struct index *idx, char *err, size_t errlen);
static int query_int(sqlite3 *db, const char *sql, int64_t *out);
static int prepare_all(struct index *idx, char *err, size_t errlen);
static void db_error(const struct index *idx, sqlite3 *db, const char *purpose);
static int wr_run(struct index *idx, enum wr_stmt id);
static int bind_text(sqlite3_stmt *st, int col, const char *s);
static int tx_begin(struct index *idx);
static int tx_end(struct index *idx, int rc);
static int put_object(struct index *idx, const struct index_commit *c, int *fresh);
static int put_url(struct index *idx, const struct index_commit *c);
static int drop_one(struct index *idx, const char *sha256);
static int entry_from_row(sqlite3_stmt *st, struct index_entry *out);
static int dup_column(sqlite3_stmt *st, int col, char **out);
static bool hex_decode(const char *hex, uint8_t out[SHA256_LEN]);
static void hex_encode(const uint8_t in[SHA256_LEN], char out[2 * SHA256_LEN + 1]);
static size_t touch_find(const struct touch_batch *b, const uint8_t sha[SHA256_LEN]);
static void touch_unslot(struct touch_batch *b, size_t i);
static void touch_add(struct touch_batch *b, const uint8_t sha[SHA256_LEN], int64_t now);
static void touch_reset(struct touch_batch *b);
static int touch_write(struct index *idx, const struct touch_batch *b);
static void index_free(struct index *idx);

/* ---- open and close ---------------------------------------------------- */

int index_open(struct index **out, const char *path, const struct logger *log,
               char *err, size_t errlen)
{
    struct index *idx = calloc(1, sizeof *idx);

    *out = NULL;
    if (!idx || !(idx->path = strdup(path))) {
        snprintf(err, errlen, "index %s: out of memory", path);
        free(idx);
        return -1;
    }
    idx->magic = INDEX_MAGIC;
    idx->log = log;
    pthread_mutex_init(&idx->wr_lock, NULL);
    pthread_mutex_init(&idx->touch_lock, NULL);
    if (open_conn(idx, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &idx->wr, err, errlen)
        || setup_wr(idx, err, errlen)
        || open_conn(idx, SQLITE_OPEN_READONLY, &idx->rd, err, errlen)
        || prepare_all(idx, err, errlen)) {
        index_free(idx);
        return -1;
    }
    *out = idx;
    return 0;
}

void index_close(struct index **pidx)
{
    struct index *idx = *pidx;

    if (!idx)
        return;
    assert(idx->magic == INDEX_MAGIC);
    index_flush_touches(idx);
    index_free(idx);
    *pidx = NULL;
}

/* Finalizes whatever was prepared and closes rd before wr, so that closing
 * the last connection checkpoints the WAL. */
static void index_free(struct index *idx)
{
    sqlite3_finalize(idx->lookup);
    sqlite3_finalize(idx->expect);
    for (int i = 0; i < WR_COUNT; i++)
        sqlite3_finalize(idx->wr_stmt[i]);
    sqlite3_close(idx->rd);
    sqlite3_close(idx->wr);
    pthread_mutex_destroy(&idx->wr_lock);
    pthread_mutex_destroy(&idx->touch_lock);
    idx->magic = 0;
    free(idx->path);
    free(idx);
}

/* Each connection is used by one thread at a time (rd: the loop; wr: under
 * wr_lock), so SQLite's own per-connection mutex is not needed. */
static int open_conn(struct index *idx, int flags, sqlite3 **db, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(idx->path, db, flags | SQLITE_OPEN_NOMUTEX, NULL);

    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open index %s: %s", idx->path,
                 *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
    return 0;
}

static int setup_wr(struct index *idx, char *err, size_t errlen)
{
    if (check_wal(idx, err, errlen))
        return -1;
    if (sqlite3_exec(idx->wr, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "index %s: set pragmas: %s", idx->path,
                 sqlite3_errmsg(idx->wr));
        return -1;
    }
    return ensure_schema(idx, err, errlen);
}

/* WAL is what lets the loop read while the thread pool writes; a file
 * system that cannot share memory between connections refuses it. */
static int check_wal(struct index *idx, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int ok = 0;

    if (sqlite3_prepare_v2(idx->wr, "PRAGMA journal_mode = WAL", -1, &st, NULL) == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        ok = mode && strcmp(mode, "wal") == 0;
        if (!ok)
            snprintf(err, errlen, "index %s: the file system refuses WAL mode"
                     " (journal mode stays '%s'); put cache_dir on a local disk",
                     idx->path, mode ? mode : "?");
    } else {
        snprintf(err, errlen, "index %s: enable WAL mode: %s", idx->path,
                 sqlite3_errmsg(idx->wr));
    }
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

/* Creates the tables of a new database; refuses one written by a newer
 * edgecache, whose tables this code would misread. */
static int ensure_schema(struct index *idx, char *err, size_t errlen)
{
    int64_t version = 0;

    if (query_int(idx->wr, "PRAGMA user_version", &version)) {
        snprintf(err, errlen, "index %s: read the schema version: %s", idx->path,
                 sqlite3_errmsg(idx->wr));
        return -1;
    }
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen, "index %s has schema version %" PRId64 ", newer than"
                 " this edgecache understands (%d): run a newer edgecache, or move"
                 " the file away to start an empty index", idx->path, version,
                 SCHEMA_VERSION);
        return -1;
    }
    if (version == SCHEMA_VERSION)
        return 0;
    if (sqlite3_exec(idx->wr, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK
        || sqlite3_exec(idx->wr, version == 1 ? migrate_v2_sql : schema_sql, NULL, NULL,
                        NULL) != SQLITE_OK
        || sqlite3_exec(idx->wr, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "index %s: create the tables: %s", idx->path,
                 sqlite3_errmsg(idx->wr));
        sqlite3_exec(idx->wr, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static int prepare_all(struct index *idx, char *err, size_t errlen)
{
    const struct stmt_def *bad = NULL;
    sqlite3 *db = idx->wr;

    for (int i = 0; i < WR_COUNT && !bad; i++)
        if (sqlite3_prepare_v3(idx->wr, wr_defs[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                               &idx->wr_stmt[i], NULL) != SQLITE_OK)
            bad = &wr_defs[i];
    if (!bad && sqlite3_prepare_v3(idx->rd, lookup_def.sql, -1, SQLITE_PREPARE_PERSISTENT,
                                   &idx->lookup, NULL) != SQLITE_OK) {
        bad = &lookup_def;
        db = idx->rd;
    }
    if (!bad && sqlite3_prepare_v3(idx->rd, expect_def.sql, -1, SQLITE_PREPARE_PERSISTENT,
                                   &idx->expect, NULL) != SQLITE_OK) {
        bad = &expect_def;
        db = idx->rd;
    }
    if (bad)
        snprintf(err, errlen, "index %s: prepare '%s': %s", idx->path, bad->purpose,
                 sqlite3_errmsg(db));
    return bad ? -1 : 0;
}

/* ---- statements and transactions ---------------------------------------- */

static void db_error(const struct index *idx, sqlite3 *db, const char *purpose)
{
    log_msg(idx->log, LOG_ERROR, "index", "%s: %s: %s", idx->path, purpose,
            sqlite3_errmsg(db));
}

/* Steps a bound write statement once (a row or done), then resets it and
 * clears its bindings. */
static int wr_run(struct index *idx, enum wr_stmt id)
{
    sqlite3_stmt *st = idx->wr_stmt[id];
    int rc = sqlite3_step(st);
    int ok = rc == SQLITE_DONE || rc == SQLITE_ROW;

    if (!ok)
        db_error(idx, idx->wr, wr_defs[id].purpose);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ok ? 0 : -1;
}

/* Binds s, or SQL NULL when s is NULL. Returns an SQLite result code. */
static int bind_text(sqlite3_stmt *st, int col, const char *s)
{
    return s ? sqlite3_bind_text(st, col, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, col);
}

static int tx_begin(struct index *idx)
{
    return wr_run(idx, WR_BEGIN);
}

/* Commits when rc is 0, else (or when the commit fails) rolls back.
 * Returns 0 when the transaction committed. */
static int tx_end(struct index *idx, int rc)
{
    if (rc == 0 && wr_run(idx, WR_COMMIT) == 0)
        return 0;
    if (!sqlite3_get_autocommit(idx->wr))
        wr_run(idx, WR_ROLLBACK);
    return -1;
}

/* ---- lookups (loop thread) ---------------------------------------------- */

int index_lookup(struct index *idx, const char *key, struct index_entry *out)
{
    sqlite3_stmt *st = idx->lookup;
    int rc, found = -1;

    assert(idx->magic == INDEX_MAGIC);
    memset(out, 0, sizeof *out);
    rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        found = entry_from_row(st, out);
    else if (rc == SQLITE_DONE)
        found = 0;
    else
        db_error(idx, idx->rd, lookup_def.purpose);
    if (found < 0 && rc == SQLITE_ROW)
        log_msg(idx->log, LOG_ERROR, "index", "%s: %s: bad row or out of memory",
                idx->path, lookup_def.purpose);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

/* Returns 1 with *out filled, or -1 (out of memory, a malformed digest)
 * with *out empty. */
static int entry_from_row(sqlite3_stmt *st, struct index_entry *out)
{
    const char *sha = (const char *)sqlite3_column_text(st, 0);

    if (!sha || strlen(sha) != 2 * SHA256_LEN)
        return -1;
    memcpy(out->sha256, sha, sizeof out->sha256);
    out->size = (uint64_t)sqlite3_column_int64(st, 1);
    out->last_modified = sqlite3_column_int64(st, 5);
    out->stored_at = sqlite3_column_int64(st, 6);
    out->fresh_until = sqlite3_column_int64(st, 7);
    out->stale_if_error = sqlite3_column_int64(st, 8);
    if (dup_column(st, 2, &out->origin_url) || dup_column(st, 3, &out->content_type)
        || dup_column(st, 9, &out->cache_control)
        || dup_column(st, 4, &out->origin_etag)) {
        index_entry_free(out);
        return -1;
    }
    return 1;
}

/* *out = a copy of the column's text, or NULL for SQL NULL. */
static int dup_column(sqlite3_stmt *st, int col, char **out)
{
    const char *s = (const char *)sqlite3_column_text(st, col);

    *out = NULL;
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return 0;
    if (!s || !(*out = strdup(s)))
        return -1;
    return 0;
}

void index_entry_free(struct index_entry *e)
{
    free(e->origin_url);
    free(e->content_type);
    free(e->cache_control);
    e->cache_control = NULL;
    free(e->origin_etag);
    e->origin_url = e->content_type = e->origin_etag = NULL;
}

int index_entry_copy(struct index_entry *dst, const struct index_entry *src)
{
    *dst = *src;
    dst->origin_url = dst->content_type = dst->origin_etag = dst->cache_control = NULL;
    if ((src->origin_url && !(dst->origin_url = strdup(src->origin_url)))
        || (src->content_type && !(dst->content_type = strdup(src->content_type)))
        || (src->origin_etag && !(dst->origin_etag = strdup(src->origin_etag)))
        || (src->cache_control && !(dst->cache_control = strdup(src->cache_control)))) {
        index_entry_free(dst);
        return -1;
    }
    return 0;
}

/* ---- writes (thread pool) ----------------------------------------------- */

int index_commit_object(struct index *idx, const struct index_commit *c, int *new_object)
{
    uint8_t sha[SHA256_LEN];
    int fresh = 0, rc;

    assert(idx->magic == INDEX_MAGIC);
    if (!c->key || !c->origin_url || !c->sha256 || !hex_decode(c->sha256, sha)) {
        log_msg(idx->log, LOG_ERROR, "index", "%s: commit of key %s: missing URL or"
                " bad digest '%s'", idx->path, c->key ? c->key : "(none)",
                c->sha256 ? c->sha256 : "(none)");
        return -1;
    }
    pthread_mutex_lock(&idx->wr_lock);
    rc = tx_begin(idx);
    if (rc == 0)
        rc = put_object(idx, c, &fresh);
    if (rc == 0)
        rc = put_url(idx, c);
    rc = tx_end(idx, rc);
    pthread_mutex_unlock(&idx->wr_lock);
    if (rc == 0 && new_object)
        *new_object = fresh;
    return rc;
}

/* Inserts the objects row, or refreshes the one that exists (*fresh = 0). */
static int put_object(struct index *idx, const struct index_commit *c, int *fresh)
{
    sqlite3_stmt *ins = idx->wr_stmt[WR_INSERT_OBJECT];
    sqlite3_stmt *ref = idx->wr_stmt[WR_REFRESH_OBJECT];

    if (sqlite3_bind_text(ins, 1, c->sha256, -1, SQLITE_STATIC)
        | sqlite3_bind_int64(ins, 2, (sqlite3_int64)c->size)
        | sqlite3_bind_int64(ins, 3, c->now)
        | bind_text(ins, 4, c->verified_by)
        || wr_run(idx, WR_INSERT_OBJECT))
        return -1;
    *fresh = sqlite3_changes(idx->wr) > 0;
    if (*fresh)
        return 0;
    if (sqlite3_bind_text(ref, 1, c->sha256, -1, SQLITE_STATIC)
        | sqlite3_bind_int64(ref, 2, c->now)
        | bind_text(ref, 3, c->verified_by))
        return -1;
    return wr_run(idx, WR_REFRESH_OBJECT);
}

static int put_url(struct index *idx, const struct index_commit *c)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_PUT_URL];

    if (sqlite3_bind_text(st, 1, c->key, -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 2, c->sha256, -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 3, c->origin_url, -1, SQLITE_STATIC)
        | bind_text(st, 4, c->content_type)
        | sqlite3_bind_int64(st, 5, c->last_modified)
        | bind_text(st, 6, c->origin_etag)
        | sqlite3_bind_int64(st, 7, c->now)
        | sqlite3_bind_int64(st, 8, c->fresh_until ? c->fresh_until : INT64_MAX)
        | sqlite3_bind_int64(st, 9, c->stale_if_error ? c->stale_if_error : -1)
        | bind_text(st, 10, c->cache_control))
        return -1;
    return wr_run(idx, WR_PUT_URL);
}

int index_totals(struct index *idx, uint64_t *objects, uint64_t *bytes)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_TOTALS];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *objects = (uint64_t)sqlite3_column_int64(st, 0);
        *bytes = (uint64_t)sqlite3_column_int64(st, 1);
    } else {
        db_error(idx, idx->wr, wr_defs[WR_TOTALS].purpose);
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc == SQLITE_ROW ? 0 : -1;
}

int index_foreach_object(struct index *idx, index_object_cb cb, void *ctx)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_FOREACH];
    int rc = SQLITE_DONE, stop = 0;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *sha = (const char *)sqlite3_column_text(st, 0);
        if (sha)
            stop = cb(ctx, sha, (uint64_t)sqlite3_column_int64(st, 1));
    }
    if (!stop && rc != SQLITE_DONE) {
        db_error(idx, idx->wr, wr_defs[WR_FOREACH].purpose);
        stop = -1;
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return stop;
}

int index_drop_object(struct index *idx, const char *sha256)
{
    return index_drop_objects(idx, &sha256, 1);
}

int index_drop_objects(struct index *idx, const char *const *sha256, size_t n)
{
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    rc = tx_begin(idx);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = drop_one(idx, sha256[i]);
    rc = tx_end(idx, rc);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

/* The urls rows first: they reference the objects row. */
static int drop_one(struct index *idx, const char *sha256)
{
    if (sqlite3_bind_text(idx->wr_stmt[WR_DROP_URLS], 1, sha256, -1, SQLITE_STATIC)
        || wr_run(idx, WR_DROP_URLS))
        return -1;
    if (sqlite3_bind_text(idx->wr_stmt[WR_DROP_OBJECT], 1, sha256, -1, SQLITE_STATIC)
        || wr_run(idx, WR_DROP_OBJECT))
        return -1;
    return 0;
}

int index_adopt_object(struct index *idx, const char *sha256, uint64_t size, int64_t now)
{
    struct index_object o = {.sha256 = sha256, .size = size, .now = now};

    return index_adopt_objects(idx, &o, 1);
}

int index_adopt_objects(struct index *idx, const struct index_object *objs, size_t n)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_ADOPT];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    rc = tx_begin(idx);
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t sha[SHA256_LEN];
        if (!hex_decode(objs[i].sha256, sha)) {
            log_msg(idx->log, LOG_ERROR, "index", "%s: adopt: bad digest '%s'", idx->path,
                    objs[i].sha256);
            rc = -1;
            break;
        }
        rc = sqlite3_bind_text(st, 1, objs[i].sha256, -1, SQLITE_STATIC)
             | sqlite3_bind_int64(st, 2, (sqlite3_int64)objs[i].size)
             | sqlite3_bind_int64(st, 3, objs[i].now);
        rc = rc != SQLITE_OK ? -1 : wr_run(idx, WR_ADOPT);
    }
    rc = tx_end(idx, rc);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

/* ---- access times ------------------------------------------------------- */

void index_touch(struct index *idx, const char *sha256, int64_t now)
{
    uint8_t sha[SHA256_LEN];

    assert(idx->magic == INDEX_MAGIC);
    if (!hex_decode(sha256, sha))
        return;
    pthread_mutex_lock(&idx->touch_lock);
    touch_add(&idx->batch[idx->active], sha, now);
    pthread_mutex_unlock(&idx->touch_lock);
}

int index_flush_touches(struct index *idx)
{
    struct touch_batch *b;
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    pthread_mutex_lock(&idx->touch_lock);
    b = &idx->batch[idx->active];
    idx->active ^= 1;
    pthread_mutex_unlock(&idx->touch_lock);
    if (b->dropped)
        log_msg(idx->log, LOG_WARN, "index", "%s: %" PRIu64 " access times were not"
                " recorded: more than %d distinct objects were read between two"
                " flushes", idx->path, b->dropped, TOUCH_CAP);
    rc = b->count ? touch_write(idx, b) : 0;
    touch_reset(b);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

/* One transaction for the whole batch; rows evicted meanwhile are skipped
 * by the UPDATE. */
static int touch_write(struct index *idx, const struct touch_batch *b)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_TOUCH];
    char hex[2 * SHA256_LEN + 1];
    int rc = tx_begin(idx);

    for (unsigned i = 0; i < b->count && rc == 0; i++) {
        hex_encode(b->ent[i].sha, hex);
        rc = sqlite3_bind_text(st, 1, hex, -1, SQLITE_STATIC)
             | sqlite3_bind_int64(st, 2, b->ent[i].last)
             | sqlite3_bind_int64(st, 3, b->ent[i].hits);
        rc = rc != SQLITE_OK ? -1 : wr_run(idx, WR_TOUCH);
    }
    return tx_end(idx, rc);
}

static uint32_t touch_home(const uint8_t sha[SHA256_LEN])
{
    uint32_t h;

    memcpy(&h, sha, sizeof h);          /* a digest is already uniform */
    return h & (TOUCH_SLOTS - 1);
}

/* The slot holding sha, or the empty slot where it would go. */
static size_t touch_find(const struct touch_batch *b, const uint8_t sha[SHA256_LEN])
{
    size_t i = touch_home(sha);

    while (b->slot[i] && memcmp(b->ent[b->slot[i] - 1].sha, sha, SHA256_LEN) != 0)
        i = (i + 1) & (TOUCH_SLOTS - 1);
    return i;
}

/* Empties slot i, shifting back the entries of its probe run so that every
 * key stays reachable from its home slot. */
static void touch_unslot(struct touch_batch *b, size_t i)
{
    size_t j = i;

    b->slot[i] = 0;
    for (;;) {
        j = (j + 1) & (TOUCH_SLOTS - 1);
        if (!b->slot[j])
            return;
        size_t home = touch_home(b->ent[b->slot[j] - 1].sha);
        bool reachable = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!reachable) {
            b->slot[i] = b->slot[j];
            b->slot[j] = 0;
            i = j;
        }
    }
}

static void touch_add(struct touch_batch *b, const uint8_t sha[SHA256_LEN], int64_t now)
{
    size_t i = touch_find(b, sha);
    unsigned e;

    if (b->slot[i]) {
        struct touch *t = &b->ent[b->slot[i] - 1];
        if (now > t->last)
            t->last = now;
        if (t->hits < UINT32_MAX)
            t->hits++;
        return;
    }
    if (b->count < TOUCH_CAP) {
        e = b->count++;
    } else {
        e = b->head;
        b->head = (b->head + 1) % TOUCH_CAP;
        touch_unslot(b, touch_find(b, b->ent[e].sha));
        b->dropped++;
        i = touch_find(b, sha);
    }
    memcpy(b->ent[e].sha, sha, SHA256_LEN);
    b->ent[e].last = now;
    b->ent[e].hits = 1;
    b->slot[i] = (uint16_t)(e + 1);
}

static void touch_reset(struct touch_batch *b)
{
    memset(b->slot, 0, sizeof b->slot);
    b->count = 0;
    b->head = 0;
    b->dropped = 0;
}

/* ---- digests ------------------------------------------------------------ */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Accepts exactly 64 lower-case hex characters. */
static bool hex_decode(const char *hex, uint8_t out[SHA256_LEN])
{
    for (int i = 0; i < SHA256_LEN; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hi < 0 ? -1 : hex_value(hex[2 * i + 1]);
        if (lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return hex[2 * SHA256_LEN] == '\0';
}

static void hex_encode(const uint8_t in[SHA256_LEN], char out[2 * SHA256_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < SHA256_LEN; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * SHA256_LEN] = '\0';
}

/* ---- expectations ------------------------------------------------------- */

int index_expect_put(struct index *idx, const struct index_expectation *e, size_t n)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_PUT_EXPECT];
    uint8_t sha[SHA256_LEN];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    for (size_t i = 0; i < n; i++)
        if (!e[i].key || !e[i].sha256 || !hex_decode(e[i].sha256, sha))
            return -1;
    pthread_mutex_lock(&idx->wr_lock);
    rc = tx_begin(idx);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (sqlite3_bind_text(st, 1, e[i].key, -1, SQLITE_STATIC)
            | sqlite3_bind_text(st, 2, e[i].sha256, -1, SQLITE_STATIC)
            | (e[i].size >= 0 ? sqlite3_bind_int64(st, 3, e[i].size) : sqlite3_bind_null(st, 3))
            | bind_text(st, 4, e[i].source))
            rc = -1;
        else
            rc = wr_run(idx, WR_PUT_EXPECT);
    }
    rc = tx_end(idx, rc);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_expect_get(struct index *idx, const char *key, struct index_expected *out)
{
    sqlite3_stmt *st = idx->expect;
    int rc, found = -1;

    assert(idx->magic == INDEX_MAGIC);
    memset(out, 0, sizeof *out);
    out->size = -1;
    rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *sha = (const char *)sqlite3_column_text(st, 0);
        const char *src = (const char *)sqlite3_column_text(st, 2);
        found = sha && strlen(sha) == 2 * SHA256_LEN;
        if (found) {
            memcpy(out->sha256, sha, sizeof out->sha256);
            if (sqlite3_column_type(st, 1) != SQLITE_NULL)
                out->size = sqlite3_column_int64(st, 1);
            snprintf(out->source, sizeof out->source, "%s", src ? src : "");
        }
    } else if (rc == SQLITE_DONE) {
        found = 0;
    } else {
        db_error(idx, idx->rd, expect_def.purpose);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

/* ---- pins and deployments ------------------------------------------------ */

int index_pin(struct index *idx, const char *sha256, int delta)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_PIN];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, sha256, -1, SQLITE_STATIC) | sqlite3_bind_int(st, 2, delta))
        rc = -1;
    else
        rc = wr_run(idx, WR_PIN);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_deployment_put(struct index *idx, const char *id, int64_t created, const char *body)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_PUT_DEPLOYMENT];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC) | sqlite3_bind_int64(st, 2, created)
        | bind_text(st, 3, body))
        rc = -1;
    else
        rc = wr_run(idx, WR_PUT_DEPLOYMENT);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_deployment_drop(struct index *idx, const char *id)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_DROP_DEPLOYMENT];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC))
        rc = -1;
    else
        rc = wr_run(idx, WR_DROP_DEPLOYMENT);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_deployment_foreach(struct index *idx, index_deployment_cb cb, void *ctx)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_LIST_DEPLOYMENTS];
    int rc, stop = 0;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW)
        stop = cb(ctx, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
                  (const char *)sqlite3_column_text(st, 2));
    if (!stop && rc != SQLITE_DONE)
        db_error(idx, idx->wr, wr_defs[WR_LIST_DEPLOYMENTS].purpose);
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return stop ? stop : (rc == SQLITE_DONE ? 0 : -1);
}

int index_refresh_url(struct index *idx, const char *key, int64_t fresh_until,
                      int64_t stale_if_error, int64_t now)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_REFRESH_URL];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) | sqlite3_bind_int64(st, 2, fresh_until)
        | sqlite3_bind_int64(st, 3, stale_if_error) | sqlite3_bind_int64(st, 4, now))
        rc = -1;
    else
        rc = wr_run(idx, WR_REFRESH_URL);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_drop_url(struct index *idx, const char *key)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_DROP_URL];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC))
        rc = -1;
    else
        rc = wr_run(idx, WR_DROP_URL);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_lru(struct index *idx, unsigned limit, struct index_lru_entry *out, size_t *n)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_LRU];
    int rc = 0;

    assert(idx->magic == INDEX_MAGIC);
    *n = 0;
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_int(st, 1, (int)limit) != SQLITE_OK)
        rc = -1;
    while (rc == 0 && *n < limit) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE)
            break;
        const char *sha = (const char *)sqlite3_column_text(st, 0);
        if (step != SQLITE_ROW || !sha || strlen(sha) != 2 * SHA256_LEN) {
            db_error(idx, idx->wr, wr_defs[WR_LRU].purpose);
            rc = -1;
            break;
        }
        memcpy(out[*n].sha256, sha, sizeof out[*n].sha256);
        out[*n].size = (uint64_t)sqlite3_column_int64(st, 1);
        (*n)++;
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_list_objects(struct index *idx, const char *after, unsigned limit,
                       index_listing_cb cb, void *ctx)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_LIST_OBJECTS];
    int rc = SQLITE_DONE, n = 0;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, after ? after : "", -1, SQLITE_STATIC)
        | sqlite3_bind_int(st, 2, (int)limit))
        rc = SQLITE_ERROR;
    while (rc == SQLITE_DONE || rc == SQLITE_ROW) {
        if ((rc = sqlite3_step(st)) != SQLITE_ROW)
            break;
        struct index_listing l = {
            .sha256 = (const char *)sqlite3_column_text(st, 0),
            .size = (uint64_t)sqlite3_column_int64(st, 1),
            .created = sqlite3_column_int64(st, 2),
            .last_access = sqlite3_column_int64(st, 3),
            .hits = sqlite3_column_int64(st, 4),
            .pinned = sqlite3_column_int(st, 5),
            .verified_by = (const char *)sqlite3_column_text(st, 6),
            .urls = (const char *)sqlite3_column_text(st, 7),
        };
        if (l.sha256) {
            cb(ctx, &l);
            n++;
        }
    }
    if (rc != SQLITE_DONE) {
        db_error(idx, idx->wr, wr_defs[WR_LIST_OBJECTS].purpose);
        n = -1;
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return n;
}

int index_object_size(struct index *idx, const char *sha256, uint64_t *size)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_OBJECT_SIZE];
    int found = -1;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, sha256, -1, SQLITE_STATIC) == SQLITE_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *size = (uint64_t)sqlite3_column_int64(st, 0);
            found = 1;
        } else if (rc == SQLITE_DONE) {
            found = 0;
        } else {
            db_error(idx, idx->wr, wr_defs[WR_OBJECT_SIZE].purpose);
        }
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return found;
}

int index_import_object(struct index *idx, const char *sha256, uint64_t size, int64_t now)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_IMPORT];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, sha256, -1, SQLITE_STATIC)
        | sqlite3_bind_int64(st, 2, (sqlite3_int64)size) | sqlite3_bind_int64(st, 3, now))
        rc = -1;
    else
        rc = wr_run(idx, WR_IMPORT);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}
