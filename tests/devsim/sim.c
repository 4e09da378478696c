/*
 * sim — devices, the transfer queue, the curl multi loop and the JSON lines
 * that report state changes. See sim.h.
 */
#include "sim.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "xfer.h"

/* ADU's result code for a successful apply. */
#define ADU_RESULT_APPLY_SUCCESS 700
#define ADU_RESULT_FAILURE 0

struct device {
    unsigned id;               /* 1-based */
    size_t verified;           /* files that passed verification */
    bool started;              /* its first transfer started */
    bool failed;               /* a file failed: its other transfers are cancelled */
};

struct sim {
    const struct deploy *d;    /* not owned */
    const struct sim_opts *o;  /* not owned */
    struct xfer_opts xo;
    FILE *out;                 /* not owned */
    CURLM *multi;
    struct device *devs;       /* o->devices of them */
    struct xfer *xfers;        /* devices x files, device-major: the start order */
    size_t n_xfers;
    size_t next;               /* first xfer not yet started */
    size_t active;             /* xfers in the multi */
    size_t limit;              /* at most this many active */
    double t0;
    unsigned resumes;
    struct sim_result res;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double elapsed(const struct sim *s)
{
    return round((now() - s->t0) * 1000.0) / 1000.0;
}

static struct device *device_of(struct sim *s, const struct xfer *x)
{
    return &s->devs[x->device - 1];
}

/* ---------------------------------------------------------------- output */

/* A state line for dev, "device" and "t" first. */
static json_t *line_for(const struct sim *s, const struct device *dev)
{
    json_t *o = json_object();
    json_object_set_new(o, "device", json_integer(dev->id));
    json_object_set_new(o, "t", json_real(elapsed(s)));
    return o;
}

static void print_line(const struct sim *s, json_t *o)
{
    if (!o)
        return;
    json_dumpf(o, s->out, JSON_COMPACT | JSON_REAL_PRECISION(12));
    fputc('\n', s->out);
    fflush(s->out);
}

static void emit(const struct sim *s, json_t *o)
{
    if (!s->o->quiet)
        print_line(s, o);
    json_decref(o);
}

static void set_str(json_t *o, const char *key, const char *value)
{
    if (value)
        json_object_set_new(o, key, json_string(value));
}

static void emit_adu_state(const struct sim *s, const struct device *dev, const char *state)
{
    json_t *o = line_for(s, dev);
    set_str(o, "state", state);
    emit(s, o);
}

static void emit_fw_status(const struct sim *s, const struct device *dev, const char *status,
                           const char *key, const char *value)
{
    json_t *o = line_for(s, dev);
    set_str(o, "fwUpdateStatus", status);
    set_str(o, key, value);
    emit(s, o);
}

static json_t *skipped_ids(const struct deploy *d)
{
    json_t *a = json_array();
    for (size_t i = 0; i < d->n_skipped; i++)
        json_array_append_new(a, json_string(d->skipped[i]));
    return a;
}

static void emit_started(const struct sim *s, const struct device *dev)
{
    const struct deploy *d = s->d;
    if (d->kind == DEPLOY_FIRMWARE) {
        emit_fw_status(s, dev, "downloading", "pendingFwVersion", d->fw_version);
        return;
    }
    json_t *o = line_for(s, dev);
    set_str(o, "state", "DownloadStarted");
    set_str(o, "workflow", d->workflow_id);
    set_str(o, "updateId", d->update_id);
    json_object_set_new(o, "files", json_integer((json_int_t)d->n_files));
    if (d->n_skipped > 0)   /* URLs of a detached manifest's files */
        json_object_set_new(o, "skippedFileUrls", skipped_ids(d));
    emit(s, o);
}

static void emit_succeeded(const struct sim *s, const struct device *dev)
{
    if (s->d->kind == DEPLOY_FIRMWARE) {
        emit_fw_status(s, dev, "applying", NULL, NULL);
        emit_fw_status(s, dev, "current", "currentFwVersion", s->d->fw_version);
        return;
    }
    static const char *const steps[] = {
        "DownloadSucceeded", "InstallStarted", "InstallSucceeded", "ApplyStarted",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        emit_adu_state(s, dev, steps[i]);
    json_t *o = line_for(s, dev);
    set_str(o, "state", "Idle");
    json_object_set_new(o, "resultCode", json_integer(ADU_RESULT_APPLY_SUCCESS));
    emit(s, o);
}

static void emit_failed(const struct sim *s, const struct device *dev, const struct xfer *x)
{
    json_t *o = line_for(s, dev);
    if (s->d->kind == DEPLOY_FIRMWARE) {
        set_str(o, "fwUpdateStatus", "error");
        set_str(o, "fwUpdateSubstatus", x->reason);
        set_str(o, "file", x->file->name);
    } else {
        set_str(o, "state", "Failed");
        json_object_set_new(o, "resultCode", json_integer(ADU_RESULT_FAILURE));
        json_object_set_new(o, "extendedResultCode", json_integer(x->erc));
        set_str(o, "file", x->file->name);
        set_str(o, "reason", x->reason);
    }
    if (x->http_status > 0)
        json_object_set_new(o, "httpStatus", json_integer(x->http_status));
    if (x->curl_code != 0)
        json_object_set_new(o, "curlCode", json_integer(x->curl_code));
    emit(s, o);
}

/* --------------------------------------------------------------- devices */

static void device_failed(struct sim *s, struct xfer *x)
{
    struct device *dev = device_of(s, x);
    if (dev->failed)
        return;
    dev->failed = true;
    s->res.failed++;
    emit_failed(s, dev, x);
    struct xfer *mine = &s->xfers[(size_t)(dev->id - 1) * s->d->n_files];
    for (size_t i = 0; i < s->d->n_files; i++) {
        if (mine[i].state == XFER_ACTIVE)
            s->active--;
        xfer_cancel(&mine[i], s->multi);
    }
}

static void file_verified(struct sim *s, struct xfer *x)
{
    struct device *dev = device_of(s, x);
    if (++dev->verified < s->d->n_files)
        return;
    s->res.succeeded++;
    emit_succeeded(s, dev);
}

static void verify(struct sim *s, struct xfer *x)
{
    if (s->d->kind == DEPLOY_FIRMWARE)
        emit_fw_status(s, device_of(s, x), "verifying", "note", x->file->note);
    if (xfer_verify(x) == XFER_OK)
        file_verified(s, x);
    else
        device_failed(s, x);
}

static void finished(struct sim *s, struct xfer *x, CURLcode result)
{
    enum xfer_step step = xfer_done(x, s->multi, result);
    if (step == XFER_STEP_AGAIN) {
        s->resumes++;
        return;
    }
    s->active--;
    if (step == XFER_STEP_FAILED)
        device_failed(s, x);
    else
        verify(s, x);
}

/* ------------------------------------------------------------------ loop */

static void fill_slots(struct sim *s)
{
    while (s->active < s->limit && s->next < s->n_xfers) {
        struct xfer *x = &s->xfers[s->next++];
        struct device *dev = device_of(s, x);
        if (x->state != XFER_QUEUED)   /* cancelled with its device */
            continue;
        if (!dev->started) {
            dev->started = true;
            emit_started(s, dev);
        }
        if (xfer_start(x, s->multi) == 0)
            s->active++;
        else
            device_failed(s, x);
    }
}

static void drain(struct sim *s)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        /* Removing a handle drops its pending message, so a cancelled
         * xfer never shows up here. */
        finished(s, (struct xfer *)priv, result);
    }
}

static int run_loop(struct sim *s, char *err, size_t errlen)
{
    fill_slots(s);
    while (s->active > 0) {
        int running;
        CURLMcode mc = curl_multi_perform(s->multi, &running);
        if (mc == CURLM_OK) {
            drain(s);
            fill_slots(s);
        }
        if (mc == CURLM_OK && s->active > 0)
            mc = curl_multi_poll(s->multi, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            snprintf(err, errlen, "curl multi: %s", curl_multi_strerror(mc));
            return -1;
        }
    }
    return 0;
}

/* --------------------------------------------------------------- summary */

static json_t *file_summary(const struct sim *s, size_t index)
{
    json_int_t ok = 0, bad = 0, cancelled = 0;
    for (size_t i = index; i < s->n_xfers; i += s->d->n_files) {
        enum xfer_state st = s->xfers[i].state;
        ok += st == XFER_OK;
        bad += st == XFER_FAILED;
        cancelled += st == XFER_CANCELLED || st == XFER_QUEUED;
    }
    return json_pack("{s:s,s:I,s:I,s:I}", "name", s->d->files[index].name,
                     "ok", ok, "failed", bad, "cancelled", cancelled);
}

static void print_summary(const struct sim *s)
{
    json_int_t bytes = 0;
    for (size_t i = 0; i < s->n_xfers; i++)
        bytes += s->xfers[i].got;
    json_t *files = json_array();
    for (size_t i = 0; i < s->d->n_files; i++)
        json_array_append_new(files, file_summary(s, i));
    json_t *o = json_pack("{s:b,s:I,s:I,s:I,s:I,s:f,s:I,s:o}",
                          "summary", 1, "devices", (json_int_t)s->o->devices,
                          "succeeded", (json_int_t)s->res.succeeded,
                          "failed", (json_int_t)s->res.failed,
                          "bytes", bytes, "seconds", elapsed(s),
                          "resumes", (json_int_t)s->resumes, "files", files);
    print_line(s, o);
    json_decref(o);
}

/* ------------------------------------------------------------------- run */

static int sim_init(struct sim *s, const struct deploy *d, const struct sim_opts *o, FILE *out)
{
    memset(s, 0, sizeof *s);
    s->d = d;
    s->o = o;
    s->out = out;
    s->xo = (struct xfer_opts){ o->interrupt_at, o->timeout, o->out_dir };
    s->n_xfers = (size_t)o->devices * d->n_files;
    s->limit = o->concurrency ? o->concurrency : s->n_xfers;
    s->multi = curl_multi_init();
    s->devs = calloc(o->devices, sizeof *s->devs);
    s->xfers = calloc(s->n_xfers, sizeof *s->xfers);
    if (!s->multi || !s->devs || !s->xfers)
        return -1;
    for (unsigned i = 0; i < o->devices; i++) {
        s->devs[i].id = i + 1;
        for (size_t f = 0; f < d->n_files; f++)
            xfer_init(&s->xfers[i * d->n_files + f], &d->files[f], &s->xo, i + 1, f);
    }
    s->t0 = now();
    return 0;
}

static void sim_cleanup(struct sim *s)
{
    for (size_t i = 0; s->xfers && i < s->n_xfers; i++) {
        xfer_cancel(&s->xfers[i], s->multi);
        xfer_free(&s->xfers[i]);
    }
    if (s->multi)
        curl_multi_cleanup(s->multi);
    free(s->xfers);
    free(s->devs);
}

int sim_run(const struct deploy *d, const struct sim_opts *o, FILE *out,
            struct sim_result *res, char *err, size_t errlen)
{
    struct sim s;
    int rc = sim_init(&s, d, o, out);
    if (rc != 0)
        snprintf(err, errlen, "cannot set up %u devices: out of memory", o->devices);
    else
        rc = run_loop(&s, err, errlen);
    if (rc == 0) {
        print_summary(&s);
        *res = s.res;
    }
    sim_cleanup(&s);
    return rc;
}
