/*
 * The test harness's insides: what its files share and the tests do not see (they include
 * harness.h only). Which file does what:
 *
 *   proc.c   small utilities, processes (sfsim; the pipes and waits the gateway's start and
 *            kill use too), files
 *   http.c   the libcurl client, URLs, cookies, Prometheus metrics
 *   html.c   HTML form scraping: the forms of sfsim's login and approval pages and of the
 *            gateway's pages, and submitting them
 *   flows.c  the browser through sfsim's pages, the Salesforce flows (code, token, refresh),
 *            sfsim's test-control API, the gateway's sign-in as a browser does it
 *   stack.c  the gateway stack (sfsim and scopegate together), a stack behind a reverse
 *            proxy, the vault tests' helpers (crash, restart, internal key)
 *   pg.c     a PostgreSQL server of the test's own, for the PostgreSQL store
 */
#ifndef SG_TEST_HARNESS_INT_H
#define SG_TEST_HARNESS_INT_H

#include <stddef.h>
#include <sys/types.h>

#include "harness.h"
#include "scopegate/http.h"

#define TH_BODY_MAX         ((size_t)8 << 20) /* a response body, a form, a URL built */
#define TH_FIRST_LINE_MAX   512               /* a process's first stdout line */
#define TH_START_TIMEOUT_MS 10000             /* for that first line */
#define TH_STOP_TIMEOUT_MS  10000             /* for an exit after a signal */

/* ---- proc.c ------------------------------------------------------------------------------ */

/* Keeps the read end of a started process's stdout pipe open (so a later write by the process
 * never meets SIGPIPE) until th_forget_fd(pid) closes it. */
void th_remember_fd(pid_t pid, int fd);
void th_forget_fd(pid_t pid);
/* Reads one line from fd within timeout_ms; 0 on success (line without '\n'). */
int th_read_first_line(int fd, char *line, size_t cap, int timeout_ms);
/* Waits for pid up to timeout_ms: 1 when it was reaped (*status set), 0 when still running,
 * -1 when it is not our child (someone else reaped it: its status is lost). */
int th_wait_for(pid_t pid, int *status, int timeout_ms);

/* ---- http.c ------------------------------------------------------------------------------ */

/* out all zero but for empty (not NULL) body and headers. */
void th_resp_empty(th_resp_t *out);
/* Same scheme and authority? */
int th_same_origin(const char *a, const char *b);
/* ref resolved against base (absolute, absolute-path, query-only or relative-path refs), dot
 * segments removed; heap or NULL. */
char *th_resolve_url(const char *base, const char *ref);

/* ---- html.c ------------------------------------------------------------------------------ */

#define TH_FORM_MAX_SUBMITS 16

typedef struct {
    char *action;     /* raw, entity-decoded */
    char *method;     /* lower case */
    sg_form_t fields; /* hidden inputs and other valued inputs, in order */
    struct {
        char *name;  /* may be NULL */
        char *value; /* may be NULL */
        char *label; /* value attribute of an <input>, inner text of a <button> */
    } submit[TH_FORM_MAX_SUBMITS];
    size_t nsubmit;
    int has_pw;
    int has_username;
} th_form_t;

typedef enum { TH_PAGE_OTHER, TH_PAGE_LOGIN, TH_PAGE_APPROVAL } th_page_kind;

/* Finds the login form (one with a pw field) or the form holding the button labelled button
 * ("Allow"/"Deny"); *out and *submit (the button's index, -1 for none) are set for those two
 * kinds, and *out is then the caller's to th_form_free. */
th_page_kind th_scrape(const char *html, const char *button, th_form_t *out, int *submit);
void th_form_free(th_form_t *f);
/* Submits form f (found on page_url) with its submit button #submit, username/pw replaced
 * when not NULL, and puts the answer in *resp; *target_out (when not NULL) gets the URL it
 * went to (heap) on success. */
int th_form_submit(th_client_t *c, const char *page_url, const th_form_t *f, int submit,
                   const char *username, const char *password, th_resp_t *resp, char **target_out);

#endif
