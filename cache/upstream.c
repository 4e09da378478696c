/*
 * upstream — curl multi on libuv. See upstream.h.
 *
 * Sockets: curl tells on_socket() which events it wants for each socket;
 * the first time we see a socket we create its upstream_sock (a uv_poll_t)
 * and hand it to curl with curl_multi_assign(), so later calls carry it.
 * CURL_POLL_REMOVE closes the poll handle; the memory goes in the close
 * callback. Live socket contexts are also kept on a list so that
 * upstream_close() can close any that curl did not remove.
 */
#include "cache/upstream.h"

#include <stdlib.h>

#include "version.h"

struct upstream_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct upstream *up;
    struct upstream_sock *next, *prev;
};

struct upstream {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    const struct logger *log;
    struct upstream_sock *socks;
    int closing;
};

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp);
static int on_timer_change(CURLM *multi, long timeout_ms, void *userp);
static void on_poll(uv_poll_t *h, int status, int events);
static void on_timeout(uv_timer_t *t);
static void check_done(struct upstream *u);

int upstream_open(struct upstream **out, uv_loop_t *loop, const struct logger *log)
{
    struct upstream *u = calloc(1, sizeof *u);
    if (!u)
        return -1;
    u->loop = loop;
    u->log = log;
    u->multi = curl_multi_init();
    if (!u->multi) {
        free(u);
        return -1;
    }
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    /* Fills are few and long: keep connections to each origin reusable. */
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, 64L);
    *out = u;
    return 0;
}

static void sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sock_release(struct upstream *u, struct upstream_sock *ps)
{
    if (ps->prev)
        ps->prev->next = ps->next;
    else
        u->socks = ps->next;
    if (ps->next)
        ps->next->prev = ps->prev;
    uv_poll_stop(&ps->poll);
    uv_close((uv_handle_t *)&ps->poll, sock_closed);
}

static struct upstream_sock *sock_new(struct upstream *u, curl_socket_t s)
{
    struct upstream_sock *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    if (uv_poll_init_socket(u->loop, &ps->poll, s) != 0) {
        free(ps);
        return NULL;
    }
    ps->poll.data = ps;
    ps->fd = s;
    ps->up = u;
    ps->next = u->socks;
    if (u->socks)
        u->socks->prev = ps;
    u->socks = ps;
    curl_multi_assign(u->multi, s, ps);
    return ps;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct upstream *u = userp;
    struct upstream_sock *ps = socketp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (ps) {
            curl_multi_assign(u->multi, s, NULL);
            sock_release(u, ps);
        }
        return 0;
    }
    if (!ps && !(ps = sock_new(u, s)))
        return -1;
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&ps->poll, events, on_poll);
    return 0;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct upstream_sock *ps = h->data;
    struct upstream *u = ps->up;
    int flags = 0, running = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(u->multi, ps->fd, flags, &running);
    check_done(u);
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    struct upstream *u = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&u->timer);
    else
        uv_timer_start(&u->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    struct upstream *u = t->data;
    int running = 0;
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(u);
}

static void check_done(struct upstream *u)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(u->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        struct upstream_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(u->multi, easy);
        if (x) {
            x->active = 0;
            x->done(x, result);
        }
    }
}

int upstream_start(struct upstream *u, struct upstream_xfer *x)
{
    if (u->closing)
        return -1;
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *)x);
    if (curl_multi_add_handle(u->multi, x->easy) != CURLM_OK)
        return -1;
    x->active = 1;
    return 0;
}

void upstream_cancel(struct upstream *u, struct upstream_xfer *x)
{
    if (!x->active)
        return;
    curl_multi_remove_handle(u->multi, x->easy);
    x->active = 0;
}

void upstream_pause(struct upstream *u, struct upstream_xfer *x, int paused)
{
    (void)u;
    if (x->active)
        curl_easy_pause(x->easy, paused ? CURLPAUSE_RECV : CURLPAUSE_CONT);
}

static void upstream_freed(uv_handle_t *h)
{
    free(h->data);
}

void upstream_close(struct upstream **up)
{
    struct upstream *u = *up;
    if (!u)
        return;
    *up = NULL;
    u->closing = 1;
    /* Owners cancel their transfers before this; what curl still holds are
     * idle connections, closed here (curl may call on_socket to remove). */
    curl_multi_cleanup(u->multi);
    while (u->socks)
        sock_release(u, u->socks);
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, upstream_freed);
}

CURL *upstream_easy(uint64_t connect_timeout_ms, char *errbuf)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_USERAGENT, "edgecache/" EDGECACHE_VERSION);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    return e;
}
