/*
 * mhd_uv — a libmicrohttpd daemon driven by the libuv loop.
 *
 * The daemon runs in MHD's "external" mode with epoll: MHD keeps its own
 * epoll set of listening and client sockets, and exposes that set's fd.
 * We watch that one fd with a uv_poll_t and call MHD_run() when it is
 * readable, and arm a uv_timer_t with MHD_get_timeout() after every run for
 * connection timeouts and buffered work (at most a second apart: see
 * mhd_uv.c). mhduv_kick() schedules a run on the
 * next loop turn (after MHD_resume_connection, which MHD only acts on inside
 * MHD_run). No thread of MHD's own exists; nothing polls when idle.
 *
 * Every suspension and resumption of the daemon's connections goes through
 * mhduv_suspend() / mhduv_resume(), which count them: MHD_stop_daemon()
 * aborts the process while any connection is suspended, so whoever stops a
 * daemon first makes every holder of a suspended connection let go, then
 * runs the daemon until mhduv_suspended() is 0 (mhduv_drain()).
 *
 * Owns: the two libuv handles. Does not own the daemon. Thread: loop only.
 */
#ifndef EDGECACHE_MHD_UV_H
#define EDGECACHE_MHD_UV_H

#include <microhttpd.h>
#include <uv.h>

struct mhduv {
    struct MHD_Daemon *daemon;  /* not owned */
    uv_poll_t poll;
    uv_timer_t timer;
    int running;
    int open_handles;
    unsigned suspended;         /* connections suspended through mhduv_suspend */
    void (*closed)(struct mhduv *m);
};

/* Starts watching d (started with MHD_USE_EPOLL and no internal thread).
 * Returns 0, or a negative libuv error. */
int mhduv_start(struct mhduv *m, uv_loop_t *loop, struct MHD_Daemon *d);
/* Run MHD on the next loop turn. */
void mhduv_kick(struct mhduv *m);
/* Runs MHD now (used at shutdown to let resumed connections finish). */
void mhduv_run(struct mhduv *m);
/* MHD_suspend_connection / MHD_resume_connection, counted; a resume also
 * kicks the daemon so that MHD acts on it this loop turn. */
void mhduv_suspend(struct mhduv *m, struct MHD_Connection *c);
void mhduv_resume(struct mhduv *m, struct MHD_Connection *c);
/* Connections suspended now. */
unsigned mhduv_suspended(const struct mhduv *m);
/* Runs MHD (at most `rounds` times) until no connection is suspended; the
 * holders must have resumed theirs already. Returns how many remain. */
unsigned mhduv_drain(struct mhduv *m, unsigned rounds);
/* Stops watching and closes the handles; `closed` is called once both are
 * closed (may be NULL). The caller stops the daemon. */
void mhduv_stop(struct mhduv *m, void (*closed)(struct mhduv *m));

#endif
