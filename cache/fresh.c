/* fresh — see fresh.h. */
#include "cache/fresh.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cache/http_range.h"

/* "name" or "name=value" at p (length n); value may be quoted. */
static int64_t delta_seconds(const char *v, size_t n)
{
    char buf[32];
    if (n && *v == '"') {
        v++;
        n -= n >= 2 ? 2 : 1;
    }
    if (n == 0 || n >= sizeof buf)
        return n ? INT32_MAX : 0;   /* absurdly large: as good as forever */
    memcpy(buf, v, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)buf[i]))
            return 0;
    long long x = strtoll(buf, NULL, 10);
    return x > INT32_MAX ? INT32_MAX : x;
}

void fresh_parse(const char *cc, struct fresh_directives *d)
{
    memset(d, 0, sizeof *d);
    d->max_age = d->s_maxage = d->stale_if_error = -1;
    for (const char *p = cc; p && *p;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ",");
        size_t name = strcspn(p, "=,");
        const char *v = name < len ? p + name + 1 : NULL;
        size_t vn = v ? len - name - 1 : 0;
        while (name && (p[name - 1] == ' ' || p[name - 1] == '\t'))
            name--;
        while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
            vn--;
#define IS(word) (name == sizeof word - 1 && strncasecmp(p, word, name) == 0)
        if (IS("no-store"))
            d->no_store = 1;
        else if (IS("no-cache"))
            d->no_cache = 1;        /* with field names too: the whole answer, to be safe */
        else if (IS("private"))
            d->private_ = 1;
        else if (IS("must-revalidate") || IS("proxy-revalidate"))
            d->must_revalidate = 1;
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

static int64_t parse_date(const char *s)
{
    time_t t;
    return s && http_date_parse(s, &t) == 0 ? (int64_t)t : -1;
}

static int64_t lifetime(const struct fresh_input *in, const struct fresh_directives *d,
                        int64_t date)
{
    if (d->no_cache)
        return 0;
    if (d->s_maxage >= 0)
        return d->s_maxage;
    if (d->max_age >= 0)
        return d->max_age;
    if (in->expires) {
        int64_t exp = parse_date(in->expires);
        return exp > date ? exp - date : 0;   /* an invalid Expires is in the past */
    }
    if (in->last_modified > 0 && date > in->last_modified) {
        int64_t h = (date - in->last_modified) / 10;
        return h < in->heuristic_max_age ? h : in->heuristic_max_age;
    }
    return 0;
}

void fresh_evaluate(const struct fresh_input *in, struct fresh_result *out)
{
    struct fresh_directives d;
    fresh_parse(in->cache_control, &d);
    out->storable = !d.no_store && !d.private_;
    out->stale_if_error = d.must_revalidate ? 0 : d.stale_if_error;
    int64_t date = parse_date(in->date);
    if (date < 0 || date > in->now)
        date = in->now;
    int64_t age = in->now - date;
    int64_t age_hdr = in->age ? delta_seconds(in->age, strlen(in->age)) : 0;
    if (age_hdr > age)
        age = age_hdr;
    int64_t life = lifetime(in, &d, date);
    out->fresh_until = life > age ? in->now + (life - age) : in->now;
}
