/*
 * index — the SQLite index of what the store holds (cache/index.h).
 *
 * Data model: an objects row stands for one blob (by SHA-256); a responses
 * row is one stored response — a cache key and its variant (the secondary
 * key from Vary, "" without) — and names the objects row holding its body;
 * several responses may share a blob. A responses row never outlives its
 * objects row: index_drop_object() deletes both in one transaction, the
 * schema cascades the delete, and the listing joins the two tables, so a
 * row left without its object (a database edited by hand) is not loaded.
 *
 * Connections and threads:
 *  - `wr` and its prepared statements are used only with wr_lock held, from
 *    whichever thread writes (the libuv thread pool, or start-up code).
 *  - The loop thread never touches SQLite: it serves from the catalog
 *    (cache/catalog.h), loaded from here at start-up and written behind.
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
#include <time.h>

#include "cache/http_range.h"

#define INDEX_MAGIC 0x1dec5e11u
#define SCHEMA_VERSION 3
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
    WR_PUT_RESPONSE,
    WR_UPDATE_RESPONSE,
    WR_DROP_KEY,
    WR_LIST_RESPONSES,
    WR_LIST_EXPECTATIONS,
    WR_RESPONSE_SHA,
    WR_LRU,
    WR_IMPORT,
    WR_LIST_OBJECTS,
    WR_OBJECT_SIZE,
    WR_OBJECT_URLS,
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
    [WR_PUT_RESPONSE] = {"store a response",
        "INSERT OR REPLACE INTO responses"
        "(key, variant, sha256, origin_url, status, vary, headers, stored_at,"
        " initial_age, fresh_until, stale_if_error, flags)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"},
    [WR_UPDATE_RESPONSE] = {"update a response after a 304",
        "UPDATE responses SET headers = ?3, stored_at = ?4, initial_age = ?5,"
        " fresh_until = ?6, stale_if_error = ?7, flags = ?8"
        " WHERE key = ?1 AND variant = ?2 AND sha256 = ?9"},
    [WR_DROP_KEY] = {"forget a key's responses", "DELETE FROM responses WHERE key = ?1"},
    [WR_LIST_RESPONSES] = {"list the stored responses",
        "SELECT r.key, r.variant, r.sha256, r.origin_url, r.status, r.vary, r.headers,"
        " r.stored_at, r.initial_age, r.fresh_until, r.stale_if_error, r.flags, o.size"
        " FROM responses r JOIN objects o ON o.sha256 = r.sha256"
        /* oldest first: the catalog lists each at the front of its key,
         * so the newest matching variant is chosen, as before a restart */
        " ORDER BY r.key, r.stored_at"},
    [WR_LIST_EXPECTATIONS] = {"list the expectations",
        "SELECT key, sha256, size, source FROM expectations"},
    [WR_RESPONSE_SHA] = {"look up a response",
        "SELECT r.sha256 FROM responses r JOIN objects o ON o.sha256 = r.sha256"
        " WHERE r.key = ?1 AND r.variant = ?2"},
    [WR_LIST_OBJECTS] = {"list objects with their URLs",
        "SELECT o.sha256, o.size, o.created, o.last_access, o.hits, o.pinned, o.verified_by,"
        " (SELECT group_concat(u.origin_url, char(10)) FROM responses u WHERE u.sha256 = o.sha256)"
        " FROM objects o WHERE o.sha256 > ?1 ORDER BY o.sha256 LIMIT ?2"},
    [WR_OBJECT_SIZE] = {"read an object's size", "SELECT size FROM objects WHERE sha256 = ?1"},
    [WR_OBJECT_URLS] = {"list an object's URLs",
        "SELECT group_concat(origin_url, char(10)) FROM"
        " (SELECT DISTINCT origin_url FROM responses WHERE sha256 = ?1 ORDER BY origin_url)"},
    [WR_IMPORT] = {"record a sideloaded object",
        "INSERT INTO objects(sha256, size, created, last_access, hits, pinned, verified_by)"
        " VALUES (?1, ?2, ?3, ?3, 0, 0, 'import') ON CONFLICT(sha256) DO UPDATE SET"
        " verified_by = 'import' WHERE verified_by IS NULL OR verified_by IN ('adopted', 'unverified')"},
    [WR_LRU] = {"list eviction candidates",
        "SELECT sha256, size FROM objects WHERE pinned = 0"
        " ORDER BY last_access ASC, created ASC LIMIT ?1"},
    [WR_TOUCH] = {"record access times",
        "UPDATE objects SET last_access = max(last_access, ?2),"
        " hits = hits + ?3 WHERE sha256 = ?1"},
    [WR_TOTALS] = {"count objects",
        "SELECT count(*), coalesce(sum(size), 0) FROM objects"},
    [WR_FOREACH] = {"list objects", "SELECT sha256, size FROM objects"},
    [WR_DROP_URLS] = {"drop the responses of an object",
        "DELETE FROM responses WHERE sha256 = ?1"},
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

#define RESPONSES_TABLE_SQL                                                          \
    "CREATE TABLE IF NOT EXISTS responses("                                      \
    " key TEXT NOT NULL,"                                                        \
    " variant TEXT NOT NULL DEFAULT '',"                                         \
    " sha256 TEXT NOT NULL REFERENCES objects(sha256) ON DELETE CASCADE,"        \
    " origin_url TEXT NOT NULL,"                                                 \
    " status INTEGER NOT NULL DEFAULT 200,"                                      \
    " vary TEXT NOT NULL DEFAULT '',"                                            \
    " headers TEXT NOT NULL DEFAULT '',"                                         \
    " stored_at INTEGER NOT NULL,"                                               \
    " initial_age INTEGER NOT NULL DEFAULT 0,"                                   \
    " fresh_until INTEGER NOT NULL DEFAULT 9223372036854775807,"                 \
    " stale_if_error INTEGER NOT NULL DEFAULT -1,"                               \
    " flags INTEGER NOT NULL DEFAULT 0,"                                         \
    " PRIMARY KEY(key, variant)) WITHOUT ROWID;"                                 \
    "CREATE INDEX IF NOT EXISTS responses_by_sha256 ON responses(sha256);"

/* Schema version 3. Keep in step with the table list in cache/index.h. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS objects("
    " sha256 TEXT PRIMARY KEY NOT NULL,"
    " size INTEGER NOT NULL,"
    " created INTEGER NOT NULL,"
    " last_access INTEGER NOT NULL,"
    " hits INTEGER NOT NULL DEFAULT 0,"
    " pinned INTEGER NOT NULL DEFAULT 0,"
    " verified_by TEXT) WITHOUT ROWID;"
    RESPONSES_TABLE_SQL
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
    "PRAGMA user_version = 3;";

/* Version 1 to 2: freshness of mutable content (RFC 9111). Rows stored by
 * version 1 were served as immutable and stay so. */
static const char migrate_v2_sql[] =
    "ALTER TABLE urls ADD COLUMN fresh_until INTEGER NOT NULL DEFAULT 9223372036854775807;"
    "ALTER TABLE urls ADD COLUMN stale_if_error INTEGER NOT NULL DEFAULT -1;"
    "ALTER TABLE urls ADD COLUMN cache_control TEXT;"
    "PRAGMA user_version = 2;";

/* Version 2 to 3: a key holds stored responses (its variants), each with
 * its status and whole header block, instead of one URL row with four
 * chosen fields. The urls rows become responses of status 200, variant ""
 * (migrate_v3 writes their header blocks). */
static const char migrate_v3_sql[] =
    RESPONSES_TABLE_SQL
    "PRAGMA user_version = 3;";

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
static int put_object(struct index *idx, const struct index_response *r, int64_t now,
                      const char *verified_by, int *fresh);
static int put_response(struct index *idx, const struct index_response *r);
static int drop_one(struct index *idx, const char *sha256);
static int migrate_v3(struct index *idx);
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
        || prepare_all(idx, err, errlen)) {
        int code = idx->wr ? sqlite3_errcode(idx->wr) & 0xff : SQLITE_OK;
        index_free(idx);
        return code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? -2 : -1;
    }
    *out = idx;
    return 0;
}

int index_quick_check(struct index *idx)
{
    sqlite3_stmt *st = NULL;
    int damaged = -1;

    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_prepare_v2(idx->wr, "PRAGMA quick_check(1)", -1, &st, NULL) == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        damaged = !(v && strcmp(v, "ok") == 0);
    } else {
        int code = sqlite3_errcode(idx->wr) & 0xff;
        damaged = code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? 1 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return damaged;
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

/* Finalizes whatever was prepared and closes the connection (the last one
 * to close checkpoints the WAL). */
static void index_free(struct index *idx)
{
    for (int i = 0; i < WR_COUNT; i++)
        sqlite3_finalize(idx->wr_stmt[i]);
    sqlite3_close(idx->wr);
    pthread_mutex_destroy(&idx->wr_lock);
    pthread_mutex_destroy(&idx->touch_lock);
    idx->magic = 0;
    free(idx->path);
    free(idx);
}

/* The connection is used by one thread at a time (under wr_lock), so
 * SQLite's own per-connection mutex is not needed. */
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
    int ok = sqlite3_exec(idx->wr, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    if (ok && version == 0)
        ok = sqlite3_exec(idx->wr, schema_sql, NULL, NULL, NULL) == SQLITE_OK;
    if (ok && version == 1)
        ok = sqlite3_exec(idx->wr, migrate_v2_sql, NULL, NULL, NULL) == SQLITE_OK;
    if (ok && version >= 1)
        ok = migrate_v3(idx) == 0;
    if (!ok || sqlite3_exec(idx->wr, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
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

/* ---- writes (thread pool) ----------------------------------------------- */

int index_commit_response(struct index *idx, const struct index_response *r, int64_t now,
                          const char *verified_by, int *new_object)
{
    uint8_t sha[SHA256_LEN];
    int fresh = 0, rc;

    assert(idx->magic == INDEX_MAGIC);
    if (!r->key || !r->origin_url || !r->sha256 || !hex_decode(r->sha256, sha)) {
        log_msg(idx->log, LOG_ERROR, "index", "%s: commit of key %s: missing URL or"
                " bad digest '%s'", idx->path, r->key ? r->key : "(none)",
                r->sha256 ? r->sha256 : "(none)");
        return -1;
    }
    pthread_mutex_lock(&idx->wr_lock);
    rc = tx_begin(idx);
    if (rc == 0)
        rc = put_object(idx, r, now, verified_by, &fresh);
    if (rc == 0)
        rc = put_response(idx, r);
    rc = tx_end(idx, rc);
    pthread_mutex_unlock(&idx->wr_lock);
    if (rc == 0 && new_object)
        *new_object = fresh;
    return rc;
}

/* Inserts the objects row, or refreshes the one that exists (*fresh = 0). */
static int put_object(struct index *idx, const struct index_response *r, int64_t now,
                      const char *verified_by, int *fresh)
{
    sqlite3_stmt *ins = idx->wr_stmt[WR_INSERT_OBJECT];
    sqlite3_stmt *ref = idx->wr_stmt[WR_REFRESH_OBJECT];

    if (sqlite3_bind_text(ins, 1, r->sha256, -1, SQLITE_STATIC)
        | sqlite3_bind_int64(ins, 2, (sqlite3_int64)r->size)
        | sqlite3_bind_int64(ins, 3, now)
        | bind_text(ins, 4, verified_by)
        || wr_run(idx, WR_INSERT_OBJECT))
        return -1;
    *fresh = sqlite3_changes(idx->wr) > 0;
    if (*fresh)
        return 0;
    if (sqlite3_bind_text(ref, 1, r->sha256, -1, SQLITE_STATIC)
        | sqlite3_bind_int64(ref, 2, now)
        | bind_text(ref, 3, verified_by))
        return -1;
    return wr_run(idx, WR_REFRESH_OBJECT);
}

static int put_response(struct index *idx, const struct index_response *r)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_PUT_RESPONSE];

    if (sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 2, r->variant ? r->variant : "", -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 3, r->sha256, -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 4, r->origin_url, -1, SQLITE_STATIC)
        | sqlite3_bind_int64(st, 5, r->status ? r->status : 200)
        | sqlite3_bind_text(st, 6, r->vary ? r->vary : "", -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 7, r->headers ? r->headers : "", -1, SQLITE_STATIC)
        | sqlite3_bind_int64(st, 8, r->stored_at)
        | sqlite3_bind_int64(st, 9, r->initial_age)
        | sqlite3_bind_int64(st, 10, r->fresh_until)
        | sqlite3_bind_int64(st, 11, r->stale_if_error)
        | sqlite3_bind_int64(st, 12, r->flags))
        return -1;
    return wr_run(idx, WR_PUT_RESPONSE);
}

static const char *column_text(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    return t ? t : "";
}

int index_response_sha(struct index *idx, const char *key, const char *variant,
                       char *sha256_out)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_RESPONSE_SHA];
    int found = -1;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) == SQLITE_OK
        && sqlite3_bind_text(st, 2, variant ? variant : "", -1, SQLITE_STATIC) == SQLITE_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            snprintf(sha256_out, 65, "%s", column_text(st, 0));
            found = 1;
        } else if (rc == SQLITE_DONE) {
            found = 0;
        } else {
            db_error(idx, idx->wr, wr_defs[WR_RESPONSE_SHA].purpose);
        }
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return found;
}

int index_update_response(struct index *idx, const struct index_response *r)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_UPDATE_RESPONSE];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 2, r->variant ? r->variant : "", -1, SQLITE_STATIC)
        | sqlite3_bind_text(st, 3, r->headers ? r->headers : "", -1, SQLITE_STATIC)
        | sqlite3_bind_int64(st, 4, r->stored_at)
        | sqlite3_bind_int64(st, 5, r->initial_age)
        | sqlite3_bind_int64(st, 6, r->fresh_until)
        | sqlite3_bind_int64(st, 7, r->stale_if_error)
        | sqlite3_bind_int64(st, 8, r->flags)
        | sqlite3_bind_text(st, 9, r->sha256, -1, SQLITE_STATIC))
        rc = -1;
    else
        rc = wr_run(idx, WR_UPDATE_RESPONSE);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}

int index_drop_key(struct index *idx, const char *key)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_DROP_KEY];
    int rc;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC))
        rc = -1;
    else
        rc = wr_run(idx, WR_DROP_KEY);
    pthread_mutex_unlock(&idx->wr_lock);
    return rc;
}


int index_foreach_response(struct index *idx, index_response_cb cb, void *ctx)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_LIST_RESPONSES];
    int rc = SQLITE_DONE, stop = 0;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct index_response r = {
            .key = column_text(st, 0),
            .variant = column_text(st, 1),
            .sha256 = column_text(st, 2),
            .origin_url = column_text(st, 3),
            .status = (long)sqlite3_column_int64(st, 4),
            .vary = column_text(st, 5),
            .headers = column_text(st, 6),
            .stored_at = sqlite3_column_int64(st, 7),
            .initial_age = sqlite3_column_int64(st, 8),
            .fresh_until = sqlite3_column_int64(st, 9),
            .stale_if_error = sqlite3_column_int64(st, 10),
            .flags = (unsigned)sqlite3_column_int64(st, 11),
            .size = (uint64_t)sqlite3_column_int64(st, 12),
        };
        if (strlen(r.sha256) == 2 * SHA256_LEN)
            stop = cb(ctx, &r);
    }
    if (!stop && rc != SQLITE_DONE) {
        db_error(idx, idx->wr, wr_defs[WR_LIST_RESPONSES].purpose);
        stop = -1;
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return stop;
}

int index_foreach_expectation(struct index *idx, index_expect_cb cb, void *ctx)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_LIST_EXPECTATIONS];
    int rc = SQLITE_DONE, stop = 0;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *sha = column_text(st, 1);
        int64_t size = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1
                                                                 : sqlite3_column_int64(st, 2);
        if (strlen(sha) == 2 * SHA256_LEN)
            stop = cb(ctx, column_text(st, 0), sha, size, column_text(st, 3));
    }
    if (!stop && rc != SQLITE_DONE) {
        db_error(idx, idx->wr, wr_defs[WR_LIST_EXPECTATIONS].purpose);
        stop = -1;
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return stop;
}

/* Version 2's urls rows as responses (within ensure_schema's transaction):
 * status 200, no variant, and a header block from the fields it kept. */
static int migrate_v3(struct index *idx)
{
    sqlite3_stmt *sel = NULL, *ins = NULL;
    int rc = sqlite3_exec(idx->wr, migrate_v3_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(idx->wr,
            "SELECT key, sha256, origin_url, content_type, last_modified, origin_etag,"
            " stored_at, fresh_until, stale_if_error, cache_control FROM urls", -1, &sel, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(idx->wr,
            "INSERT OR REPLACE INTO responses(key, variant, sha256, origin_url, status, vary,"
            " headers, stored_at, initial_age, fresh_until, stale_if_error, flags)"
            " VALUES (?1, '', ?2, ?3, 200, '', ?4, ?5, 0, ?6, ?7, 0)", -1, &ins, NULL);
    while (rc == SQLITE_OK && sqlite3_step(sel) == SQLITE_ROW) {
        char block[4096], date[64];
        size_t pos = 0;
        const char *ctype = (const char *)sqlite3_column_text(sel, 3);
        const char *etag = (const char *)sqlite3_column_text(sel, 5);
        const char *cc = (const char *)sqlite3_column_text(sel, 9);
        int64_t lm = sqlite3_column_int64(sel, 4);
        block[0] = '\0';
        if (ctype)
            pos += (size_t)snprintf(block + pos, sizeof block - pos, "Content-Type: %s\r\n", ctype);
        if (lm > 0 && pos < sizeof block) {
            http_date_format((time_t)lm, date, sizeof date);
            pos += (size_t)snprintf(block + pos, sizeof block - pos, "Last-Modified: %s\r\n", date);
        }
        if (etag && pos < sizeof block)
            pos += (size_t)snprintf(block + pos, sizeof block - pos, "ETag: %s\r\n", etag);
        if (cc && pos < sizeof block)
            snprintf(block + pos, sizeof block - pos, "Cache-Control: %s\r\n", cc);
        for (int c = 0; c < 3; c++)
            sqlite3_bind_value(ins, c + 1, sqlite3_column_value(sel, c));
        sqlite3_bind_text(ins, 4, block, -1, SQLITE_TRANSIENT);
        for (int c = 6; c < 9; c++)
            sqlite3_bind_value(ins, c - 1, sqlite3_column_value(sel, c));
        if (sqlite3_step(ins) != SQLITE_DONE)
            rc = SQLITE_ERROR;
        sqlite3_reset(ins);
    }
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(idx->wr, "DROP TABLE urls", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        db_error(idx, idx->wr, "migrate the urls table to responses");
    return rc == SQLITE_OK ? 0 : -1;
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

char *index_object_urls(struct index *idx, const char *sha256)
{
    sqlite3_stmt *st = idx->wr_stmt[WR_OBJECT_URLS];
    char *urls = NULL;

    assert(idx->magic == INDEX_MAGIC);
    pthread_mutex_lock(&idx->wr_lock);
    if (sqlite3_bind_text(st, 1, sha256, -1, SQLITE_STATIC) == SQLITE_OK) {
        int rc = sqlite3_step(st);
        const char *text = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (text)
            urls = strdup(text);
        else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            db_error(idx, idx->wr, wr_defs[WR_OBJECT_URLS].purpose);
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&idx->wr_lock);
    return urls;
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
