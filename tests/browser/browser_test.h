/*
 * What the browser tests of the gateway share (test_browser_gateway.c,
 * test_browser_journeys.c): gw_test.h's assertions, per-test memory and stack (GW), one
 * chromedriver for the file (drv), a fresh browser profile and a reset org for every test,
 * and the few steps every test takes. Include after <cmocka.h> and "harness.h".
 */
#ifndef SG_BROWSER_TEST_H
#define SG_BROWSER_TEST_H

#include <unistd.h>

#include "gw_test.h"
#include "webdriver.h"

static wd_driver_t *drv;

/* ---- steps -------------------------------------------------------------------------------- */

/* The first element matching css, waiting for it (WD_IMPLICIT_MS); fails the test without. */
static inline char *element(const char *css, const char *page)
{
    char *el = keep_str(wd_find(drv, css));
    CHECK(el != NULL, "expected %s to have an element \"%s\"", page, css);
    return el;
}

static inline char *text_of(const char *css, const char *page)
{
    char *t = keep_str(wd_text(drv, element(css, page)));
    CHECK(t != NULL, "could not read the text of \"%s\" on %s", css, page);
    return t;
}

/* Loads a path of the gateway's public listener. */
/* Polls until the browser's URL is exactly want (the page then shows or is loading). */
static inline void wait_exact_url(const char *want, int timeout_ms)
{
    char *url = NULL;
    for (int waited = 0;; waited += 50) {
        free(url);
        url = wd_current_url(drv);
        if ((url && strcmp(url, want) == 0) || waited >= timeout_ms)
            break;
        usleep(50 * 1000);
    }
    keep_str(url);
    char *title = keep_str(wd_title(drv));
    CHECK(url && strcmp(url, want) == 0,
          "expected the browser on %s within %d ms, it is on %s (title \"%s\")", want, timeout_ms,
          url ? url : "?", title ? title : "?");
}

static inline void open_page(const char *path)
{
    const char *url = FMT("%s%s", GW.url, path);
    CHECK(wd_navigate(drv, url) == 0, "expected the browser to load %s", url);
}

static inline void snapshot(const char *name)
{
    CHECK(wd_snapshot(drv, name) == 0, "could not save the screenshot %s", name);
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static inline int browser_group_teardown(void **state)
{
    int rc = 0;
    if (wd_stop(drv)) {
        fprintf(stderr, "chromedriver or the browser did not stop cleanly\n");
        rc = -1;
    }
    drv = NULL;
    return gw_group_teardown(state) ? -1 : rc;
}

/* The stack (opts may be NULL: th_default_policy) and chromedriver, for the whole file. */
static inline int browser_group_setup(void **state, const th_stack_opts_t *opts)
{
    th_stack_opts_t none = {0};
    if (th_stack_start_opts(&GW, opts ? opts : &none) == 0 && wd_start(&drv) == 0)
        return 0;
    fprintf(stderr, "browser tests: setup failed (see above); no test ran\n");
    browser_group_teardown(state);
    return -1;
}

/* A clean org and a new browser with no cookies for every test. */
static inline int browser_setup(void **state)
{
    return gw_setup(state) ? -1 : wd_session_new(drv);
}

static inline int browser_teardown(void **state)
{
    gw_teardown(state);
    return wd_session_delete(drv);
}

#endif
