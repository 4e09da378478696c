/*
 * edge — the daemon's one context. Everything edgecache runs on hangs off a
 * struct edge: the configuration, the loop, the store and index, the fills,
 * the upstream client, the counters and the two HTTP listeners. There is no
 * global mutable state, so one process could run one edge per loop.
 *
 * Threads (workers = N, server/data/worker.h): the main loop runs
 * everything but the data plane's HTTP: the fills and their upstream
 * transfers, the catalog, the evictor, prefetches, the control plane.
 * Each data-plane worker has its own loop, libmicrohttpd daemon (all on
 * one port, SO_REUSEPORT) and connections; worker 0 is the main loop
 * itself, the others run on threads of their own. Everything shared is
 * guarded by one lock, edge_lock(): the main loop holds it whenever it is
 * not waiting for events, a worker thread takes it in each of its
 * libmicrohttpd callbacks, while the parsing and sending of HTTP (most of
 * a hit's cost) runs outside it. A worker's own handles are touched by its
 * own thread only: others post to its mailbox (worker_resume). With one
 * worker there is no thread and the lock is never taken. The thread pool
 * touches only the store and index (through the fills' commits).
 */
#ifndef EDGECACHE_EDGE_H
#define EDGECACHE_EDGE_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <uv.h>

#include "cache/stats.h"
#include "cache/store.h"
#include "config/cfg.h"
#include "config/log.h"
#include "server/mhd_uv.h"
#include "server/data/worker.h"

struct index;
struct catalog;
struct fills;
struct upstream;
struct prefetch;
struct evictor;
struct peers;
struct forward;
struct relay;
struct admin_job;
struct http_conn;

struct edge {
    const struct cfg *cfg;
    struct logger log;
    uv_loop_t *loop;
    struct store store;
    struct index *index;        /* owned */
    struct catalog *catalog;    /* owned: what the store holds, in memory */
    struct upstream *upstream;  /* owned */
    struct fills *fills;        /* owned */
    struct prefetch *prefetch;  /* owned */
    struct evictor *evictor;    /* owned */
    struct peers *peers;        /* owned: this layer's nodes; NULL: none */
    struct forward *forwards;   /* manifests being handed to the parent (forward.c) */
    struct relay *relays;       /* other methods being relayed (relay.c) */
    struct admin_job *admin_jobs;   /* control-plane work on the pool (admin.c) */
    struct stats stats;
    struct worker *workers;     /* owned: the data plane's event loops */
    unsigned n_workers;
    int threaded;               /* more than one worker: edge_lock() is taken */
    int http_stopped;
    int data_listening;         /* a worker's daemon holds the data plane's port */
    pthread_mutex_t lock;       /* see the top of this file */
    uv_async_t main_wake;       /* a worker changed the main loop's handles */
    struct MHD_Daemon *admin_daemon;
    struct mhduv admin_uv;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_hup;
    uv_timer_t grace_timer;     /* the shutdown's grace, then its end */
    uint64_t grace_deadline;    /* uv_now() ms */
    unsigned active_requests;   /* data-plane requests not yet complete */
    int draining;               /* SIGTERM came: no new connections, answers finish */
    uv_timer_t housekeeping;    /* access-time batches */
    int touch_flush_running;
    int64_t started;            /* Unix seconds */
    int stopping;
    struct {                    /* the store's reconciliation, on the pool after start */
        uv_work_t work;
        atomic_bool cancel;     /* set by a stop: the walk ends early */
        int state;              /* RECONCILE_* */
        uint64_t started_ms, took_ms;   /* uv_now() */
        struct store_reconciled result;
        int rc;
    } reconcile;
};

enum { RECONCILE_NONE, RECONCILE_RUNNING, RECONCILE_DONE, RECONCILE_FAILED,
       RECONCILE_CANCELLED };

/* Starts the data plane's listeners (one per worker; the threads start
 * with http_run). Returns 0, or -1 with err filled. */
int http_start(struct edge *e, char *err, size_t errlen);
/* Starts the worker threads, once everything they use is open. */
int http_run(struct edge *e, char *err, size_t errlen);
/* Stops the data plane: every suspended connection is resumed first; the
 * worker threads are told to stop (http_join waits for them). */
void http_stop(struct edge *e);
/* Waits for the worker threads to end (the lock released meanwhile). */
void http_join(struct edge *e);
/* Stops accepting data-plane connections (the first step of a stop). */
void http_quiesce(struct edge *e);
/* A data-plane request completed (main.c ends a drain with the last one). */
void edge_request_done(struct edge *e);

int admin_start(struct edge *e, char *err, size_t errlen);
void admin_stop(struct edge *e);

/* Binds an MHD daemon in external epoll mode on host:port; shared by both
 * listeners. */
struct MHD_Daemon *edge_listen(struct edge *e, const struct cfg_listen *where,
                               unsigned conn_limit, MHD_AccessHandlerCallback handler,
                               void *handler_cls, const struct MHD_OptionItem *extra,
                               char *err, size_t errlen);

#endif
