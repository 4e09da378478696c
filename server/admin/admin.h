/*
 * admin — the control plane's request plumbing, below every call's
 * handler (server/admin/api.h) and the route table (server/admin/serve.c):
 * requests, bodies, the token, answers and pool jobs. Nothing here calls
 * up into a handler.
 *
 * Every control-plane request is a struct admin_req (created on the first
 * call of the access handler, freed when MHD reports it complete). Its body
 * is collected up to manifest_max_bytes (413 past it), or, for a call that
 * takes a large body (an import), handed as it arrives to the sink its
 * handler set on the first call (struct admin_sink), which owns whatever
 * it keeps of it (temp files) until its release. A call that needs the index or
 * the disk hands a struct admin_job to the libuv thread pool and suspends
 * the connection; the job's finish step (loop thread) sets the answer and
 * resumes it. A job outlives its request if the client goes away: the
 * request then only detaches itself (job->req = NULL). When the control
 * plane stops, every request still waiting on a job is detached from it,
 * answered 503 and resumed (no connection may stay suspended), and the jobs
 * finish on their own.
 *
 * Thread: loop thread, except admin_job.run (thread pool).
 */
#ifndef EDGECACHE_ADMIN_H
#define EDGECACHE_ADMIN_H

#include <stddef.h>
#include <uv.h>
#include "server/edge.h"

struct admin_job;
struct admin_req;
struct admin_watch;

/* A streamed body's consumer: data() gets every chunk in order (0, or -1
 * to drop the connection); release() runs once when the request ends,
 * complete or cut off, and frees ctx and all it holds. */
struct admin_sink {
    int (*data)(struct admin_req *req, void *ctx, const char *data, size_t n);
    void (*release)(void *ctx);
};

struct admin_req {
    unsigned magic;
    struct edge *e;
    struct MHD_Connection *conn;
    char *body;                 /* NUL-terminated */
    size_t len;
    int too_big;                /* the body passed manifest_max_bytes and was dropped */
    struct admin_job *job;      /* while one runs */
    unsigned status;            /* a deferred answer, once the job finished */
    char *answer;               /* owned */
    const char *ctype;
    int warning;                /* the rewritten URLs name a loopback host (api_rewrite.c) */
    const struct admin_sink *sink;  /* a streamed body's consumer, or NULL: collected */
    void *sink_ctx;             /* owned through sink->release */
    uint64_t streamed;          /* body bytes handed to the sink */
    uint64_t announced;         /* its Content-Length, UINT64_MAX none */
    struct admin_watch *watch;  /* the socket watched for a client gone mid-body */
    int cut;                    /* the client went away: the sink was released */
};

struct admin_job {
    uv_work_t work;
    struct admin_req *req;      /* NULL once the request went away */
    struct edge *e;
    struct admin_job *next, *prev;  /* the edge's jobs in flight */
    void (*run)(struct admin_job *j);       /* thread pool */
    void (*finish)(struct admin_job *j);    /* loop thread; j->req may be NULL */
    void (*destroy)(struct admin_job *j);   /* loop thread */
};

/* Queues j for req and suspends req's connection. Returns MHD_YES, or
 * answers 500 itself when the job cannot be queued (j is destroyed). */
enum MHD_Result admin_job_start(struct admin_req *req, struct admin_job *j);

/* The request body as JSON, or NULL after answering 400 (line and column
 * of the error) with *ret the handler's result. */
struct json_t;
struct json_t *admin_body_json(struct admin_req *req, enum MHD_Result *ret);

/* Sets req's deferred answer (takes a copy of text). */
void admin_answer(struct admin_req *req, unsigned status, const char *ctype, const char *text);

/* Answers now: a short text, or JSON (takes ownership of json_text), or
 * any body (mode as for MHD_create_response_from_buffer). Every answer of
 * the control plane says Cache-Control: no-store. */
enum MHD_Result admin_reply_text(struct MHD_Connection *c, unsigned status, const char *text);
enum MHD_Result admin_reply_json(struct MHD_Connection *c, unsigned status, char *json_text);
enum MHD_Result admin_reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                            char *body, size_t len, enum MHD_ResponseMemoryMode mode);

/* The request's lifecycle, for the MHD callbacks (server/admin/serve.c). */
struct admin_req *admin_req_new(struct edge *e, struct MHD_Connection *c);
void admin_req_free(struct admin_req *req);
/* Collects body bytes up to manifest_max_bytes (then too_big), or hands
 * them to the request's sink when it has one. 0 or -1. */
int admin_collect_body(struct admin_req *req, const char *data, size_t n);
/* Streams the rest of req's body to sink (ctx owned from now on: released
 * with the request, or by admin_sink_detach). A client that goes away
 * before the Content-Length it announced is complete ends the request at
 * once (the sink is released), even where MHD would not see the end of
 * the stream before the connection times out. */
void admin_sink_set(struct admin_req *req, const struct admin_sink *sink, void *ctx);
/* Takes the sink's ctx back from req (a job now owns it); returns it. */
void *admin_sink_detach(struct admin_req *req);
/* Sends the answer a finished job set (req->answer). */
enum MHD_Result admin_send_answer(struct admin_req *req);
/* 1 when the request carries the control plane's token (or none is set). */
int admin_authorised(const struct edge *e, struct MHD_Connection *c);
/* Shutdown: every request still waiting on a job is answered 503 and
 * resumed; the jobs finish on the pool without it. */
void admin_release_jobs(struct edge *e);

#endif
