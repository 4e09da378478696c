/*
 * xfer — one file for one device: GET, optional deliberate cut and Range
 * resume, SHA-256 while streaming, size and digest check. See xfer.h.
 */
#include "xfer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define SHA256_LEN 32
#define XFER_CONNECT_TIMEOUT 30L   /* seconds */
#define XFER_STALL_TIMEOUT 60L     /* seconds without a byte */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata);
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata);

/* Records why x failed; the first cause recorded is the one reported. */
static void set_error(struct xfer *x, enum xfer_erc erc, const char *fmt, ...)
{
    if (x->erc != XFER_ERC_NONE)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->reason, sizeof x->reason, fmt, ap);
    va_end(ap);
    x->erc = erc;
}

/* Frees what an ACTIVE or finished xfer holds; the file under --out stays
 * only when keep_file. The easy handle must be out of the multi. */
static void release(struct xfer *x, bool keep_file)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    x->easy = NULL;
    EVP_MD_CTX_free(x->md);
    x->md = NULL;
    if (x->out)
        fclose(x->out);
    x->out = NULL;
    if (x->out_path && !keep_file)
        unlink(x->out_path);
    free(x->out_path);
    x->out_path = NULL;
}

static enum xfer_step failed(struct xfer *x)
{
    release(x, false);
    x->state = XFER_FAILED;
    return XFER_STEP_FAILED;
}

void xfer_init(struct xfer *x, const struct deploy_file *file, const struct xfer_opts *opts,
               unsigned device, size_t file_index)
{
    memset(x, 0, sizeof *x);
    x->file = file;
    x->opts = opts;
    x->device = device;
    x->file_index = file_index;
    x->state = XFER_QUEUED;
    x->total = -1;
    x->cut_at = -1;
}

/* ---------------------------------------------------------------- output */

/* The name a file is kept under: the manifest's name without directories,
 * or the fileId when that leaves nothing usable. */
static const char *keep_name(const struct deploy_file *f)
{
    const char *slash = strrchr(f->name, '/');
    const char *base = slash ? slash + 1 : f->name;
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        return f->id;
    return base;
}

static int open_output(struct xfer *x)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/device-%u", x->opts->out_dir, x->device);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        set_error(x, XFER_ERC_OUTPUT, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (asprintf(&x->out_path, "%s/%s", dir, keep_name(x->file)) < 0) {
        x->out_path = NULL;
        set_error(x, XFER_ERC_OUTPUT, "out of memory");
        return -1;
    }
    x->out = fopen(x->out_path, "wb");
    if (!x->out) {
        set_error(x, XFER_ERC_OUTPUT, "cannot write %s: %s", x->out_path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- start */

static int setup_easy(struct xfer *x)
{
    CURL *e = x->easy = curl_easy_init();
    if (!e)
        return -1;
    curl_easy_setopt(e, CURLOPT_URL, x->file->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "edgecache-devsim/1");
    /* Without --timeout a large image may take as long as it needs, but a
     * stalled connection still ends. */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, XFER_CONNECT_TIMEOUT);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, XFER_STALL_TIMEOUT);
    if (x->opts->timeout > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT, x->opts->timeout);
    return 0;
}

int xfer_start(struct xfer *x, CURLM *multi)
{
    x->state = XFER_ACTIVE;
    x->md = EVP_MD_CTX_new();
    if (!x->md || EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) != 1 || setup_easy(x) != 0) {
        set_error(x, XFER_ERC_TRANSPORT, "cannot set up a transfer (out of memory)");
        failed(x);
        return -1;
    }
    if (x->opts->out_dir && open_output(x) != 0) {
        failed(x);
        return -1;
    }
    if (curl_multi_add_handle(multi, x->easy) != CURLM_OK) {
        set_error(x, XFER_ERC_TRANSPORT, "cannot add a transfer to the curl multi");
        failed(x);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- callbacks */

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t len = size * nmemb;
    static const char name[] = "Content-Range:";
    if (len > 5 && strncmp(ptr, "HTTP/", 5) == 0)
        x->content_range[0] = '\0';   /* a new response starts */
    if (len > sizeof name - 1 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        const char *v = ptr + sizeof name - 1;
        size_t n = len - (sizeof name - 1);
        while (n > 0 && (*v == ' ' || *v == '\t'))
            v++, n--;
        while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
            n--;
        if (n >= sizeof x->content_range)
            n = sizeof x->content_range - 1;
        memcpy(x->content_range, v, n);
        x->content_range[n] = '\0';
    }
    return len;
}

/* The cut point of the first GET, from its Content-Length. */
static void plan_cut(struct xfer *x)
{
    curl_off_t cl = -1;
    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    x->total = cl;
    if (x->opts->interrupt_at > 0 && cl > 0)
        x->cut_at = (int64_t)((double)cl * x->opts->interrupt_at / 100.0);
}

static int check_range_answer(struct xfer *x)
{
    long long first, last, total;
    char extra;
    const char *cr = x->content_range;
    if (x->http_status != 206) {
        set_error(x, XFER_ERC_RESUME, "Range: bytes=%lld- answered HTTP %ld, not 206",
                  (long long)x->resume_from, x->http_status);
        return -1;
    }
    if (sscanf(cr, "bytes %lld-%lld/%lld%c", &first, &last, &total, &extra) != 3
        || first != x->resume_from || last != x->total - 1 || total != x->total) {
        set_error(x, XFER_ERC_RESUME, "Range: bytes=%lld- answered Content-Range \"%s\", "
                  "expected \"bytes %lld-%lld/%lld\"", (long long)x->resume_from, cr,
                  (long long)x->resume_from, (long long)x->total - 1, (long long)x->total);
        return -1;
    }
    return 0;
}

/* Once per attempt, when its headers are complete: the status (and for the
 * resume, the Content-Range) must be what a device expects. */
static int check_headers(struct xfer *x)
{
    if (x->headers_checked)
        return x->erc == XFER_ERC_NONE ? 0 : -1;
    x->headers_checked = true;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->http_status);
    if (x->attempt == 1)
        return check_range_answer(x);
    if (x->http_status != 200) {
        set_error(x, XFER_ERC_HTTP, "GET answered HTTP %ld", x->http_status);
        return -1;
    }
    plan_cut(x);
    return 0;
}

static int take(struct xfer *x, const char *ptr, size_t len)
{
    EVP_DigestUpdate(x->md, ptr, len);
    x->got += (int64_t)len;
    if (x->out && len > 0 && fwrite(ptr, 1, len, x->out) != len) {
        set_error(x, XFER_ERC_OUTPUT, "cannot write %s: %s", x->out_path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Returning less than len ends the transfer (CURLE_WRITE_ERROR): on an
 * error, and at the deliberate cut, where only the bytes before cut_at are
 * taken. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t len = size * nmemb;
    if (check_headers(x) != 0)
        return 0;
    if (x->attempt == 0 && x->cut_at >= 0 && x->got + (int64_t)len > x->cut_at) {
        size_t part = (size_t)(x->cut_at - x->got);
        if (take(x, ptr, part) != 0)
            return 0;
        x->cut = true;
        return part;
    }
    return take(x, ptr, len) == 0 ? len : 0;
}

/* ------------------------------------------------------------------ done */

static enum xfer_step resume(struct xfer *x, CURLM *multi)
{
    char range[64];
    snprintf(range, sizeof range, "%lld-", (long long)x->got);
    x->attempt = 1;
    x->resume_from = x->got;
    x->headers_checked = false;
    x->content_range[0] = '\0';
    x->errbuf[0] = '\0';
    curl_easy_setopt(x->easy, CURLOPT_RANGE, range);
    if (curl_multi_add_handle(multi, x->easy) != CURLM_OK) {
        set_error(x, XFER_ERC_TRANSPORT, "cannot add the Range request to the curl multi");
        return failed(x);
    }
    return XFER_STEP_AGAIN;
}

static void transport_error(struct xfer *x, CURLcode result)
{
    x->curl_code = (int)result;
    set_error(x, XFER_ERC_TRANSPORT, "%s%s: %s",
              x->attempt == 1 ? "Range request" : "GET",
              result == CURLE_OPERATION_TIMEDOUT ? " timed out" : " failed",
              x->errbuf[0] ? x->errbuf : curl_easy_strerror(result));
}

enum xfer_step xfer_done(struct xfer *x, CURLM *multi, CURLcode result)
{
    curl_multi_remove_handle(multi, x->easy);
    if (x->erc != XFER_ERC_NONE)
        return failed(x);
    if (x->attempt == 0 && x->cut && result == CURLE_WRITE_ERROR)
        return resume(x, multi);
    if (result != CURLE_OK) {
        transport_error(x, result);
        return failed(x);
    }
    if (check_headers(x) != 0)   /* an empty body: no write callback ran */
        return failed(x);
    if (x->out && fflush(x->out) != 0) {
        set_error(x, XFER_ERC_OUTPUT, "cannot write %s: %s", x->out_path, strerror(errno));
        return failed(x);
    }
    x->state = XFER_DOWNLOADED;
    return XFER_STEP_DOWNLOADED;
}

/* ---------------------------------------------------------------- verify */

/* The digest in the form the deployment wrote it in. */
static void render_digest(struct xfer *x, char *out, size_t outlen)
{
    unsigned char md[SHA256_LEN];
    unsigned int n = 0;
    EVP_DigestFinal_ex(x->md, md, &n);
    if (x->file->form == DEPLOY_HASH_HEX) {
        for (unsigned i = 0; i < n && 2 * i + 2 < outlen; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
    } else {
        EVP_EncodeBlock((unsigned char *)out, md, (int)n);   /* 45 bytes */
    }
}

static int check_digest(struct xfer *x)
{
    const struct deploy_file *f = x->file;
    char got[72] = "";
    if (f->form == DEPLOY_HASH_NONE) {
        if (f->note)
            return 0;   /* nothing to check against; the deployment says why */
        set_error(x, XFER_ERC_NO_HASH, "updateManifest gives no hashes.sha256 for %s", f->id);
        return -1;
    }
    render_digest(x, got, sizeof got);
    int same = f->form == DEPLOY_HASH_HEX ? strcasecmp(got, f->sha256) == 0
                                          : strcmp(got, f->sha256) == 0;
    if (!same)
        set_error(x, XFER_ERC_SHA256, "sha256 mismatch: expected %s, got %s", f->sha256, got);
    return same ? 0 : -1;
}

enum xfer_state xfer_verify(struct xfer *x)
{
    const struct deploy_file *f = x->file;
    if (f->size >= 0 && x->got != f->size) {
        set_error(x, XFER_ERC_SIZE, "size mismatch: expected %lld bytes, got %lld",
                  (long long)f->size, (long long)x->got);
        failed(x);
        return x->state;
    }
    if (check_digest(x) != 0) {
        failed(x);
        return x->state;
    }
    release(x, true);
    x->state = XFER_OK;
    return x->state;
}

/* --------------------------------------------------------------- cancel */

void xfer_cancel(struct xfer *x, CURLM *multi)
{
    if (x->state == XFER_ACTIVE)
        curl_multi_remove_handle(multi, x->easy);
    if (x->state == XFER_QUEUED || x->state == XFER_ACTIVE || x->state == XFER_DOWNLOADED) {
        release(x, false);
        x->state = XFER_CANCELLED;
    }
}

void xfer_free(struct xfer *x)
{
    release(x, x->state == XFER_OK);
}
