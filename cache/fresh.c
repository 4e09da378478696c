/* fresh — see fresh.h. */
#include "cache/fresh.h"

#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cache/http_range.h"
#include "config/cfg.h"

/* "name" or "name=value" at p (length n); value may be quoted. */
static int64_t delta_seconds(const char *v, size_t n)
{
    char buf[32];
    if (n && *v == '"') {
        v++;
        n -= n >= 2 ? 2 : 1;
    }
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)v[i]))
            return 0;
    if (n >= 10)
        return INT32_MAX;           /* absurdly large: as good as forever */
    memcpy(buf, v, n);
    buf[n] = '\0';
    long long x = strtoll(buf, NULL, 10);
    return x > INT32_MAX ? INT32_MAX : x;
}

/* Appends the field names of a quoted list ("a, b") to out, lower case. */
static void add_fields(char *out, size_t outlen, const char *v, size_t n)
{
    if (n && *v == '"') {
        v++;
        n--;
        if (n && v[n - 1] == '"')
            n--;
    }
    size_t pos = strlen(out);
    for (size_t i = 0; i < n && pos + 2 < outlen; i++) {
        char c = v[i];
        if (c == ' ' || c == '\t')
            continue;
        if (c == ',' && (pos == 0 || out[pos - 1] == ','))
            continue;
        if (pos && out[pos - 1] != ',' && i == 0)
            out[pos++] = ',';
        out[pos++] = (char)tolower((unsigned char)c);
    }
    if (pos && out[pos - 1] == ',')
        pos--;
    out[pos] = '\0';
}

void fresh_parse(const char *cc, struct fresh_directives *d)
{
    memset(d, 0, sizeof *d);
    d->max_age = d->s_maxage = d->stale_if_error = -1;
    for (const char *p = cc; p && *p;) {
        p += strspn(p, " \t,");
        /* a quoted value may hold commas */
        size_t len = 0;
        int quoted = 0;
        while (p[len] && (quoted || p[len] != ',')) {
            if (p[len] == '"')
                quoted = !quoted;
            len++;
        }
        size_t name = strcspn(p, "=,");
        if (name > len)
            name = len;
        const char *v = name < len ? p + name + 1 : NULL;
        size_t vn = v ? len - name - 1 : 0;
        while (name && (p[name - 1] == ' ' || p[name - 1] == '\t'))
            name--;
        while (v && vn && (*v == ' ' || *v == '\t')) {
            v++;
            vn--;
        }
        while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
            vn--;
#define IS(word) (name == sizeof word - 1 && strncasecmp(p, word, name) == 0)
        if (IS("no-store"))
            d->no_store = 1;
        else if (IS("no-cache") && v && vn)
            add_fields(d->drop_fields, sizeof d->drop_fields, v, vn);
        else if (IS("no-cache"))
            d->no_cache = 1;
        else if (IS("private") && v && vn)
            add_fields(d->drop_fields, sizeof d->drop_fields, v, vn);
        else if (IS("private"))
            d->private_ = 1;
        else if (IS("public"))
            d->public_ = 1;
        else if (IS("must-revalidate"))
            d->must_revalidate = 1;
        else if (IS("proxy-revalidate"))
            d->proxy_revalidate = 1;
        else if (IS("max-age") && v)
            d->max_age = delta_seconds(v, vn);
        else if (IS("s-maxage") && v)
            d->s_maxage = delta_seconds(v, vn);
        else if (IS("stale-if-error") && v)
            d->stale_if_error = delta_seconds(v, vn);
#undef IS
        p += len;
    }
}

int fresh_status_heuristic(long status)
{
    switch (status) {
    case 200: case 203: case 204: case 300: case 301: case 308:
    case 404: case 405: case 410: case 414: case 501:
        return 1;
    default:
        return 0;
    }
}

static int64_t parse_date(const char *s)
{
    time_t t;
    return s && http_date_parse(s, &t) == 0 ? (int64_t)t : -1;
}

/* ---- path rules ------------------------------------------------------------- */

/* The path of an absolute URL ("/" when it has none), without the query,
 * into out. */
static void url_path(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    p += strcspn(p, "/?#");
    size_t n = strcspn(p, "?#");
    if (n == 0 || *p != '/') {
        snprintf(out, outlen, "/");
        return;
    }
    snprintf(out, outlen, "%.*s", (int)n, p);
}

void fresh_policy_for(const struct cfg *cfg, const char *origin_url, struct fresh_policy *out)
{
    char path[2048];
    memset(out, 0, sizeof *out);
    if (!cfg || !origin_url)
        return;
    url_path(origin_url, path, sizeof path);
    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    for (size_t i = 0; i < cfg->n_refresh; i++) {
        const struct cfg_refresh *r = &cfg->refresh[i];
        const char *subject = strchr(r->pattern, '/') ? path : name;
        if (fnmatch(r->pattern, subject, 0) != 0)
            continue;
        out->rule = r->kind == CFG_REFRESH_IMMUTABLE    ? FRESH_RULE_IMMUTABLE
                    : r->kind == CFG_REFRESH_REVALIDATE ? FRESH_RULE_REVALIDATE
                                                        : FRESH_RULE_RANGE;
        out->min_s = (int64_t)(r->min_ms / 1000);
        out->max_s = (int64_t)(r->max_ms / 1000);
        return;
    }
}

/* ---- evaluation --------------------------------------------------------------- */

static const char *not_storable(const struct fresh_input *in, const struct fresh_directives *d,
                                int explicit_freshness)
{
    if (d->no_store)
        return "no-store";
    if (d->private_)
        return "private";
    if (in->status == 206)
        return "a partial answer";
    if (in->request_authorized && !d->public_ && d->s_maxage < 0 && !d->must_revalidate)
        return "an answer to a request with Authorization, without public, s-maxage or "
               "must-revalidate";
    if (!fresh_status_heuristic(in->status) && !explicit_freshness && !d->public_)
        return "its status is not cacheable without explicit freshness";
    return NULL;
}

/* The lifetime the response gives (explicit or heuristic), -1 for none
 * explicit and no heuristic. *explicit is set when it came from the
 * response's own fields. */
static int64_t response_lifetime(const struct fresh_input *in, const struct fresh_directives *d,
                                 int64_t date, int *explicit)
{
    *explicit = 1;
    if (d->s_maxage >= 0)
        return d->s_maxage;
    if (d->max_age >= 0)
        return d->max_age;
    if (in->expires) {
        int64_t exp = parse_date(in->expires);
        return exp > date ? exp - date : 0;     /* an invalid Expires is in the past */
    }
    *explicit = 0;
    if ((fresh_status_heuristic(in->status) || d->public_) && in->last_modified > 0
        && date > in->last_modified)
        return (date - in->last_modified) / 10;
    return -1;
}

void fresh_evaluate(const struct fresh_input *in, struct fresh_result *out)
{
    struct fresh_directives d;
    fresh_parse(in->cache_control, &d);
    memset(out, 0, sizeof *out);
    snprintf(out->drop_fields, sizeof out->drop_fields, "%s", d.drop_fields);

    /* Age (RFC 9111 §4.2.3). A Date ahead of our clock is no apparent age. */
    int64_t date_value = parse_date(in->date);
    int64_t date = date_value >= 0 ? date_value : in->response_time;
    int64_t apparent = date_value >= 0 && in->response_time > date_value
                           ? in->response_time - date_value : 0;
    int64_t age_value = in->age ? delta_seconds(in->age, strlen(in->age)) : 0;
    int64_t delay = in->response_time > in->request_time ? in->response_time - in->request_time : 0;
    int64_t corrected = age_value + delay;
    out->initial_age = apparent > corrected ? apparent : corrected;

    int explicit_freshness;
    int64_t life = response_lifetime(in, &d, date, &explicit_freshness);
    const char *why = not_storable(in, &d, explicit_freshness);
    out->storable = why == NULL;
    out->why_not = why;
    out->personal = d.no_store || d.private_
                    || (in->request_authorized && !d.public_ && d.s_maxage < 0
                        && !d.must_revalidate);

    const struct fresh_policy *pol = &in->policy;
    if (!explicit_freshness) {      /* the heuristic, bounded by the rule or the config */
        if (life < 0)
            life = 0;
        int64_t lo = pol->rule == FRESH_RULE_RANGE ? pol->min_s : 0;
        int64_t hi = pol->rule == FRESH_RULE_RANGE ? pol->max_s : in->heuristic_max_age;
        life = life < lo ? lo : life > hi ? hi : life;
    }
    out->always_revalidate = d.no_cache || pol->rule == FRESH_RULE_REVALIDATE;
    if (out->always_revalidate)
        life = 0;
    if ((in->immutable || pol->rule == FRESH_RULE_IMMUTABLE) && in->status == 200) {
        out->always_revalidate = 0;
        life = FRESH_FOREVER;
    }
    out->lifetime = life;
    if (life == FRESH_FOREVER)
        out->fresh_until = FRESH_FOREVER;
    else
        out->fresh_until = life > out->initial_age ? in->response_time + (life - out->initial_age)
                                                   : in->response_time;

    out->no_stale = d.no_cache || d.must_revalidate || d.proxy_revalidate || d.s_maxage >= 0;
    out->stale_if_error = out->no_stale ? 0 : d.stale_if_error;
}
