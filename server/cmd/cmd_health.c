/*
 * edgecache health [OPTION]...
 *
 * Asks a running daemon whether it serves: loads the configuration exactly
 * as the daemon does (config file, EDGECACHE_* environment, the same flags),
 * takes its admin_listen, and GETs http://HOST:PORT/healthz with a 2 s
 * timeout. A wildcard listener (0.0.0.0, ::) is asked on its loopback
 * address (127.0.0.1, ::1). /healthz needs no token, so none is sent; the
 * configuration still has to be one the daemon would accept (a control
 * plane beyond loopback without a token is unhealthy here too).
 *
 * Prints one line on stdout, "healthy: URL answered 200 ok", or on stderr,
 * "unhealthy: REASON" where the reason names the URL (or the configuration
 * error that keeps the daemon from starting).
 *
 * Exit status (what a container HEALTHCHECK expects): 0 healthy; 1
 * unhealthy, whatever the reason, configuration errors included.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg.h"
#include "server/cmd/cmd.h"

#define EXIT_HEALTHY 0
#define EXIT_UNHEALTHY 1
#define HEALTH_TIMEOUT_MS 2000L
#define BODY_MAX 120                    /* bytes of the answer kept for the message */

extern char **environ;

/* The first BODY_MAX bytes of /healthz's answer. */
struct health_body {
    char text[BODY_MAX + 1];
    size_t len;
};

/* Table of contents. */
static bool wants_help(int argc, char **argv);
static void print_usage(FILE *out);
static void health_url(const struct cfg_listen *l, char *url, size_t urllen);
static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx);
static void body_line(struct health_body *b);
static int check_health(const char *url);

int cmd_health(int argc, char **argv)
{
    struct cfg cfg;
    char err[1024] = "", url[300];

    if (wants_help(argc, argv)) {
        print_usage(stdout);
        return EXIT_HEALTHY;
    }
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) {
        fprintf(stderr, "unhealthy: out of memory\n");
        return EXIT_UNHEALTHY;
    }
    args[0] = "edgecache health";
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];
    enum cfg_result cr = cfg_load(&cfg, argc, args, environ, stdout, err, sizeof err);
    free(args);
    if (cr != CFG_OK) {
        if (cr == CFG_ERROR)
            fprintf(stderr, "unhealthy: the configuration is refused, so the daemon"
                    " would not start: %s\n", err);
        cfg_free(&cfg);
        return cr == CFG_EXIT ? EXIT_HEALTHY : EXIT_UNHEALTHY;
    }
    health_url(&cfg.admin_listen, url, sizeof url);
    cfg_free(&cfg);
    return check_health(url);
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static void print_usage(FILE *out)
{
    fputs("Usage: edgecache health [OPTION]...\n"
          "Asks the running daemon's control plane for GET /healthz (2 s timeout) and\n"
          "prints one line: \"healthy: ...\" or \"unhealthy: REASON\". The address is\n"
          "admin_listen from the same configuration the daemon reads (config file,\n"
          "EDGECACHE_* environment, flags); a wildcard address (0.0.0.0, ::) is asked\n"
          "on loopback (127.0.0.1, ::1). No token is sent: /healthz needs none.\n\n"
          "Every daemon option is accepted (see edgecache --help); health uses\n"
          "--admin-listen HOST:PORT (EDGECACHE_ADMIN_LISTEN) and -c FILE.\n\n"
          "Exit status: 0 healthy; 1 unhealthy (no answer, not 200, or a configuration\n"
          "the daemon would refuse). A container HEALTHCHECK can run it as it is.\n", out);
}

/* http://HOST:PORT/healthz for a listener, a wildcard host replaced by the
 * loopback address of its family and an IPv6 address in brackets. */
static void health_url(const struct cfg_listen *l, char *url, size_t urllen)
{
    struct in_addr a4;
    struct in6_addr a6;
    const char *host = l->host[0] ? l->host : "0.0.0.0";
    bool v6 = false;

    if (inet_pton(AF_INET, host, &a4) == 1) {
        if (a4.s_addr == htonl(INADDR_ANY))
            host = "127.0.0.1";
    } else if (inet_pton(AF_INET6, host, &a6) == 1) {
        v6 = true;
        if (IN6_IS_ADDR_UNSPECIFIED(&a6))
            host = "::1";
    }
    snprintf(url, urllen, "http://%s%s%s:%u/healthz", v6 ? "[" : "", host, v6 ? "]" : "",
             l->port);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct health_body *b = ctx;
    size_t n = size * nmemb, room = BODY_MAX - b->len;
    memcpy(b->text + b->len, data, n < room ? n : room);
    b->len += n < room ? n : room;
    b->text[b->len] = '\0';
    return n;
}

/* The answer's first line, for the message: control characters become
 * spaces, trailing white space goes. */
static void body_line(struct health_body *b)
{
    size_t n = strcspn(b->text, "\r\n");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)b->text[i] < 0x20 || b->text[i] == 0x7f)
            b->text[i] = ' ';
    while (n && b->text[n - 1] == ' ')
        n--;
    b->text[n] = '\0';
}

/* One GET of url, no proxy (the environment's http_proxy must not decide
 * whether this container is healthy), no redirects. */
static int check_health(const char *url)
{
    struct health_body body = {.len = 0};
    char curl_err[CURL_ERROR_SIZE] = "";
    long status = 0;
    int rc = EXIT_UNHEALTHY;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "unhealthy: %s: libcurl could not be initialised\n", url);
        return EXIT_UNHEALTHY;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(stderr, "unhealthy: %s: libcurl could not be initialised\n", url);
        curl_global_cleanup();
        return EXIT_UNHEALTHY;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, HEALTH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    CURLcode res = curl_easy_perform(h);
    if (res != CURLE_OK) {
        fprintf(stderr, "unhealthy: %s: %s\n", url, curl_err[0] ? curl_err
                : curl_easy_strerror(res));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    body_line(&body);
    if (status == 200) {
        printf("healthy: %s answered 200%s%s\n", url, body.text[0] ? " " : "", body.text);
        rc = EXIT_HEALTHY;
    } else {
        fprintf(stderr, "unhealthy: %s answered %ld%s%s\n", url, status,
                body.text[0] ? " " : "", body.text);
    }
out:
    curl_easy_cleanup(h);
    curl_global_cleanup();
    return rc;
}
