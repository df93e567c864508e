/*
 * Assertions that say what was expected and what came (CHECK, FAILF), and per-test memory that
 * a failing assertion cannot leak: cmocka jumps out of the test, the teardown calls
 * th_free_kept(). For every test binary that drives real processes; include after <cmocka.h>
 * and "harness.h".
 */
#ifndef SG_TH_CHECK_H
#define SG_TH_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

/* ---- failing with a message ------------------------------------------------------------- */

static inline void th_failf(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static inline void th_failf(const char *file, int line, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_error("%s\n", msg);
    _fail(file, line);
    abort(); /* _fail does not return; this tells the compiler so */
}
#define FAILF(...) th_failf(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAILF(__VA_ARGS__);                                                                    \
    } while (0)

/* ---- per-test memory -------------------------------------------------------------------- */

enum { KEPT_STR, KEPT_JSON, KEPT_RESP, KEPT_CLIENT };
#define TH_MAX_KEPT 4096
static struct {
    void *ptr;
    int kind;
} th_kept[TH_MAX_KEPT];
static size_t th_nkept;

static inline void th_release(void *ptr, int kind)
{
    if (kind == KEPT_JSON) {
        cJSON_Delete(ptr);
    } else if (kind == KEPT_RESP) {
        th_resp_free(ptr);
        free(ptr);
    } else if (kind == KEPT_CLIENT) {
        th_client_free(ptr);
    } else {
        free(ptr);
    }
}

static inline void *th_keep(void *ptr, int kind)
{
    if (!ptr)
        return NULL;
    if (th_nkept == TH_MAX_KEPT) {
        th_release(ptr, kind);
        FAILF("a test keeps more than %d allocations", TH_MAX_KEPT);
    }
    th_kept[th_nkept].ptr = ptr;
    th_kept[th_nkept].kind = kind;
    th_nkept++;
    return ptr;
}

static inline void th_free_kept(void)
{
    while (th_nkept > 0) {
        th_nkept--;
        th_release(th_kept[th_nkept].ptr, th_kept[th_nkept].kind);
    }
}

static inline char *keep_str(char *s)
{
    return th_keep(s, KEPT_STR);
}

static inline cJSON *keep_json(cJSON *j)
{
    return th_keep(j, KEPT_JSON);
}

#endif
