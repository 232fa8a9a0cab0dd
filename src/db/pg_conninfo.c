/*
 * pg_conninfo.c - the PostgreSQL connection string, as the backend reads it.
 *
 * Reason to change: how a connection string becomes libpq's parameters - the
 * host:port/dbname label of log lines, the keywords brisk adds ahead of the
 * user's string, the host list whose DNS names the engine (pg.c) resolves off
 * the loop, and where PostgreSQL's notices go. Used by the engine and by the
 * migrations (pg_migrate.c); it calls neither.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "base/compiler.h"
#include "base/log.h"
#include "db/pg_int.h"

#define HOSTS_MAX 64 /* entries of a host list we resolve ourselves (libpq has no limit) */

/* Copy libpq's (possibly multi-line) message into out as one line. */
void one_line(char *out, size_t cap, const char *msg)
{
    size_t n = 0;
    bool space = false;
    if (!msg)
        msg = "";
    for (const char *p = msg; *p && n + 1 < cap; p++) {
        char ch = *p;
        if (ch == '\n' || ch == '\r' || ch == '\t') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < cap) {
            out[n++] = ' ';
        }
        space = false;
        out[n++] = ch;
    }
    out[n] = '\0';
}

/*
 * "host:port/dbname" from the connection string, for log lines (libpq's
 * defaults where it names none). Returns 0, or -1 when the string does not
 * parse; libpq's message is not repeated since it may quote the string.
 */
int make_label(const char *conninfo, char *out, size_t cap)
{
    char *err = NULL;
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *dbname = NULL, *user = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);

    if (!opts) {
        PQfreemem(err);
        return -1;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    snprintf(out, cap, "%s:%s/%s",
             host       ? host
             : hostaddr ? hostaddr
                        : "localhost",
             port ? port : "5432",
             dbname ? dbname
             : user ? user
                    : "-");
    PQconninfoFree(opts);
    return 0;
}

/* PostgreSQL's notices and warnings go to our log, not to libpq's default stderr printer. */
void on_notice(void *arg, const PGresult *res)
{
    const char *label = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char msg[WHY_MAX];
    one_line(msg, sizeof msg, PQresultErrorMessage(res));
    if (sev && strcmp(sev, "WARNING") == 0)
        db__log(LOG_WARN, "postgres", label, NULL, "%s", msg);
    else
        db__log(LOG_DEBUG, "postgres", label, NULL, "%s", msg);
}

/*
 * Keywords given to libpq ahead of the user's string: later keywords win, and
 * the string is expanded in place of "dbname", so whatever it sets itself
 * overrides these defaults. connect_timeout only bounds blocking connects (the
 * migration); the loop enforces its own limit. gssencmode: libpq's default
 * "prefer" asks Kerberos for credentials on every TCP connect (config files,
 * getuid(); outside the sandbox's allowlist): GSS encryption is opt-in here,
 * gssencmode=prefer|require in the URL turns it on. host, hostaddr and port
 * come after the string, so they override it: the lists of resolved addresses
 * (NULL values are skipped by libpq).
 */
const char *const conn_keys[] = {"application_name",
                                 "connect_timeout",
                                 "keepalives_idle",
                                 "keepalives_interval",
                                 "keepalives_count",
                                 "gssencmode",
                                 "dbname",
                                 "host",
                                 "hostaddr",
                                 "port",
                                 NULL};

void conn_values(const char *conninfo, const char *host, const char *hostaddr, const char *port,
                 const char *vals[ARRAY_LEN(conn_keys)])
{
    vals[0] = "brisk";
    vals[1] = "10";
    vals[2] = "30";
    vals[3] = "10";
    vals[4] = "3";
    vals[5] = "disable";
    vals[6] = conninfo;
    vals[7] = host;
    vals[8] = hostaddr;
    vals[9] = port;
    vals[10] = NULL;
}

/* ---- host names: resolved on a thread, never on the loop ---- */

/*
 * libpq resolves a host name with a blocking getaddrinfo() inside
 * PQconnectStartParams/PQconnectPoll: on a loop thread that stalls every
 * connection of the loop for as long as DNS takes. So the handle resolves the
 * names of its host list itself (net/resolver.h), then gives libpq the
 * addresses: each name becomes as many entries as it has addresses, with
 * hostaddr=<address> (libpq then connects to it without resolving) and host
 * kept as the name (TLS verify-full, Kerberos and the password file use it).
 * Unix sockets, numeric hosts and entries with a hostaddr of their own are
 * passed through. A lookup is made per connection attempt, as libpq would
 * (a failover that moves the name is seen at the next reconnect), and shared
 * by the connections of the handle that wait for it.
 */

/* Elements of a libpq comma-separated list (libpq has no escapes either). Returns the count. */
static int split_list(const char *s, char **out, int max)
{
    int n = 0;
    if (!s || !*s)
        return 0;
    for (const char *p = s;; n++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n >= max)
            return -1;
        out[n] = strndup(p, len);
        if (!out[n])
            log_fatal("out of memory");
        if (!e)
            return n + 1;
        p = e + 1;
    }
}

/* A host entry libpq would look up in DNS: not a socket path, not a numeric address. */
static bool is_dns_name(const char *host)
{
    struct in_addr a4;
    if (!*host || host[0] == '/' || host[0] == '@' || strchr(host, ':'))
        return false; /* default socket, unix socket, abstract socket, IPv6 literal */
    return inet_pton(AF_INET, host, &a4) != 1;
}

void hosts_free(struct db_pg *pg)
{
    for (int i = 0; i < pg->nhosts; i++) {
        free(pg->hosts[i].host);
        free(pg->hosts[i].hostaddr);
        free(pg->hosts[i].port);
    }
    free(pg->hosts);
    pg->hosts = NULL;
    pg->nhosts = 0;
    free(pg->names); /* the strings belong to hosts[] */
    pg->names = NULL;
    pg->nnames = 0;
}

static const char *opt_or_env(const char *val, const char *env)
{
    return val && *val ? val : getenv(env);
}

/*
 * Fill pg->hosts/names from the connection string (PGHOST, PGHOSTADDR and
 * PGPORT where it sets none, as libpq does). Nothing is set, and libpq is left
 * to itself, when no entry is a DNS name, when a service file may name the
 * host, or when the lists do not match (libpq then reports the error).
 */
void hosts_parse(struct db_pg *pg)
{
    char *err = NULL;
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *service = NULL;
    char *hl[HOSTS_MAX] = {0}, *al[HOSTS_MAX] = {0}, *pl[HOSTS_MAX] = {0};
    int nh = 0, na = 0, np = 0;
    PQconninfoOption *opts = PQconninfoParse(pg->conninfo, &err);

    if (!opts) {
        PQfreemem(err);
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    host = opt_or_env(host, "PGHOST");
    hostaddr = opt_or_env(hostaddr, "PGHOSTADDR");
    port = opt_or_env(port, "PGPORT");
    service = opt_or_env(service, "PGSERVICE");
    if (service && !host)
        goto out;
    nh = split_list(host, hl, HOSTS_MAX);
    na = split_list(hostaddr, al, HOSTS_MAX);
    np = split_list(port, pl, HOSTS_MAX);
    int n = nh > na ? nh : na;
    if (nh < 0 || na < 0 || np < 0 || n == 0 || (nh && na && nh != na) || (np > 1 && np != n))
        goto out;
    pg->hosts = calloc((size_t)n, sizeof *pg->hosts);
    pg->names = calloc((size_t)n, sizeof *pg->names);
    if (!pg->hosts || !pg->names)
        log_fatal("out of memory");
    pg->nhosts = n;
    for (int i = 0; i < n; i++) {
        struct pg_host *h = &pg->hosts[i];
        h->host = i < nh ? hl[i] : strdup("");
        h->hostaddr = i < na ? al[i] : strdup("");
        h->port = strdup(np == 0 ? "" : pl[np == 1 ? 0 : i]);
        hl[i] = al[i] = NULL;
        if (!h->host || !h->hostaddr || !h->port)
            log_fatal("out of memory");
        h->name = -1;
        if (*h->hostaddr || !is_dns_name(h->host))
            continue;
        for (int j = 0; j < pg->nnames && h->name < 0; j++) {
            /* names[0..nnames) are set: nnames is 0 on entry (a fresh handle), which
             * the analyzer cannot see now that hosts_parse is called from pg.c */
            // NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker)
            if (strcmp(pg->names[j], h->host) == 0)
                h->name = j;
        }
        if (h->name < 0) {
            h->name = pg->nnames;
            pg->names[pg->nnames++] = h->host;
        }
    }
    if (pg->nnames == 0)
        hosts_free(pg); /* nothing to resolve: libpq gets the string as it is */
out:
    for (int i = 0; i < HOSTS_MAX; i++) {
        free(hl[i]);
        free(al[i]);
        free(pl[i]);
    }
    PQconninfoFree(opts);
}
