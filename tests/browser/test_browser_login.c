/*
 * A person in a real browser: headless Chromium, driven through chromedriver, opens sfsim's
 * authorize link, logs in as a demo user, presses "Allow" (or "Deny", or mistypes the
 * password) and lands on the callback. The harness's own scraper (th_browser_authorize) plays
 * the browser elsewhere; this proves the pages work for a browser that runs them as written.
 *
 * The callback is not demo.cfg's port 8080 (it may be busy or closed here): the test listens
 * on a free loopback port itself and runs sfsim with a copy of demo.cfg whose demo-signin and
 * demo-api callbacks point there. The copy lives in TMPDIR, so its relative paths are made
 * absolute against the real config's folder; the source tree stays clean.
 *
 * One sfsim, one chromedriver and one listener serve the executable; every test gets a fresh
 * browser session (a fresh profile: no cookies) and starts from POST /_sim/reset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libconfig.h>

#include "harness.h"
#include "th_check.h"
#include "webdriver.h"

#define SIGNIN        "demo-signin"
#define SIGNIN_SECRET "demo-signin-secret"
#define API           "demo-api"
#define API_SECRET    "demo-api-secret"
#define CALLBACK_PATH "/oauth/callback"
/* sfsim's login error (tests/sfsim/authorize.c), as Salesforce words it. */
#define BAD_LOGIN                                                                                  \
    "Please check your username and password. If you still can't log in, contact your "            \
    "Salesforce administrator."
#define LANDING_MS 5000 /* from a click to the callback page */

static th_proc_t sim;
static wd_driver_t *drv;
static char *config_path; /* the temporary copy of demo.cfg */

/* ---- the callback listener ---------------------------------------------------------------
 * Stands in for the app behind redirect_uri: accepts any number of connections on a free
 * loopback port, answers every request with 200 and a small page, and records each request
 * line (before answering, so a browser that shows the page implies a recorded line). */

#define CB_MAX_CLIENTS 16
#define CB_MAX_LINES   64
#define CB_REQUEST_MAX 8192
#define CB_IDLE_MS     5000
#define CB_PAGE                                                                                    \
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>callback reached</title>"         \
    "</head><body><h1>callback reached</h1></body></html>\n"

static struct {
    int fd;      /* listening socket */
    int wake[2]; /* a byte on wake[1] stops the thread */
    pthread_t thread;
    int started;
    char url[128]; /* http://127.0.0.1:PORT/oauth/callback */
    pthread_mutex_t lock;
    char *lines[CB_MAX_LINES];
    size_t nlines;
} cb = {.fd = -1, .wake = {-1, -1}, .lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct {
    int fd;
    size_t len;
    long deadline;
    char buf[CB_REQUEST_MAX];
} cb_client_t;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void cb_record(const char *req, size_t len)
{
    size_t n = 0;
    while (n < len && req[n] != '\r' && req[n] != '\n')
        n++;
    char *line = strndup(req, n);
    pthread_mutex_lock(&cb.lock);
    if (line && cb.nlines < CB_MAX_LINES)
        cb.lines[cb.nlines++] = line;
    else
        free(line);
    pthread_mutex_unlock(&cb.lock);
}

static void cb_answer(int fd)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                     strlen(CB_PAGE));
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) == n)
        send(fd, CB_PAGE, strlen(CB_PAGE), MSG_NOSIGNAL);
}

static void *cb_main(void *arg)
{
    (void)arg;
    cb_client_t *cl = calloc(CB_MAX_CLIENTS, sizeof *cl);
    if (!cl)
        return NULL;
    for (int i = 0; i < CB_MAX_CLIENTS; i++)
        cl[i].fd = -1;
    for (;;) {
        struct pollfd pfd[2 + CB_MAX_CLIENTS];
        int map[2 + CB_MAX_CLIENTS];
        nfds_t n = 0;
        pfd[n++] = (struct pollfd){.fd = cb.wake[0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = cb.fd, .events = POLLIN};
        for (int i = 0; i < CB_MAX_CLIENTS; i++) {
            if (cl[i].fd >= 0) {
                map[n] = i;
                pfd[n++] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
            }
        }
        int r = poll(pfd, n, 100);
        if (r < 0 && errno != EINTR)
            break;
        if (pfd[0].revents)
            break;
        if (pfd[1].revents & POLLIN) {
            int fd = accept4(cb.fd, NULL, NULL, SOCK_CLOEXEC);
            int slot = -1;
            for (int i = 0; i < CB_MAX_CLIENTS && fd >= 0 && slot < 0; i++)
                if (cl[i].fd < 0)
                    slot = i;
            if (slot >= 0) {
                cl[slot].fd = fd;
                cl[slot].len = 0;
                cl[slot].deadline = now_ms() + CB_IDLE_MS;
            } else if (fd >= 0) {
                close(fd);
            }
        }
        for (nfds_t k = 2; k < n; k++) {
            cb_client_t *c = &cl[map[k]];
            int done = 0;
            if (pfd[k].revents) {
                ssize_t got = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
                if (got <= 0) {
                    done = 1;
                } else {
                    c->len += (size_t)got;
                    c->buf[c->len] = '\0';
                    if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n")) {
                        cb_record(c->buf, c->len);
                        cb_answer(c->fd);
                        done = 1;
                    } else if (c->len == sizeof c->buf - 1) {
                        done = 1; /* headers too large: drop it */
                    }
                }
            }
            if (done || now_ms() > c->deadline) {
                close(c->fd);
                c->fd = -1;
            }
        }
    }
    for (int i = 0; i < CB_MAX_CLIENTS; i++)
        if (cl[i].fd >= 0)
            close(cl[i].fd);
    free(cl);
    return NULL;
}

static int cb_start(void)
{
    cb.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (cb.fd < 0 || bind(cb.fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(cb.fd, 16) < 0 ||
        getsockname(cb.fd, (struct sockaddr *)&a, &len) < 0 || pipe2(cb.wake, O_CLOEXEC) < 0) {
        fprintf(stderr, "callback listener: %s\n", strerror(errno));
        return -1;
    }
    snprintf(cb.url, sizeof cb.url, "http://127.0.0.1:%d" CALLBACK_PATH, ntohs(a.sin_port));
    if (pthread_create(&cb.thread, NULL, cb_main, NULL) != 0) {
        fprintf(stderr, "callback listener: pthread_create failed\n");
        return -1;
    }
    cb.started = 1;
    return 0;
}

static void cb_clear(void)
{
    pthread_mutex_lock(&cb.lock);
    while (cb.nlines > 0)
        free(cb.lines[--cb.nlines]);
    pthread_mutex_unlock(&cb.lock);
}

static void cb_stop(void)
{
    if (cb.started) {
        ssize_t w = write(cb.wake[1], "x", 1);
        (void)w;
        pthread_join(cb.thread, NULL);
        cb.started = 0;
    }
    for (int i = 0; i < 2; i++) {
        if (cb.wake[i] >= 0)
            close(cb.wake[i]);
        cb.wake[i] = -1;
    }
    if (cb.fd >= 0)
        close(cb.fd);
    cb.fd = -1;
    cb_clear();
}

/* The request lines seen so far, one per line (heap, kept), for failure messages. */
static const char *cb_seen(void)
{
    size_t cap = 1;
    pthread_mutex_lock(&cb.lock);
    for (size_t i = 0; i < cb.nlines; i++)
        cap += strlen(cb.lines[i]) + 3;
    char *all = keep_str(calloc(1, cap));
    for (size_t i = 0; all && i < cb.nlines; i++) {
        strcat(all, "  ");
        strcat(all, cb.lines[i]);
        strcat(all, "\n");
    }
    pthread_mutex_unlock(&cb.lock);
    return all && *all ? all : "  (none)\n";
}

/* The target of the first request line "GET /oauth/callback?..." (kept), or NULL. */
static char *cb_callback_target(void)
{
    static const char want[] = "GET " CALLBACK_PATH "?";
    char *target = NULL;
    pthread_mutex_lock(&cb.lock);
    for (size_t i = 0; i < cb.nlines && !target; i++) {
        if (strncmp(cb.lines[i], want, sizeof want - 1) == 0) {
            const char *start = cb.lines[i] + 4;
            const char *end = strchr(start, ' ');
            target = strndup(start, end ? (size_t)(end - start) : strlen(start));
        }
    }
    pthread_mutex_unlock(&cb.lock);
    return keep_str(target);
}

/* ---- the org: demo.cfg with our callback ---------------------------------------------- */

/* A relative path setting made absolute against dir (sfsim resolves it against the config's
 * folder, and the copy lives elsewhere). */
static int absolutize(config_setting_t *group, const char *name, const char *dir)
{
    const char *value = NULL;
    if (!group || !config_setting_lookup_string(group, name, &value) || !*value || value[0] == '/')
        return 0;
    char *abs = th_fmt("%s/%s", dir, value);
    config_setting_t *s = config_setting_get_member(group, name);
    int rc = abs && s && config_setting_set_string(s, abs) ? 0 : -1;
    free(abs);
    return rc;
}

static int point_callbacks_here(config_setting_t *app)
{
    const char *client_id = NULL;
    if (!config_setting_lookup_string(app, "client_id", &client_id) ||
        (strcmp(client_id, SIGNIN) != 0 && strcmp(client_id, API) != 0))
        return 0;
    if (config_setting_get_member(app, "callbacks") && !config_setting_remove(app, "callbacks"))
        return -1;
    config_setting_t *list = config_setting_add(app, "callbacks", CONFIG_TYPE_ARRAY);
    return list && config_setting_set_string_elem(list, -1, cb.url) ? 0 : -1;
}

/* Writes the copy of $SFSIM_DEMO_CFG into TMPDIR; its path (heap) or NULL. */
static char *write_org_config(void)
{
    const char *src = getenv("SFSIM_DEMO_CFG");
    if (!src || !*src) {
        fprintf(stderr, "SFSIM_DEMO_CFG is not set (meson's test_env sets it)\n");
        return NULL;
    }
    char *src_copy = strdup(src);
    const char *dir = src_copy ? dirname(src_copy) : NULL;
    const char *tmp = getenv("TMPDIR");
    char *path = th_fmt("%s/sg-browser-org-XXXXXX.cfg", tmp && *tmp ? tmp : "/tmp");
    config_t cfg;
    config_init(&cfg);
    int fd = -1;
    FILE *f = NULL;
    if (!dir || !path)
        goto fail;
    if (!config_read_file(&cfg, src)) {
        fprintf(stderr, "%s:%d: %s\n", src, config_error_line(&cfg), config_error_text(&cfg));
        goto fail;
    }
    config_setting_t *apps = config_lookup(&cfg, "apps");
    int napps = apps ? config_setting_length(apps) : 0;
    for (int i = 0; i < napps; i++) {
        config_setting_t *app = config_setting_get_elem(apps, (unsigned)i);
        if (point_callbacks_here(app) || absolutize(app, "jwt_certificate", dir))
            goto fail;
    }
    if (absolutize(config_lookup(&cfg, "settings"), "key_file", dir))
        goto fail;
    fd = mkstemps(path, 4);
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "cannot create %s: %s\n", path, strerror(errno));
        goto fail;
    }
    fd = -1;
    config_write(&cfg, f);
    if (ferror(f) | fclose(f)) {
        f = NULL;
        fprintf(stderr, "cannot write %s\n", path);
        unlink(path);
        goto fail;
    }
    config_destroy(&cfg);
    free(src_copy);
    return path;
fail:
    if (f) {
        fclose(f);
        unlink(path);
    } else if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    fprintf(stderr, "could not write a copy of %s with the callback %s\n", src, cb.url);
    config_destroy(&cfg);
    free(src_copy);
    free(path);
    return NULL;
}

/* ---- browser steps ---------------------------------------------------------------------- */

static void snapshot(const char *name)
{
    CHECK(wd_snapshot(drv, name) == 0, "could not save the screenshot %s", name);
}

/* Opens the authorize link for client_id in the browser, with our callback. */
static void open_authorize(const char *client_id, const char *scope, const char *state)
{
    th_authz_t a = {.client_id = client_id, .redirect_uri = cb.url, .scope = scope, .state = state};
    char *url = keep_str(th_authorize_url(sim.url, &a));
    CHECK(url != NULL, "could not build the authorize URL");
    CHECK(wd_navigate(drv, url) == 0, "expected the browser to load %s", url);
}

/* The element matching css (kept), failing the test when the page has none. */
static char *element(const char *css, const char *page)
{
    char *el = keep_str(wd_find(drv, css));
    CHECK(el != NULL, "expected %s to have an element \"%s\"", page, css);
    return el;
}

/* Types into sfsim's login form (#username, #password) and presses "Log In" (#Login). */
static void log_in(const char *shot, const char *username, const char *password)
{
    char *title = keep_str(wd_title(drv));
    CHECK(title && strcmp(title, "Login | Salesforce") == 0,
          "expected the login page (title \"Login | Salesforce\"), got title \"%s\"",
          title ? title : "?");
    char *user = element("#username", "the login page");
    char *pw = element("#password", "the login page");
    char *button = element("#Login", "the login page");
    char *label = keep_str(wd_value(drv, button));
    CHECK(label && strcmp(label, "Log In") == 0,
          "expected the login button to read \"Log In\", "
          "got \"%s\"",
          label ? label : "?");
    CHECK(wd_send_keys(drv, user, username) == 0, "could not type the username");
    CHECK(wd_send_keys(drv, pw, password) == 0, "could not type the password");
    snapshot(shot);
    CHECK(wd_click(drv, button) == 0, "could not press \"Log In\"");
}

/* On the approval page, presses the button with id (oaapprove or oadeny) reading label. */
static void decide(const char *shot, const char *id, const char *label, const char *app_name,
                   const char *username)
{
    char css[64];
    snprintf(css, sizeof css, "#%s", id);
    char *button = element(css, "the approval page");
    char *value = keep_str(wd_value(drv, button));
    CHECK(value && strcmp(value, label) == 0, "expected #%s to read \"%s\", got \"%s\"", id, label,
          value ? value : "?");
    char *title = keep_str(wd_title(drv));
    CHECK(title && strcmp(title, "Allow Access? | Salesforce") == 0,
          "expected the approval page's title \"Allow Access? | Salesforce\", got \"%s\"",
          title ? title : "?");
    char *html = keep_str(wd_page_source(drv));
    CHECK(html && strstr(html, app_name) && strstr(html, username),
          "expected the approval page to name the app \"%s\" and the user %s", app_name, username);
    snapshot(shot);
    CHECK(wd_click(drv, button) == 0, "could not press \"%s\"", label);
}

/* Waits for the browser to land on our callback and show its page; returns the URL (kept). */
static char *landing(const char *shot)
{
    char *prefix = keep_str(th_fmt("%s?", cb.url));
    char *url = keep_str(wd_wait_url(drv, prefix, LANDING_MS));
    CHECK(url != NULL, "expected the browser to land on %s... within %d ms", prefix, LANDING_MS);
    /* The URL changes when the navigation commits; the page may still be loading. */
    char *html = NULL;
    for (int waited = 0; waited <= LANDING_MS; waited += 50) {
        free(html);
        html = wd_page_source(drv);
        if (html && strstr(html, "callback reached"))
            break;
        usleep(50 * 1000);
    }
    keep_str(html);
    CHECK(html && strstr(html, "callback reached"),
          "expected the callback page (\"callback reached\") at %s, got %.300s", url,
          html ? html : "?");
    snapshot(shot);
    return url;
}

/* A URL parameter (kept) that must be there. */
static char *param(const char *url, const char *name)
{
    char *v = keep_str(th_url_param(url, name));
    CHECK(v != NULL, "expected a %s parameter in %s", name, url);
    return v;
}

static void expect_no_param(const char *url, const char *name)
{
    char *v = keep_str(th_url_param(url, name));
    CHECK(v == NULL, "expected no %s parameter in %s, got %s=%s", name, url, name, v);
}

/* The listener must have seen the browser's GET of the callback, with this parameter. */
static void expect_listener_saw(const char *name, const char *value)
{
    char *target = cb_callback_target();
    CHECK(target != NULL, "expected the callback listener to see GET %s?..., it saw:\n%s",
          CALLBACK_PATH, cb_seen());
    char *got = keep_str(th_url_param(target, name));
    CHECK(got && strcmp(got, value) == 0,
          "expected the listener's request %s to carry %s=%s, got %s", target, name, value,
          got ? got : "(none)");
}

static cJSON *exchange(const char *client_id, const char *secret, const char *code)
{
    cJSON *json = NULL;
    long status = th_exchange_code(sim.url, client_id, secret, code, cb.url, NULL, &json);
    keep_json(json);
    char *text = json ? keep_str(cJSON_PrintUnformatted(json)) : NULL;
    CHECK(status == 200, "expected the code exchange for %s to answer 200, got HTTP %ld %s",
          client_id, status, text ? text : "");
    return json;
}

static const char *json_str(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_browser_signin_lands_on_callback_with_code(void **state)
{
    (void)state;
    open_authorize(SIGNIN, "openid profile email", "browser-1");
    snapshot("signin-1-login-page");
    log_in("signin-2-login-filled", TH_ALICE, "alice");
    decide("signin-3-approval", "oaapprove", "Allow", "scopegate Sign-in", TH_ALICE);
    char *url = landing("signin-4-callback");

    char *code = param(url, "code");
    CHECK(strncmp(code, "aPrx", 4) == 0, "expected a code starting aPrx, got %s", code);
    char *st = param(url, "state");
    CHECK(strcmp(st, "browser-1") == 0, "expected state=browser-1, got state=%s", st);
    expect_no_param(url, "error");
    expect_listener_saw("code", code);
    expect_listener_saw("state", "browser-1");

    cJSON *tok = exchange(SIGNIN, SIGNIN_SECRET, code);
    const char *id_token = json_str(tok, "id_token");
    CHECK(id_token && *id_token, "expected an id_token in the token response");
    CHECK(json_str(tok, "access_token") != NULL, "expected an access_token in the response");
    CHECK(!cJSON_HasObjectItem(tok, "refresh_token"),
          "expected no refresh_token for a sign-in with \"openid profile email\", got %s",
          json_str(tok, "refresh_token") ? json_str(tok, "refresh_token") : "one");
    CHECK(strcmp(json_str(tok, "scope") ? json_str(tok, "scope") : "", "openid profile email") == 0,
          "expected scope \"openid profile email\", got \"%s\"",
          json_str(tok, "scope") ? json_str(tok, "scope") : "(none)");
}

static void test_browser_admin_grants_offline_access(void **state)
{
    (void)state;
    open_authorize(API, "api refresh_token offline_access", "browser-2");
    log_in("offline-1-login-filled", TH_ADMIN, "admin");
    decide("offline-2-approval", "oaapprove", "Allow", "scopegate API", TH_ADMIN);
    char *url = landing("offline-3-callback");

    char *code = param(url, "code");
    CHECK(strncmp(code, "aPrx", 4) == 0, "expected a code starting aPrx, got %s", code);
    char *st = param(url, "state");
    CHECK(strcmp(st, "browser-2") == 0, "expected state=browser-2, got state=%s", st);
    expect_listener_saw("code", code);

    cJSON *tok = exchange(API, API_SECRET, code);
    const char *rt = json_str(tok, "refresh_token");
    CHECK(rt && strncmp(rt, "5Aep861", 7) == 0, "expected a refresh_token 5Aep861..., got %s",
          rt ? rt : "(none)");

    cJSON *grants = keep_json(th_sim_get(sim.url, "/_sim/grants"));
    CHECK(cJSON_IsArray(grants), "expected GET /_sim/grants to answer a JSON array");
    char *text = keep_str(cJSON_PrintUnformatted(grants));
    CHECK(cJSON_GetArraySize(grants) == 1, "expected exactly one grant, got %s", text);
    cJSON *g = cJSON_GetArrayItem(grants, 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "live")) &&
              strcmp(json_str(g, "username") ? json_str(g, "username") : "", TH_ADMIN) == 0 &&
              strcmp(json_str(g, "client_id") ? json_str(g, "client_id") : "", API) == 0,
          "expected one live grant of %s to %s, got %s", API, TH_ADMIN, text);
}

static void test_browser_wrong_password_shows_error(void **state)
{
    (void)state;
    open_authorize(SIGNIN, "openid profile email", "browser-3");
    log_in("wrong-password-1-login-filled", TH_ALICE, "not-alices-password");
    char *error = element("#error", "the login page after a wrong password");
    char *text = keep_str(wd_text(drv, error));
    CHECK(text && strcmp(text, BAD_LOGIN) == 0, "expected the error \"%s\", got \"%s\"", BAD_LOGIN,
          text ? text : "?");
    snapshot("wrong-password-2-error");

    char *url = keep_str(wd_current_url(drv));
    char *authorize = keep_str(th_fmt("%s/services/oauth2/authorize", sim.url));
    CHECK(url && strncmp(url, authorize, strlen(authorize)) == 0,
          "expected the browser to stay on %s, got %s", authorize, url ? url : "?");
    CHECK(wd_count(drv, "#username") == 1 && wd_count(drv, "#password") == 1,
          "expected the login form to be shown again");
    CHECK(wd_count(drv, "#oaapprove") == 0, "expected no approval page after a wrong password");
    char *target = cb_callback_target();
    CHECK(target == NULL, "expected no request to the callback, the listener saw:\n%s", cb_seen());
}

static void test_browser_deny_redirects_access_denied(void **state)
{
    (void)state;
    open_authorize(SIGNIN, "openid profile email", "browser-4");
    log_in("deny-1-login-filled", TH_ALICE, "alice");
    decide("deny-2-approval", "oadeny", "Deny", "scopegate Sign-in", TH_ALICE);
    char *url = landing("deny-3-callback");

    char *error = param(url, "error");
    CHECK(strcmp(error, "access_denied") == 0, "expected error=access_denied, got error=%s", error);
    char *desc = param(url, "error_description");
    CHECK(strcmp(desc, "end-user denied authorization") == 0,
          "expected error_description \"end-user denied authorization\", got \"%s\"", desc);
    char *st = param(url, "state");
    CHECK(strcmp(st, "browser-4") == 0, "expected state=browser-4, got state=%s", st);
    expect_no_param(url, "code");
    expect_listener_saw("error", "access_denied");
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int group_teardown(void **state);

static int group_setup(void **state)
{
    if (cb_start())
        goto fail;
    config_path = write_org_config();
    if (!config_path)
        goto fail;
    if (th_sfsim_start(&sim, config_path))
        goto fail;
    if (wd_start(&drv))
        goto fail;
    return 0;
fail:
    fprintf(stderr, "browser tests: setup failed (see above); no browser test ran\n");
    group_teardown(state);
    return -1;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (wd_stop(drv)) {
        fprintf(stderr, "chromedriver or the browser did not stop cleanly\n");
        rc = -1;
    }
    drv = NULL;
    cb_stop();
    if (sim.pid > 0) {
        int status = th_proc_stop(&sim);
        if (status != 0) {
            fprintf(stderr, "sfsim: expected exit status 0 after SIGTERM, got %d\n", status);
            rc = -1;
        }
    }
    if (config_path) {
        unlink(config_path);
        free(config_path);
        config_path = NULL;
    }
    return rc;
}

static int setup(void **state)
{
    (void)state;
    cb_clear();
    if (th_sim_post(sim.url, "/_sim/reset")) {
        fprintf(stderr, "POST /_sim/reset: expected 200 {\"reset\":true}\n");
        return -1;
    }
    return wd_session_new(drv);
}

static int teardown(void **state)
{
    (void)state;
    th_free_kept();
    return wd_session_delete(drv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_browser_signin_lands_on_callback_with_code, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_browser_admin_grants_offline_access, setup, teardown),
        cmocka_unit_test_setup_teardown(test_browser_wrong_password_shows_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_browser_deny_redirects_access_denied, setup, teardown),
    };
    return cmocka_run_group_tests_name("browser login", tests, group_setup, group_teardown);
}
