/*
 * Interoperability: the gateway's sign-in against a standards-compliant
 * OpenID Provider that is not sfsim: panva's certified oidc-provider (tests/interop, version
 * pinned in package.json), run by node on loopback. Found by discovery only; ID tokens signed
 * with keys from its JWKS (which holds an EC key beside the RSA one); code flow with PKCE S256
 * (the provider requires it); client_secret_basic (the only method the client is registered
 * with; a second provider that offers only client_secret_post checks the fallback); the role
 * from the standard-shaped `groups` claim, which this provider releases through userinfo only.
 *
 * The browser is libcurl with a cookie jar, redirects followed by hand: /login -> the
 * provider's login form (fields `login`, `password`) -> its consent page ("Continue") -> the
 * gateway's callback -> /auth. provider.mjs logs each request it answered on stderr as
 * "interop-log {JSON}" (path, status, how the client authenticated, PKCE parameters), which is
 * how the tests see what the gateway really sent.
 *
 * Needs node on PATH (or $NODE) and `npm ci` run in tests/interop (scripts/test does it).
 * INTEROP_VERBOSE=1 prints both processes' stderr after each test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define CLIENT_ID "interop-signin"
/* Characters that client_secret_basic must form-encode before base64 (RFC 6749 2.3.1). */
#define CLIENT_SECRET  "interop secret+/:%=~!"
#define FLOW_MAX       16
#define START_MS       20000
#define SESSION_COOKIE "scopegate" /* the cookie name of an http:// public_url */

/* ---- processes ------------------------------------------------------------------------ */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads stdout's first line within START_MS. */
static int first_line(int fd, char *line, size_t cap)
{
    size_t len = 0;
    long deadline = now_ms() + START_MS;
    while (now_ms() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)(deadline - now_ms()));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (c == '\n') {
            line[len] = '\0';
            return 0;
        }
        if (len + 1 >= cap)
            return -1;
        line[len++] = c;
    }
    return -1;
}

/*
 * Starts argv (argv[0] looked up on PATH) with stdout on a pipe and stderr in a temp file;
 * waits for a first line "<prefix> http://...". p->url gets that URL (up to a space). *outfd
 * keeps the pipe's read end open (a later write never meets SIGPIPE); close it after stop.
 */
static int spawn(th_proc_t *p, int *outfd, char *const argv[], const char *const *env,
                 const char *prefix)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    *outfd = -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(p->log_path, sizeof p->log_path, "%s/interop-log-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int logfd = mkstemp(p->log_path);
    int pipefd[2];
    if (logfd < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
        fprintf(stderr, "interop: cannot set up %s: %s\n", argv[0], strerror(errno));
        if (logfd >= 0)
            close(logfd);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("interop: fork");
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(pipefd[1], STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0)
            _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execvp(argv[0], argv);
        dprintf(STDERR_FILENO, "interop: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    close(logfd);
    p->pid = pid;
    char line[512];
    size_t pl = strlen(prefix);
    if (first_line(pipefd[0], line, sizeof line) || strncmp(line, prefix, pl) != 0 ||
        strncmp(line + pl, " http://", 8) != 0) {
        char *log = th_proc_log(p);
        fprintf(stderr,
                "interop: %s did not start (expected \"%s http://...\" on stdout); "
                "its stderr:\n%s\n",
                argv[0], prefix, log ? log : "");
        free(log);
        close(pipefd[0]);
        th_proc_stop(p);
        return -1;
    }
    const char *u = line + pl + 1;
    size_t ul = strcspn(u, " \r");
    if (ul >= sizeof p->url)
        ul = sizeof p->url - 1;
    memcpy(p->url, u, ul);
    p->url[ul] = '\0';
    *outfd = pipefd[0];
    return 0;
}

/* A free loopback port: the gateway's public_url (and so the redirect URI registered at the
 * provider) must be known before either starts. */
static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}

static int write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    int ok = write(fd, text, n) == (ssize_t)n;
    close(fd);
    return ok ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* ---- one provider and one gateway -------------------------------------------------------- */

typedef struct {
    th_proc_t op, gw;
    int op_fd, gw_fd;
    char dir[256];
    char gw_url[128];
    int started;
    /* to start the provider again */
    char node[256], script[512], redirect[200], authenv[80], pathenv[120];
} ip_stack_t;

typedef struct {
    const char *gateway_secret; /* NULL: CLIENT_SECRET (what the provider knows) */
    const char *provider_auth;  /* NULL: client_secret_basic */
    const char *issuer_path;    /* NULL: none; "/realms/acme"; "/" (a trailing slash) */
} stack_opts_t;

static const char policy_text[] =
    "version = 1;\n"
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\", \"groups\"]; };\n"
    "roles = {\n"
    "  user  = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "  admin = { session = { idle = \"15m\"; max = \"4h\"; }; };\n"
    "};\n"
    "assign = (\n"
    "  { role = \"admin\"; claim = \"groups\"; contains = [\"gateway-admins\"]; },\n"
    "  { role = \"user\"; }\n"
    ");\n";

/* Starts provider.mjs on port (0: any) for the stack's gateway. */
static int provider_start(ip_stack_t *s, int port)
{
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    const char *env[] = {s->authenv, s->pathenv, NULL};
    char *argv[] = {s->node, s->script, port_arg, s->redirect, CLIENT_SECRET, NULL};
    if (spawn(&s->op, &s->op_fd, argv, env, "oidc-provider listening on")) {
        fprintf(stderr,
                "interop: the OpenID Provider (%s %s) did not start; is node (>= 18) "
                "on PATH and `npm ci` done in tests/interop?\n",
                s->node, s->script);
        return -1;
    }
    return 0;
}

static int stack_start(ip_stack_t *s, const stack_opts_t *o)
{
    memset(s, 0, sizeof *s);
    s->op.pid = s->gw.pid = -1;
    s->op_fd = s->gw_fd = -1;
    const char *root = getenv("SG_SOURCE_ROOT"), *gw_exe = getenv("SCOPEGATE");
    const char *node = getenv("NODE");
    if (!node || !*node)
        node = "node";
    if (!root || !gw_exe) {
        fprintf(stderr, "interop: SG_SOURCE_ROOT and SCOPEGATE must be set (meson test does)\n");
        return -1;
    }
    char script[512], mod[512];
    snprintf(script, sizeof script, "%s/tests/interop/provider.mjs", root);
    snprintf(mod, sizeof mod, "%s/tests/interop/node_modules/oidc-provider/package.json", root);
    if (access(mod, R_OK) != 0) {
        fprintf(stderr,
                "interop: %s is missing: run npm ci in tests/interop "
                "(cd tests/interop && npm ci)\n",
                mod);
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof s->dir, "%s/sg-interop-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s->dir)) {
        perror("interop: mkdtemp");
        s->dir[0] = '\0';
        return -1;
    }
    s->started = 1;
    int port = free_port();
    if (port <= 0)
        return -1;
    snprintf(s->gw_url, sizeof s->gw_url, "http://127.0.0.1:%d", port);

    snprintf(s->node, sizeof s->node, "%s", node);
    snprintf(s->script, sizeof s->script, "%s", script);
    snprintf(s->redirect, sizeof s->redirect, "%s/oauth/callback", s->gw_url);
    snprintf(s->authenv, sizeof s->authenv, "INTEROP_CLIENT_AUTH=%s",
             o && o->provider_auth ? o->provider_auth : "client_secret_basic");
    snprintf(s->pathenv, sizeof s->pathenv, "INTEROP_ISSUER_PATH=%s",
             o && o->issuer_path ? o->issuer_path : "");
    if (provider_start(s, 0))
        return -1;

    char *cfg = th_fmt("listen = \"127.0.0.1:%d\";\n"
                       "public_url = \"%s\";\n"
                       "internal_listen = \"127.0.0.1:0\";\n"
                       "policy_file = \"policy.cfg\";\n"
                       "state_dir = \"var\";\n"
                       "allow_http_issuer = true;\n"
                       "provider_timeout = \"5s\";\n"
                       "log_level = \"debug\";\n"
                       "apps = {\n"
                       "  signin = { issuer = \"%s\"; client_id = \"%s\";\n"
                       "             client_secret_file = \"signin.secret\"; };\n"
                       "};\n",
                       port, s->gw_url, s->op.url, CLIENT_ID);
    if (!cfg || write_file(s->dir, "gateway.cfg", cfg, 0600) ||
        write_file(s->dir, "policy.cfg", policy_text, 0600) ||
        write_file(s->dir, "signin.secret",
                   o && o->gateway_secret ? o->gateway_secret : CLIENT_SECRET, 0600)) {
        free(cfg);
        fprintf(stderr, "interop: cannot write the gateway's files in %s\n", s->dir);
        return -1;
    }
    free(cfg);
    char cfg_path[400];
    snprintf(cfg_path, sizeof cfg_path, "%s/gateway.cfg", s->dir);
    char *gw_argv[] = {(char *)gw_exe, "serve", "--config", cfg_path, NULL};
    if (spawn(&s->gw, &s->gw_fd, gw_argv, NULL, "scopegate listening on"))
        return -1;
    if (strcmp(s->gw.url, s->gw_url) != 0) {
        fprintf(stderr, "interop: the gateway listens on %s, not %s\n", s->gw.url, s->gw_url);
        return -1;
    }
    return 0;
}

static void dump_logs(const ip_stack_t *s)
{
    char *a = th_proc_log(&s->op), *b = th_proc_log(&s->gw);
    fprintf(stderr, "---- oidc-provider stderr ----\n%s\n---- scopegate stderr ----\n%s\n",
            a ? a : "", b ? b : "");
    free(a);
    free(b);
}

/* Stops the gateway, then the provider: 0 when both exited 0 on SIGTERM. */
static int stack_stop(ip_stack_t *s)
{
    if (!s->started)
        return 0;
    if (getenv("INTEROP_VERBOSE"))
        dump_logs(s);
    int bad = 0;
    if (s->gw.pid > 0 || s->op.pid > 0) {
        int gw = s->gw.pid > 0 ? 0 : -2, op = s->op.pid > 0 ? 0 : -2;
        if (s->gw.pid > 0) {
            char *log = th_proc_log(&s->gw);
            gw = th_proc_stop(&s->gw);
            if (gw != 0)
                fprintf(stderr, "interop: the gateway did not exit cleanly (%d); its stderr:\n%s\n",
                        gw, log ? log : "");
            free(log);
        }
        if (s->op.pid > 0) {
            char *log = th_proc_log(&s->op);
            op = th_proc_stop(&s->op);
            if (op != 0)
                fprintf(stderr,
                        "interop: the provider did not exit cleanly (%d); its stderr:\n%s\n", op,
                        log ? log : "");
            free(log);
        }
        bad = gw != 0 || op != 0;
    }
    th_proc_stop(&s->gw); /* removes the log files of processes that never started */
    th_proc_stop(&s->op);
    if (s->op_fd >= 0)
        close(s->op_fd);
    if (s->gw_fd >= 0)
        close(s->gw_fd);
    s->op_fd = s->gw_fd = -1;
    if (s->dir[0])
        nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    s->started = 0;
    return bad ? -1 : 0;
}

static int setup(void **state)
{
    ip_stack_t *s = calloc(1, sizeof *s);
    *state = s;
    return s ? 0 : -1;
}

static int teardown(void **state)
{
    ip_stack_t *s = *state;
    if (s && s->started) { /* the test stopped half-way: show why */
        dump_logs(s);
        stack_stop(s);
    }
    free(s);
    return 0;
}

/* ---- the provider's request log -------------------------------------------------------- */

/* Every "interop-log {JSON}" line the provider wrote so far, as a JSON array. */
static cJSON *provider_log(const ip_stack_t *s)
{
    cJSON *all = cJSON_CreateArray();
    char *log = th_proc_log(&s->op);
    for (char *line = log, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        else
            next = line + strlen(line);
        static const char tag[] = "interop-log ";
        if (strncmp(line, tag, sizeof tag - 1) == 0) {
            cJSON *j = cJSON_Parse(line + sizeof tag - 1);
            if (j)
                cJSON_AddItemToArray(all, j);
        }
    }
    free(log);
    return all;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jint(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

static int jtrue(const cJSON *o, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* How many logged requests had this method and path (and status, when status > 0). */
static int count_requests(const cJSON *log, const char *method, const char *path, int status)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        const char *m = jstr(e, "method"), *p = jstr(e, "path");
        if (m && p && strcmp(m, method) == 0 && strcmp(p, path) == 0 &&
            (status <= 0 || jint(e, "status") == status))
            n++;
    }
    return n;
}

/* The last logged request with this method and path, or NULL. */
static const cJSON *last_request(const cJSON *log, const char *method, const char *path)
{
    const cJSON *e, *found = NULL;
    cJSON_ArrayForEach(e, log)
    {
        const char *m = jstr(e, "method"), *p = jstr(e, "path");
        if (m && p && strcmp(m, method) == 0 && strcmp(p, path) == 0)
            found = e;
    }
    return found;
}

/* ---- the browser ------------------------------------------------------------------------ */

/* ref resolved against base (absolute URL, or an absolute path on base's origin). */
static char *resolve(const char *base, const char *ref)
{
    if (strncmp(ref, "http://", 7) == 0 || strncmp(ref, "https://", 8) == 0)
        return strdup(ref);
    const char *host = strstr(base, "://");
    host = host ? host + 3 : base;
    size_t origin = (size_t)(host - base) + strcspn(host, "/?#");
    if (ref[0] == '/')
        return th_fmt("%.*s%s", (int)origin, base, ref);
    return NULL; /* relative paths: the provider does not send them */
}

/* The value of attr in the first tag at or after from that has it (&amp; decoded); heap. */
static char *attr_after(const char *from, const char *attr)
{
    char pat[64];
    snprintf(pat, sizeof pat, "%s=\"", attr);
    const char *a = from ? strstr(from, pat) : NULL;
    if (!a)
        return NULL;
    a += strlen(pat);
    const char *e = strchr(a, '"');
    if (!e)
        return NULL;
    char *v = strndup(a, (size_t)(e - a));
    for (char *p = v; p && (p = strstr(p, "&amp;")) != NULL; p++)
        memmove(p + 1, p + 5, strlen(p + 5) + 1);
    return v;
}

typedef enum { CONSENT_ACCEPT, CONSENT_CANCEL } consent_t;

typedef struct {
    char *authorize_url; /* where /login sent the browser */
    char *callback_url;  /* where the provider sent it back */
    int login_forms;     /* login pages met */
    int consent_pages;   /* consent pages met */
    th_resp_t callback;  /* the gateway's answer to the callback */
} flow_t;

static void flow_free(flow_t *f)
{
    free(f->authorize_url);
    free(f->callback_url);
    th_resp_free(&f->callback);
    memset(f, 0, sizeof *f);
}

/*
 * GET /login?rd=..., then through the provider's pages as `login` (any password works with
 * its development login form) to the gateway's callback, which is requested too: f->callback
 * is the gateway's answer. 0 when the flow reached the callback.
 */
static int signin(const ip_stack_t *s, th_client_t *c, const char *login, consent_t consent,
                  const char *rd, flow_t *f)
{
    memset(f, 0, sizeof *f);
    char *rde = th_enc(rd ? rd : "/");
    char *url = th_fmt("%s/login?rd=%s", s->gw_url, rde);
    free(rde);
    th_resp_t r = {0};
    int rc = -1;
    if (th_get(c, url, &r) || (r.status != 302 && r.status != 303) || !r.location) {
        fprintf(stderr, "interop: GET /login answered %ld (Location %s): %.500s\n", r.status,
                r.location ? r.location : "none", r.body ? r.body : "");
        goto done;
    }
    f->authorize_url = resolve(url, r.location);
    free(url);
    url = f->authorize_url ? strdup(f->authorize_url) : NULL;
    th_resp_free(&r);
    char *cb_prefix = th_fmt("%s/oauth/callback", s->gw_url);
    for (int step = 0; url && step < FLOW_MAX; step++) {
        if (strncmp(url, cb_prefix, strlen(cb_prefix)) == 0) {
            f->callback_url = url;
            url = NULL;
            rc = th_get(c, f->callback_url, &f->callback);
            break;
        }
        if (th_get(c, url, &r)) {
            fprintf(stderr, "interop: GET %s failed\n", url);
            break;
        }
        char *next = NULL;
        if ((r.status == 302 || r.status == 303) && r.location) {
            next = resolve(url, r.location);
        } else if (r.status == 200 && strstr(r.body, "name=\"login\"")) {
            f->login_forms++;
            char *action = attr_after(strstr(r.body, "<form"), "action");
            char *le = th_enc(login), *to = action ? resolve(url, action) : NULL;
            char *form = th_fmt("prompt=login&login=%s&password=any-password", le);
            th_resp_t p = {0};
            if (to && form && th_post_form(c, to, form, &p) == 0 &&
                (p.status == 302 || p.status == 303) && p.location)
                next = resolve(to, p.location);
            else
                fprintf(stderr, "interop: the login form post answered %ld: %.500s\n", p.status,
                        p.body ? p.body : "");
            th_resp_free(&p);
            free(action);
            free(le);
            free(to);
            free(form);
        } else if (r.status == 200 && strstr(r.body, "value=\"consent\"")) {
            f->consent_pages++;
            th_resp_t p = {0};
            char *to = NULL;
            if (consent == CONSENT_ACCEPT) {
                char *action = attr_after(strstr(r.body, "<form"), "action");
                to = action ? resolve(url, action) : NULL;
                free(action);
                if (to && th_post_form(c, to, "prompt=consent", &p) == 0 &&
                    (p.status == 302 || p.status == 303) && p.location)
                    next = resolve(to, p.location);
            } else {
                const char *cancel = strstr(r.body, "/abort\"");
                const char *href = cancel ? cancel : NULL;
                while (href && href > r.body && strncmp(href, "href=\"", 6) != 0)
                    href--;
                char *link = href ? attr_after(href, "href") : NULL;
                to = link ? resolve(url, link) : NULL;
                free(link);
                if (to && th_get(c, to, &p) == 0 && (p.status == 302 || p.status == 303) &&
                    p.location)
                    next = resolve(to, p.location);
            }
            if (!next)
                fprintf(stderr, "interop: the consent page's %s answered %ld: %.500s\n",
                        consent == CONSENT_ACCEPT ? "Continue" : "Cancel", p.status,
                        p.body ? p.body : "");
            th_resp_free(&p);
            free(to);
        } else {
            fprintf(stderr, "interop: unexpected answer %ld from %s:\n%.2000s\n", r.status, url,
                    r.body);
        }
        th_resp_free(&r);
        free(url);
        url = next;
    }
    free(cb_prefix);
    if (!f->callback_url && rc)
        fprintf(stderr, "interop: the sign-in never came back to the gateway\n");
done:
    th_resp_free(&r);
    free(url);
    return rc;
}

/* GET /auth with this browser: the status, and the X-Auth-Request-* headers into *out. */
static long auth_check(const ip_stack_t *s, th_client_t *c, th_resp_t *out)
{
    char *url = th_fmt("%s/auth", s->gw_url);
    long st = th_get(c, url, out) == 0 ? out->status : 0;
    free(url);
    return st;
}

static void assert_header(const th_resp_t *r, const char *name, const char *want)
{
    char *v = th_resp_header(r, name);
    if (!v || strcmp(v, want) != 0)
        fprintf(stderr, "interop: %s is \"%s\", expected \"%s\"\n", name, v ? v : "(none)", want);
    assert_non_null(v);
    assert_string_equal(v, want);
    free(v);
}

/* The value of the session cookie the answer sets (heap), or NULL (none, or one cleared). */
static char *session_set(const th_resp_t *r)
{
    static const char h[] = "set-cookie:";
    const size_t n = strlen(SESSION_COOKIE);
    for (const char *line = r->headers; line && *line;) {
        const char *eol = strchr(line, '\n');
        if (strncasecmp(line, h, sizeof h - 1) == 0) {
            const char *v = line + sizeof h - 1;
            while (*v == ' ')
                v++;
            if (strncmp(v, SESSION_COOKIE "=", n + 1) == 0) {
                size_t len = strcspn(v + n + 1, ";\r\n");
                if (len)
                    return strndup(v + n + 1, len);
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static int sets_session(const th_resp_t *r)
{
    char *v = session_set(r);
    int set = v != NULL;
    free(v);
    return set;
}

/* A full successful sign-in as login; checks the callback's answer and /auth. */
static void signin_as(ip_stack_t *s, th_client_t *c, const char *login, const char *role, flow_t *f)
{
    assert_int_equal(0, signin(s, c, login, CONSENT_ACCEPT, "/app/page?x=1", f));
    if (f->callback.status != 302 && f->callback.status != 303)
        fprintf(stderr, "interop: the callback answered %ld:\n%.2000s\n", f->callback.status,
                f->callback.body);
    assert_true(f->callback.status == 302 || f->callback.status == 303);
    assert_non_null(f->callback.location);
    assert_string_equal(f->callback.location, "/app/page?x=1");
    assert_true(sets_session(&f->callback));

    th_resp_t a = {0};
    assert_int_equal(200, auth_check(s, c, &a));
    assert_header(&a, "X-Auth-Request-User", login); /* the provider's sub */
    assert_header(&a, "X-Auth-Request-Role", role);
    char *email = th_fmt("%s@interop.example", login);
    assert_header(&a, "X-Auth-Request-Email", email);
    assert_header(&a, "X-Auth-Request-Preferred-Username", email);
    free(email);
    char *org = th_resp_header(&a, "X-Auth-Request-Org");
    assert_null(org); /* no Salesforce org here */
    th_resp_free(&a);
}

/* ---- tests ------------------------------------------------------------------------------ */

/* The admin: discovery, authorize with PKCE S256 + state + nonce, code exchange with
 * client_secret_basic and the verifier, ID token checked with a JWKS key, groups from
 * userinfo, the access token revoked, role admin. */
static void test_admin_signs_in(void **state)
{
    ip_stack_t *s = *state;
    assert_int_equal(0, stack_start(s, NULL));
    th_client_t *c = th_client_new();
    flow_t f;
    signin_as(s, c, "admin", "admin", &f);
    assert_int_equal(1, f.login_forms);
    assert_int_equal(1, f.consent_pages);

    /* What the browser was sent to: the discovered authorization endpoint, with PKCE. */
    char *authz_ep = th_fmt("%s/auth?", s->op.url);
    assert_true(strncmp(f.authorize_url, authz_ep, strlen(authz_ep)) == 0);
    free(authz_ep);
    char *p;
    assert_string_equal((p = th_url_param(f.authorize_url, "response_type")), "code");
    free(p);
    assert_string_equal((p = th_url_param(f.authorize_url, "client_id")), CLIENT_ID);
    free(p);
    assert_string_equal((p = th_url_param(f.authorize_url, "code_challenge_method")), "S256");
    free(p);
    p = th_url_param(f.authorize_url, "code_challenge");
    assert_non_null(p);
    assert_int_equal(43, strlen(p)); /* base64url of a SHA-256 */
    free(p);
    p = th_url_param(f.authorize_url, "scope");
    assert_non_null(p);
    assert_string_equal(p, "openid profile email groups");
    free(p);
    char *cb = th_fmt("%s/oauth/callback", s->gw_url);
    assert_string_equal((p = th_url_param(f.authorize_url, "redirect_uri")), cb);
    free(p);
    free(cb);
    p = th_url_param(f.authorize_url, "nonce");
    assert_non_null(p);
    free(p);
    /* The provider answered with RFC 9207's iss beside code and state; the gateway took it. */
    p = th_url_param(f.callback_url, "iss");
    assert_non_null(p);
    assert_string_equal(p, s->op.url);
    free(p);

    cJSON *log = provider_log(s);
    /* Discovery and the JWKS, fetched from the provider's own (discovered) URLs. */
    assert_true(count_requests(log, "GET", "/.well-known/openid-configuration", 200) >= 1);
    assert_true(count_requests(log, "GET", "/jwks", 200) >= 1);
    /* The authorization request as the provider parsed it. */
    const cJSON *az = last_request(log, "GET", "/auth");
    assert_non_null(az);
    assert_string_equal(jstr(az, "code_challenge_method"), "S256");
    assert_true(jtrue(az, "code_challenge") && jtrue(az, "nonce") && jtrue(az, "state"));
    /* One code exchange: client_secret_basic, with the PKCE verifier, accepted. */
    assert_int_equal(1, count_requests(log, "POST", "/token", 0));
    const cJSON *tok = last_request(log, "POST", "/token");
    assert_int_equal(200, jint(tok, "status"));
    assert_string_equal(jstr(tok, "client_auth"), "client_secret_basic");
    assert_string_equal(jstr(tok, "grant_type"), "authorization_code");
    assert_true(jtrue(tok, "code_verifier"));
    /* groups is not in this provider's ID token (conformIdTokenClaims): userinfo was asked. */
    const cJSON *me = last_request(log, "GET", "/me");
    assert_non_null(me);
    assert_int_equal(200, jint(me, "status"));
    assert_string_equal(jstr(me, "client_auth"), "bearer");
    /* The sign-in access token was revoked (the gateway keeps no provider token). */
    const cJSON *rv = last_request(log, "POST", "/token/revocation");
    assert_non_null(rv);
    assert_int_equal(200, jint(rv, "status"));
    assert_string_equal(jstr(rv, "client_auth"), "client_secret_basic");
    /* And the provider's own verdict on the grant. */
    int ok_grant = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        const char *ev = jstr(e, "event");
        assert_true(!ev || strstr(ev, "error") == NULL);
        if (ev && strcmp(ev, "grant.success") == 0) {
            assert_string_equal(jstr(e, "client_auth"), "client_secret_basic");
            assert_true(jtrue(e, "pkce"));
            ok_grant++;
        }
    }
    assert_int_equal(1, ok_grant);
    cJSON_Delete(log);

    /* The home page knows who this is. */
    th_resp_t h = {0};
    char *home = th_fmt("%s/", s->gw_url);
    assert_int_equal(0, th_get(c, home, &h));
    free(home);
    assert_int_equal(200, h.status);
    assert_non_null(strstr(h.body, "<b id=\"role\">admin</b>"));
    assert_non_null(strstr(h.body, "admin@interop.example"));
    th_resp_free(&h);

    flow_free(&f);
    th_client_free(c);
    assert_int_equal(0, stack_stop(s));
}

/* A person whose groups claim is an empty array falls through to the default rule. */
static void test_user_signs_in(void **state)
{
    ip_stack_t *s = *state;
    assert_int_equal(0, stack_start(s, NULL));
    th_client_t *c = th_client_new();
    flow_t f;
    signin_as(s, c, "user", "user", &f);
    flow_free(&f);

    /* An admin in another browser at the same time gets admin; the user stays user. */
    th_client_t *c2 = th_client_new();
    signin_as(s, c2, "admin", "admin", &f);
    flow_free(&f);
    th_resp_t a = {0};
    assert_int_equal(200, auth_check(s, c, &a));
    assert_header(&a, "X-Auth-Request-Role", "user");
    assert_header(&a, "X-Auth-Request-User", "user");
    th_resp_free(&a);

    /* A browser that never signed in gets 401. */
    th_client_t *c3 = th_client_new();
    assert_int_equal(401, auth_check(s, c3, &a));
    th_resp_free(&a);

    cJSON *log = provider_log(s);
    assert_int_equal(2, count_requests(log, "POST", "/token", 200));
    assert_int_equal(0, count_requests(log, "POST", "/token", 400) +
                            count_requests(log, "POST", "/token", 401));
    /* Discovery and the JWKS are cached: at most once each per start (plus one JWKS refetch
     * would only come with an unknown kid). */
    assert_true(count_requests(log, "GET", "/.well-known/openid-configuration", 0) <= 1);
    assert_true(count_requests(log, "GET", "/jwks", 0) <= 1);
    cJSON_Delete(log);
    th_client_free(c);
    th_client_free(c2);
    th_client_free(c3);
    assert_int_equal(0, stack_stop(s));
}

/* The provider remembers the person (its own session and grant): a second sign-in in the same
 * browser goes straight back with no page, and the gateway issues a new session id. */
static void test_provider_sso_second_signin(void **state)
{
    ip_stack_t *s = *state;
    assert_int_equal(0, stack_start(s, NULL));
    th_client_t *c = th_client_new();
    flow_t f;
    signin_as(s, c, "admin", "admin", &f);
    char *first = session_set(&f.callback);
    flow_free(&f);

    signin_as(s, c, "admin", "admin", &f);
    assert_int_equal(0, f.login_forms);
    assert_int_equal(0, f.consent_pages);
    char *second = session_set(&f.callback);
    assert_non_null(first);
    assert_non_null(second);
    assert_string_not_equal(first, second);
    free(first);
    free(second);
    flow_free(&f);

    cJSON *log = provider_log(s);
    assert_int_equal(2, count_requests(log, "POST", "/token", 200));
    assert_int_equal(2, count_requests(log, "POST", "/token/revocation", 200));
    cJSON_Delete(log);
    th_client_free(c);
    assert_int_equal(0, stack_stop(s));
}

/* The person presses Cancel on the provider's consent page: the provider sends
 * error=access_denied back, the gateway shows a clear page and makes no session. */
static void test_consent_cancelled(void **state)
{
    ip_stack_t *s = *state;
    assert_int_equal(0, stack_start(s, NULL));
    th_client_t *c = th_client_new();
    flow_t f;
    assert_int_equal(0, signin(s, c, "admin", CONSENT_CANCEL, "/", &f));
    char *err = th_url_param(f.callback_url, "error");
    assert_non_null(err);
    assert_string_equal(err, "access_denied");
    free(err);
    assert_int_equal(403, f.callback.status);
    /* Said in plain words, not as the provider's code. */
    assert_non_null(strstr(f.callback.body, "Sign-in was not approved"));
    assert_null(strstr(f.callback.body, "access_denied"));
    assert_false(sets_session(&f.callback));
    flow_free(&f);
    th_resp_t a = {0};
    assert_int_equal(401, auth_check(s, c, &a));
    th_resp_free(&a);
    cJSON *log = provider_log(s);
    assert_int_equal(0, count_requests(log, "POST", "/token", 0));
    cJSON_Delete(log);
    th_client_free(c);
    assert_int_equal(0, stack_stop(s));
}

/* A gateway with the wrong client secret: the provider refuses the code exchange
 * (invalid_client, 401), the gateway says so and makes no session. */
static void test_wrong_client_secret(void **state)
{
    ip_stack_t *s = *state;
    stack_opts_t o = {.gateway_secret = "not-the-secret"};
    assert_int_equal(0, stack_start(s, &o));
    th_client_t *c = th_client_new();
    flow_t f;
    assert_int_equal(0, signin(s, c, "admin", CONSENT_ACCEPT, "/", &f));
    if (f.callback.status != 400)
        fprintf(stderr, "interop: the callback answered %ld:\n%.2000s\n", f.callback.status,
                f.callback.body);
    assert_int_equal(400, f.callback.status);
    assert_non_null(strstr(f.callback.body, "invalid_client"));
    flow_free(&f);
    th_resp_t a = {0};
    assert_int_equal(401, auth_check(s, c, &a));
    th_resp_free(&a);
    cJSON *log = provider_log(s);
    const cJSON *tok = last_request(log, "POST", "/token");
    assert_non_null(tok);
    assert_int_equal(401, jint(tok, "status"));
    assert_string_equal(jstr(tok, "client_auth"), "client_secret_basic");
    cJSON_Delete(log);
    th_client_free(c);
    assert_int_equal(0, stack_stop(s));
}

/* A provider whose discovery offers client_secret_post only (and a client registered with
 * it): the gateway follows what discovery says. */
static void test_client_secret_post_provider(void **state)
{
    ip_stack_t *s = *state;
    stack_opts_t o = {.provider_auth = "client_secret_post"};
    assert_int_equal(0, stack_start(s, &o));
    th_client_t *c = th_client_new();
    flow_t f;
    signin_as(s, c, "admin", "admin", &f);
    flow_free(&f);
    cJSON *log = provider_log(s);
    const cJSON *tok = last_request(log, "POST", "/token");
    assert_non_null(tok);
    assert_int_equal(200, jint(tok, "status"));
    assert_string_equal(jstr(tok, "client_auth"), "client_secret_post");
    assert_true(jtrue(tok, "code_verifier"));
    const cJSON *rv = last_request(log, "POST", "/token/revocation");
    assert_non_null(rv);
    assert_int_equal(200, jint(rv, "status"));
    assert_string_equal(jstr(rv, "client_auth"), "client_secret_post");
    cJSON_Delete(log);
    th_client_free(c);
    assert_int_equal(0, stack_stop(s));
}

/* Issuers are not always a bare origin: Keycloak's have a path (/realms/NAME), Auth0's end
 * with a slash. Discovery is at issuer + "/.well-known/openid-configuration" (without a
 * doubled slash), and the issuer is compared exactly as the provider spells it. */
static void signin_with_issuer_path(void **state, const char *path)
{
    ip_stack_t *s = *state;
    stack_opts_t o = {.issuer_path = path};
    assert_int_equal(0, stack_start(s, &o));
    size_t ul = strlen(s->op.url), pl = strlen(path);
    assert_true(ul > pl && strcmp(s->op.url + ul - pl, path) == 0);
    th_client_t *c = th_client_new();
    flow_t f;
    signin_as(s, c, "admin", "admin", &f);
    flow_free(&f);
    cJSON *log = provider_log(s);
    assert_int_equal(1, count_requests(log, "POST", "/token", 200));
    cJSON_Delete(log);
    th_client_free(c);
    assert_int_equal(0, stack_stop(s));
}

static void test_issuer_with_path(void **state)
{
    signin_with_issuer_path(state, "/realms/acme");
}

static void test_issuer_with_trailing_slash(void **state)
{
    signin_with_issuer_path(state, "/");
}

/* The provider restarts with new signing keys (a key rotation) on the same issuer while the
 * gateway runs: the next ID token has an unknown kid, the gateway fetches the JWKS again once
 * and the sign-in works; the session made before stays valid. */
static void test_provider_key_rotation(void **state)
{
    ip_stack_t *s = *state;
    assert_int_equal(0, stack_start(s, NULL));
    th_client_t *c = th_client_new();
    flow_t f;
    signin_as(s, c, "admin", "admin", &f);
    flow_free(&f);
    cJSON *log = provider_log(s);
    const cJSON *jw = last_request(log, "GET", "/jwks");
    assert_non_null(jw);
    cJSON_Delete(log);

    int port = atoi(strrchr(s->op.url, ':') + 1);
    char old_url[128];
    snprintf(old_url, sizeof old_url, "%s", s->op.url);
    assert_int_equal(0, th_proc_stop(&s->op));
    close(s->op_fd);
    s->op_fd = -1;
    assert_int_equal(0, provider_start(s, port));
    assert_string_equal(s->op.url, old_url);

    th_client_t *c2 = th_client_new();
    signin_as(s, c2, "user", "user", &f);
    flow_free(&f);
    log = provider_log(s); /* the new process only */
    assert_int_equal(1, count_requests(log, "GET", "/jwks", 200));
    assert_int_equal(0, count_requests(log, "GET", "/.well-known/openid-configuration", 0));
    cJSON_Delete(log);

    th_resp_t a = {0};
    assert_int_equal(200, auth_check(s, c, &a));
    assert_header(&a, "X-Auth-Request-Role", "admin");
    th_resp_free(&a);
    th_client_free(c);
    th_client_free(c2);
    assert_int_equal(0, stack_stop(s));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_admin_signs_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_signs_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_sso_second_signin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consent_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_client_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_secret_post_provider, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_key_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issuer_with_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_issuer_with_trailing_slash, setup, teardown),
    };
    return cmocka_run_group_tests_name("interop_oidc_provider", tests, NULL, NULL);
}
