/* mhd_uv — see mhd_uv.h. */
#include "server/mhd_uv.h"

static void on_poll(uv_poll_t *h, int status, int events);
static void on_timer(uv_timer_t *t);

/* MHD runs at least once a second: after accept() failed for want of
 * file descriptors, MHD takes its listen socket out of its epoll set and
 * puts it back only from within a later run, which no event would cause. */
#define MHDUV_MAX_SLEEP_MS 1000

static void rearm(struct mhduv *m)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (!m->running)
        return;
    if (MHD_get_timeout(m->daemon, &ms) != MHD_YES || ms > MHDUV_MAX_SLEEP_MS)
        ms = MHDUV_MAX_SLEEP_MS;
    uv_timer_start(&m->timer, on_timer, (uint64_t)ms, 0);
}

void mhduv_run(struct mhduv *m)
{
    MHD_run(m->daemon);
    rearm(m);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    mhduv_run(h->data);
}

static void on_timer(uv_timer_t *t)
{
    mhduv_run(t->data);
}

int mhduv_start(struct mhduv *m, uv_loop_t *loop, struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info)
        return UV_EINVAL;
    m->daemon = d;
    int rc = uv_poll_init(loop, &m->poll, info->epoll_fd);
    if (rc)
        return rc;
    uv_timer_init(loop, &m->timer);
    m->poll.data = m;
    m->timer.data = m;
    m->open_handles = 2;
    m->running = 1;
    rc = uv_poll_start(&m->poll, UV_READABLE, on_poll);
    if (rc)
        return rc;
    rearm(m);
    return 0;
}

void mhduv_suspend(struct mhduv *m, struct MHD_Connection *c)
{
    MHD_suspend_connection(c);
    m->suspended++;
}

void mhduv_resume(struct mhduv *m, struct MHD_Connection *c)
{
    MHD_resume_connection(c);
    if (m->suspended)
        m->suspended--;
    mhduv_kick(m);
}

unsigned mhduv_suspended(const struct mhduv *m)
{
    return m->suspended;
}

unsigned mhduv_drain(struct mhduv *m, unsigned rounds)
{
    for (unsigned i = 0; i < rounds; i++) {
        MHD_run(m->daemon);
        if (m->suspended == 0)
            break;
    }
    return m->suspended;
}

void mhduv_kick(struct mhduv *m)
{
    if (m->running)
        uv_timer_start(&m->timer, on_timer, 0, 0);
}

static void handle_closed(uv_handle_t *h)
{
    struct mhduv *m = h->data;
    if (--m->open_handles == 0 && m->closed)
        m->closed(m);
}

void mhduv_stop(struct mhduv *m, void (*closed)(struct mhduv *m))
{
    if (!m->running)
        return;
    m->running = 0;
    m->closed = closed;
    uv_poll_stop(&m->poll);
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->poll, handle_closed);
    uv_close((uv_handle_t *)&m->timer, handle_closed);
}
