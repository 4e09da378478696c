/* worker — see worker.h. */
#include "server/data/worker.h"

#include <stdlib.h>

#include "server/edge.h"

static _Thread_local struct worker *tls_worker;
static _Thread_local int tls_wake_main;

void edge_lock(struct edge *e)
{
    if (e->threaded)
        pthread_mutex_lock(&e->lock);
}

void edge_unlock(struct edge *e)
{
    if (!e->threaded)
        return;
    worker_flush_wake(e);
    pthread_mutex_unlock(&e->lock);
}

struct worker *worker_current(void)
{
    return tls_worker;
}

void worker_set_current(struct worker *w)
{
    tls_worker = w;
}

void worker_wake_main(void)
{
    if (tls_worker && tls_worker->has_thread)
        tls_wake_main = 1;
}

void worker_flush_wake(struct edge *e)
{
    if (tls_wake_main) {
        tls_wake_main = 0;
        uv_async_send(&e->main_wake);
    }
}

void worker_suspend(struct worker *w, struct MHD_Connection *c)
{
    mhduv_suspend(&w->uv, c);
}

void worker_resume(struct worker *w, struct MHD_Connection *c)
{
    if (tls_worker == w || !w->has_thread) {
        /* its own thread; or worker 0, whose loop is the main loop: that
         * runs nothing while another thread holds the lock, and is woken
         * after (its timer is armed for the run that acts on the resume) */
        mhduv_resume(&w->uv, c);
        worker_wake_main();
        return;
    }
    struct worker_mail *m = malloc(sizeof *m);
    if (!m)
        return;     /* out of memory: the connection stays until its timeout */
    m->next = NULL;
    m->conn = c;
    pthread_mutex_lock(&w->mail_mu);
    if (w->mail_tail)
        w->mail_tail->next = m;
    else
        w->mail = m;
    w->mail_tail = m;
    pthread_mutex_unlock(&w->mail_mu);
    uv_async_send(&w->mail_async);
}

void worker_process_mail(struct worker *w)
{
    pthread_mutex_lock(&w->mail_mu);
    struct worker_mail *m = w->mail;
    w->mail = w->mail_tail = NULL;
    pthread_mutex_unlock(&w->mail_mu);
    while (m) {
        struct worker_mail *next = m->next;
        mhduv_resume(&w->uv, m->conn);
        free(m);
        m = next;
    }
}

/* w's thread: every resume posted, then the orders. */
static void on_mail(uv_async_t *a)
{
    struct worker *w = a->data;
    worker_process_mail(w);
    if (w->on_order)
        w->on_order(w);
}

int worker_mail_open(struct worker *w, void (*on_order)(struct worker *w))
{
    pthread_mutex_init(&w->mail_mu, NULL);
    w->mail_async.data = w;
    w->on_order = on_order;
    return uv_async_init(w->loop, &w->mail_async, on_mail);
}

void worker_order(struct worker *w, int quiesce, int stop)
{
    pthread_mutex_lock(&w->mail_mu);
    w->quiesce |= quiesce;
    w->stop |= stop;
    pthread_mutex_unlock(&w->mail_mu);
    uv_async_send(&w->mail_async);
}

void worker_take_orders(struct worker *w, int *quiesce, int *stop)
{
    pthread_mutex_lock(&w->mail_mu);
    *quiesce = w->quiesce;
    *stop = w->stop;
    w->quiesce = w->stop = 0;
    pthread_mutex_unlock(&w->mail_mu);
}

void worker_mail_close(struct worker *w)
{
    uv_close((uv_handle_t *)&w->mail_async, NULL);
}
