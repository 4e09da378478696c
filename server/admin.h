/*
 * admin — the control plane's request plumbing, shared by its calls.
 *
 * Every control-plane request is a struct admin_req (created on the first
 * call of the access handler, freed when MHD reports it complete). Its body
 * is collected up to manifest_max_bytes (413 past it). A call that needs the index or
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

/* POST /api/v1/expectations (server/api_expect.c). */
enum MHD_Result api_expectations(struct admin_req *req);

/* Manifests (server/api_rewrite.c): rewrite and register; prefetch and pin
 * every file when prefetch is set; answer the rewritten document when
 * answer_doc is set, else a summary (202). */
enum MHD_Result api_manifest(struct admin_req *req, int prefetch, int answer_doc);

/* The object list and purge (server/api_objects.c). */
enum MHD_Result api_objects_list(struct admin_req *req);
enum MHD_Result api_objects_delete(struct admin_req *req, const char *sha256);

/* Deployments (server/api_prefetch.c). */
enum MHD_Result api_prefetch(struct admin_req *req);
enum MHD_Result api_prefetch_urls(struct admin_req *req, struct json_t *list);
enum MHD_Result api_deployment_delete(struct admin_req *req, const char *id);
struct json_t *api_deployments_json(struct edge *e);
/* 1 when url's origin is on the allow-list; else 0 and why names it. */
int api_url_allowed(const struct cfg *cfg, const char *url, char *why, size_t whylen);

/* Hands an accepted body to the parent's control plane (server/forward.c):
 * call is the path and query there, e.g. "/api/v1/rewrite?prefetch=1".
 * Returns at once; nothing happens without parent_admin_url. */
void forward_to_parent(struct edge *e, const char *call, const char *body, size_t len);
/* Abandons every forward in flight (shutdown). */
void forward_stop_all(struct edge *e);

/* Answers now: a short text, or JSON (takes ownership of json_text). */
enum MHD_Result admin_reply_text(struct MHD_Connection *c, unsigned status, const char *text);
enum MHD_Result admin_reply_json(struct MHD_Connection *c, unsigned status, char *json_text);

#endif
