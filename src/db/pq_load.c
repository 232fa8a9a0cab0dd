/*
 * pq_load.c - dlopen libpq and resolve the functions brisk calls (see pq_load.h).
 */
#define PQ_LOAD_NO_MACROS
#include "db/pq_load.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/compiler.h"

struct pq_api pq_fn;

static const struct {
    const char *name;
    size_t offset;
} k_syms[] = {
#define PQ_SYM(name) {#name, offsetof(struct pq_api, name)},
    PQ_FUNCTIONS(PQ_SYM)
#undef PQ_SYM
};

/* dlsym returns a void *; POSIX guarantees it converts to a function pointer. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers are data-sized");

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static const char *g_error; /* NULL once pq_fn is filled */
static char g_msg[512];

static void load(void)
{
    dlerror();
    void *lib = dlopen(PQ_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(g_msg, sizeof g_msg,
                 "PostgreSQL needs " PQ_LIBRARY ", which cannot be loaded (%.200s); install the "
                 "Debian package " PQ_PACKAGE " (apt-get install " PQ_PACKAGE ")",
                 why ? why : "unknown error");
        g_error = g_msg;
        return;
    }

    /* Resolve everything first and name every missing function in one line. */
    struct pq_api api;
    memset(&api, 0, sizeof api);
    char missing[200] = "";
    size_t nmissing = 0, used = 0;
    bool cut = false;
    for (size_t i = 0; i < ARRAY_LEN(k_syms); i++) {
        void *p = dlsym(lib, k_syms[i].name);
        if (p) {
            memcpy((char *)&api + k_syms[i].offset, &p, sizeof p);
            continue;
        }
        nmissing++;
        /* whole names, always leaving room for ", ..." when the rest does not fit */
        size_t len = strlen(k_syms[i].name), sep = used ? 2 : 0;
        if (!cut && used + sep + len + sizeof ", ..." <= sizeof missing) {
            memcpy(missing + used, ", ", sep);
            memcpy(missing + used + sep, k_syms[i].name, len + 1);
            used += sep + len;
        } else if (!cut) {
            memcpy(missing + used, ", ...", sizeof ", ...");
            cut = true;
        }
    }
    if (nmissing) {
        snprintf(g_msg, sizeof g_msg,
                 PQ_LIBRARY " lacks %zu function%s brisk needs (%s): brisk needs libpq 14 or "
                            "newer; install a newer Debian package " PQ_PACKAGE,
                 nmissing, nmissing == 1 ? "" : "s", missing);
        g_error = g_msg;
        dlclose(lib);
        return;
    }
    pq_fn = api; /* the library stays loaded for the life of the process */
    g_error = NULL;
}

const char *pq_load(void)
{
    pthread_once(&g_once, load);
    return g_error;
}
