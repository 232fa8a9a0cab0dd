/*
 * pq_load.h - libpq, loaded at run time only when the database is PostgreSQL.
 *
 * brisk is not linked with libpq: libpq brings about twenty shared libraries
 * (OpenSSL, GnuTLS, Kerberos, LDAP, p11-kit, ...), some running constructors
 * at load time, which cost a SQLite server megabytes of resident memory and
 * start-up time for nothing. db.c calls pq_load() when the URL names
 * PostgreSQL, which happens at start-up, before the seccomp filter (that
 * refuses executable mappings) is installed; pq_load dlopen()s libpq.so.5 and
 * resolves every function below into `pq_fn`.
 *
 * The files that call libpq include this header instead of <libpq-fe.h>: it
 * includes <libpq-fe.h> for the types and constants, then turns each function
 * name into its pointer (`PQexec(...)` becomes `(pq_fn.PQexec)(...)`), so the
 * calling code reads as plain libpq. A PQ function not listed here still
 * compiles, but the brisk link fails on it ("undefined reference to PQ..."):
 * add it to PQ_FUNCTIONS and to the #defines at the end.
 */
#ifndef BRISK_DB_PQ_LOAD_H
#define BRISK_DB_PQ_LOAD_H

#include <libpq-fe.h>

/* The shared library and the Debian package that ships it. */
#define PQ_LIBRARY "libpq.so.5"
#define PQ_PACKAGE "libpq5"

/* Every libpq function brisk calls (pg*.c, db.c). */
#define PQ_FUNCTIONS(X)                                                                            \
    X(PQclear)                                                                                     \
    X(PQcmdStatus)                                                                                 \
    X(PQcmdTuples)                                                                                 \
    X(PQconnectPoll)                                                                               \
    X(PQconnectStartParams)                                                                        \
    X(PQconnectdbParams)                                                                           \
    X(PQconninfoFree)                                                                              \
    X(PQconninfoParse)                                                                             \
    X(PQconsumeInput)                                                                              \
    X(PQenterPipelineMode)                                                                         \
    X(PQerrorMessage)                                                                              \
    X(PQexec)                                                                                      \
    X(PQexecParams)                                                                                \
    X(PQfinish)                                                                                    \
    X(PQflush)                                                                                     \
    X(PQfreemem)                                                                                   \
    X(PQgetResult)                                                                                 \
    X(PQgetisnull)                                                                                 \
    X(PQgetlength)                                                                                 \
    X(PQgetvalue)                                                                                  \
    X(PQisBusy)                                                                                    \
    X(PQnfields)                                                                                   \
    X(PQntuples)                                                                                   \
    X(PQpipelineSync)                                                                              \
    X(PQresultErrorField)                                                                          \
    X(PQresultErrorMessage)                                                                        \
    X(PQresultStatus)                                                                              \
    X(PQsendPrepare)                                                                               \
    X(PQsendQueryPrepared)                                                                         \
    X(PQsetNoticeReceiver)                                                                         \
    X(PQsetnonblocking)                                                                            \
    X(PQsocket)                                                                                    \
    X(PQstatus)

/* One pointer per function, with the prototype <libpq-fe.h> declares. */
struct pq_api {
/* NOLINTNEXTLINE(bugprone-macro-parentheses): `name` is a declarator here */
#define PQ_MEMBER(name) __typeof__(name) *name;
    PQ_FUNCTIONS(PQ_MEMBER)
#undef PQ_MEMBER
};

/* Filled by pq_load(); all NULL before it succeeded. */
extern struct pq_api pq_fn;

/*
 * Load libpq and resolve every function of PQ_FUNCTIONS, once per process
 * (later calls return the first result; safe from any thread). Returns NULL
 * when `pq_fn` is ready, else a one-line message naming the library, what is
 * missing and the package to install. Must first run before the sandbox.
 */
const char *pq_load(void);

/* pq_load.c itself names the members, so it defines PQ_LOAD_NO_MACROS first. */
#ifndef PQ_LOAD_NO_MACROS
#define PQclear (pq_fn.PQclear)
#define PQcmdStatus (pq_fn.PQcmdStatus)
#define PQcmdTuples (pq_fn.PQcmdTuples)
#define PQconnectPoll (pq_fn.PQconnectPoll)
#define PQconnectStartParams (pq_fn.PQconnectStartParams)
#define PQconnectdbParams (pq_fn.PQconnectdbParams)
#define PQconninfoFree (pq_fn.PQconninfoFree)
#define PQconninfoParse (pq_fn.PQconninfoParse)
#define PQconsumeInput (pq_fn.PQconsumeInput)
#define PQenterPipelineMode (pq_fn.PQenterPipelineMode)
#define PQerrorMessage (pq_fn.PQerrorMessage)
#define PQexec (pq_fn.PQexec)
#define PQexecParams (pq_fn.PQexecParams)
#define PQfinish (pq_fn.PQfinish)
#define PQflush (pq_fn.PQflush)
#define PQfreemem (pq_fn.PQfreemem)
#define PQgetResult (pq_fn.PQgetResult)
#define PQgetisnull (pq_fn.PQgetisnull)
#define PQgetlength (pq_fn.PQgetlength)
#define PQgetvalue (pq_fn.PQgetvalue)
#define PQisBusy (pq_fn.PQisBusy)
#define PQnfields (pq_fn.PQnfields)
#define PQntuples (pq_fn.PQntuples)
#define PQpipelineSync (pq_fn.PQpipelineSync)
#define PQresultErrorField (pq_fn.PQresultErrorField)
#define PQresultErrorMessage (pq_fn.PQresultErrorMessage)
#define PQresultStatus (pq_fn.PQresultStatus)
#define PQsendPrepare (pq_fn.PQsendPrepare)
#define PQsendQueryPrepared (pq_fn.PQsendQueryPrepared)
#define PQsetNoticeReceiver (pq_fn.PQsetNoticeReceiver)
#define PQsetnonblocking (pq_fn.PQsetnonblocking)
#define PQsocket (pq_fn.PQsocket)
#define PQstatus (pq_fn.PQstatus)
#endif

#endif
