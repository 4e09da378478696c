/*
 * worker — one of the data plane's event loops (config key: workers).
 *
 * A worker is a libuv loop with its own libmicrohttpd daemon on the data
 * plane's port (every worker's socket is bound with SO_REUSEPORT, so the
 * kernel spreads new connections over them), its connections and their
 * timers. Worker 0 is the main loop; the others each run on a thread.
 * What they share (fills, catalog, store, counters) is guarded by the
 * edge's lock (server/edge.h): edge_lock() in every callback a worker
 * thread runs, held by the main loop whenever it is not waiting.
 *
 * A worker's handles are its own thread's: a fill moving on (on the main
 * loop) or a relay's upstream answering resumes a suspended connection
 * through worker_resume(), which posts it to the worker's mailbox when
 * called from another thread. worker_wake_main() tells the main loop that
 * a worker thread changed its handles (started a fill, released one), so
 * that it does not sleep through the change.
 */
#ifndef EDGECACHE_WORKER_H
#define EDGECACHE_WORKER_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "server/mhd_uv.h"

struct edge;
struct http_conn;

struct worker_mail {
    struct worker_mail *next;
    struct MHD_Connection *conn;
};

struct worker {
    struct edge *e;
    unsigned id;
    uv_loop_t *loop;            /* worker 0: the edge's loop; the others own_loop */
    uv_loop_t own_loop;
    uv_thread_t thread;
    int has_thread;             /* its loop runs on a thread of its own */
    int started;                /* that thread runs */
    struct MHD_Daemon *daemon;
    struct mhduv uv;
    int scan_open;
    struct http_conn *conns;    /* its connections (http.c) */
    uv_timer_t conn_scan;       /* closes connections past their time (http.c) */
    /* the mailbox (threads only) */
    uv_async_t mail_async;
    pthread_mutex_t mail_mu;
    struct worker_mail *mail;   /* connections to resume, oldest first */
    struct worker_mail *mail_tail;
    int quiesce, stop;          /* orders from the main loop, under mail_mu */
    void (*on_order)(struct worker *w);
    uint64_t requests;          /* requests it took (for /status) */
    uint64_t connections;       /* connections it holds now */
};

/* The edge's lock: taken only when there are worker threads. Recursive. */
void edge_lock(struct edge *e);
void edge_unlock(struct edge *e);

/* The worker whose thread is running (NULL outside a worker's thread, for
 * example on the thread pool). */
struct worker *worker_current(void);
void worker_set_current(struct worker *w);

/* MHD_suspend_connection / MHD_resume_connection for w's connection c:
 * suspend on w's thread only; resume from any thread holding the edge's
 * lock (posted to w when another thread asks). */
void worker_suspend(struct worker *w, struct MHD_Connection *c);
void worker_resume(struct worker *w, struct MHD_Connection *c);

/* A worker thread changed the main loop's handles: it is woken when the
 * lock is released (no-op on the main loop). */
void worker_wake_main(void);
/* Called by edge_unlock on a worker thread: sends the wake if one is due. */
void worker_flush_wake(struct edge *e);

/* Mailbox set-up on w's own loop (threads only), and the order to stop
 * (quiesce: stop accepting; stop: close everything and end the loop). */
int worker_mail_open(struct worker *w, void (*on_order)(struct worker *w));
void worker_order(struct worker *w, int quiesce, int stop);
/* w's thread: the orders given since the last call (and clears them). */
void worker_take_orders(struct worker *w, int *quiesce, int *stop);
/* w's thread: resumes the connections posted to it. */
void worker_process_mail(struct worker *w);
/* Closes the mailbox handle (w's thread). */
void worker_mail_close(struct worker *w);

#endif
