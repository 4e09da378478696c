/* edge_listen — one MHD daemon in external epoll mode; see server/edge.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/edge.h"

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    struct edge *e = cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    if (strstr(line, "Too many open files")) {
        edge_lock(e);                   /* a worker's thread may log */
        e->stats.resource_errors++;     /* accept() failed: EMFILE or ENFILE */
        edge_unlock(e);
    }
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    log_msg(&e->log, LOG_WARN, "httpd", "%s", line);
}

static int resolve(const struct cfg_listen *where, struct sockaddr_storage *ss, char *err,
                   size_t errlen)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%u", where->port);
    int rc = getaddrinfo(where->host[0] ? where->host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve listen address %s: %s", where->host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* Binds and listens on the address once, without SO_REUSEPORT, and lets
 * go: 0, or the errno. The daemons bind with SO_REUSEPORT (so that the
 * workers share the data plane's port), which another process holding the
 * port with it too would not stop: this bind would. */
static int bind_probe(const struct sockaddr_storage *ss)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, err = 0;
    if (fd < 0)
        return errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 1) != 0)
        err = errno;
    close(fd);
    return err;
}

/* Why the address cannot be bound (err: bind_probe's; 0: found again). */
static const char *bind_failure(const struct sockaddr_storage *ss, int err)
{
    if (err == 0)
        err = bind_probe(ss);
    if (err == EADDRINUSE)
        return "the address is already in use (another edgecache, or another server?)";
    if (err == EADDRNOTAVAIL)
        return "not an address of this host";
    return err ? strerror(err) : "the HTTP server could not start";
}

struct MHD_Daemon *edge_listen(struct edge *e, const struct cfg_listen *where,
                               unsigned conn_limit, MHD_AccessHandlerCallback handler,
                               void *handler_cls, const struct MHD_OptionItem *extra,
                               char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (resolve(where, &ss, err, errlen) != 0)
        return NULL;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* the first daemon on an address checks that nothing else holds it;
     * the data plane's other workers then join it */
    int sibling = where == &e->cfg->listen && e->data_listening;
    int probe = sibling ? 0 : bind_probe(&ss);
    struct MHD_Daemon *d = probe ? NULL : MHD_start_daemon(
        flags, (uint16_t)where->port, NULL, NULL, handler, handler_cls,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, e,  /* MHD wants it first */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, conn_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)((e->cfg->client_timeout_ms + 999) / 1000),
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
        /* main() ignores SIGPIPE: this lets MHD use sendfile() for hits */
        MHD_OPTION_SIGPIPE_HANDLED_BY_APP, (int)1,
        MHD_OPTION_ARRAY, extra,
        MHD_OPTION_END);
    if (!d) {
        int admin = where == &e->cfg->admin_listen;
        int v6 = strchr(where->host, ':') != NULL;
        snprintf(err, errlen, "%s (config key: %s): cannot listen on %s%s%s:%u: %s",
                 admin ? "the control plane" : "the data plane", admin ? "admin_listen" : "listen",
                 v6 ? "[" : "", where->host[0] ? where->host : "*", v6 ? "]" : "", where->port,
                 bind_failure(&ss, probe));
        return NULL;
    }
    if (where == &e->cfg->listen)
        e->data_listening = 1;
    return d;
}
