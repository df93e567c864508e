/*
 * The proxy examples of docs/proxies.md, run for real: nginx (auth_request) and Caddy (forward_auth),
 * each in front of the gateway and of a tiny web app, with the configs of tests/proxy/
 * (nginx.conf.in, Caddyfile.in), whose parts between the README markers must stay word for word docs/proxies.md's.
 *
 * Each proxy gets its own stack (sfsim + the gateway, harness.h's th_stack_start_public)
 * whose public_url is the proxy's address, so the callback registered at sfsim is
 * PROXY/oauth/callback and every step a browser takes goes through the proxy: the web app's
 * page while signed out (-> the gateway's /login), /login, sfsim's pages, the callback, the
 * web app's page again (it now sees the X-Auth-Request-* headers), the gateway's own page and
 * /logout.
 *
 * The web app is a thread of this test on a free loopback port: it answers every request with
 * 200 and a body that lists the request line and every X-Auth-Request-* header it received,
 * and counts the requests, so a test can tell that a signed-out request never reached it.
 *
 * The proxies are Debian's /usr/sbin/nginx and /usr/bin/caddy (packages nginx and caddy),
 * run in the foreground as our children on a free loopback port, with every file they write
 * in a temporary folder; each is stopped with SIGTERM by its PID (nginx's workers too) and
 * the test fails when one does not go away.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "th_check.h"
#include "scopegate/http.h"

#ifndef NGINX_BIN
#define NGINX_BIN "/usr/sbin/nginx"
#endif
#ifndef CADDY_BIN
#define CADDY_BIN "/usr/bin/caddy"
#endif

/* The addresses in docs/proxies.md's examples, which the test replaces with its own. */
#define README_GATEWAY "127.0.0.1:8080"
#define README_APP     "127.0.0.1:3000"

/* Who the demo org's people are (tests/sfsim/demo.cfg). */
#define ORG_ID   "00D8d000001DeMoEAK"
#define ALICE_ID "0058d000002AlicEAA"
#define ADMIN_ID "0058d000002AdmnEAA"

#define START_MS 10000
#define STOP_MS  10000

extern char **environ;

typedef struct {
    const char *name;     /* "nginx" or "caddy" */
    const char *template; /* file in tests/proxy */
    const char *conf_name;
    th_stack_t stack;
    int port;
    char url[64]; /* http://127.0.0.1:PORT: the gateway's public_url */
    char dir[256];
    char conf[320];
    char log[320];
    pid_t pid;
} proxy_t;

static proxy_t nginx_proxy = {
    .name = "nginx", .template = "nginx.conf.in", .conf_name = "nginx.conf"};
static proxy_t caddy_proxy = {
    .name = "caddy", .template = "Caddyfile.in", .conf_name = "Caddyfile"};


static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the web app ---------------------------------------------------------------------------
 * One thread, one connection at a time (the tests send one request at a time): reads the
 * request head and its body (Content-Length), answers 200 with "app saw METHOD TARGET" and
 * every X-Auth-Request-* header line as received, and closes the connection. */

#define APP_REQUEST_MAX 16384
#define APP_IO_MS       3000

static struct {
    int fd;
    int wake[2];
    pthread_t thread;
    int started;
    int port;
    pthread_mutex_t lock;
    long requests;
} app = {.fd = -1, .wake = {-1, -1}, .lock = PTHREAD_MUTEX_INITIALIZER};

static long app_requests(void)
{
    pthread_mutex_lock(&app.lock);
    long n = app.requests;
    pthread_mutex_unlock(&app.lock);
    return n;
}

/* Reads until the head is complete and Content-Length bytes of body followed; -1 on error. */
static ssize_t app_read(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    long deadline = now_ms() + APP_IO_MS;
    for (;;) {
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            size_t want = 0;
            for (char *line = strstr(buf, "\r\n"); line && line < end;
                 line = strstr(line, "\r\n")) {
                line += 2;
                if (strncasecmp(line, "Content-Length:", 15) == 0)
                    want = strtoul(line + 15, NULL, 10);
            }
            if ((size_t)(end + 4 - buf) + want <= len)
                return (ssize_t)len;
        }
        long left = deadline - now_ms();
        if (left <= 0 || len + 1 >= cap)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t got = recv(fd, buf + len, cap - 1 - len, 0);
        if (got <= 0)
            return -1;
        len += (size_t)got;
    }
}

static void app_serve(int fd)
{
    char *req = malloc(APP_REQUEST_MAX);
    char *body = malloc(APP_REQUEST_MAX + 256);
    if (!req || !body || app_read(fd, req, APP_REQUEST_MAX) < 0) {
        free(req);
        free(body);
        return;
    }
    char *head_end = strstr(req, "\r\n\r\n");
    *head_end = '\0';
    char *eol = strstr(req, "\r\n");
    size_t n = (size_t)snprintf(body, APP_REQUEST_MAX, "app saw %.*s\n",
                                (int)(eol ? eol - req : (long)strlen(req)), req);
    for (char *line = eol; line && n < APP_REQUEST_MAX; line = strstr(line, "\r\n")) {
        line += 2;
        char *next = strstr(line, "\r\n");
        size_t ll = next ? (size_t)(next - line) : strlen(line);
        if (ll > 15 && strncasecmp(line, "X-Auth-Request-", 15) == 0)
            n += (size_t)snprintf(body + n, APP_REQUEST_MAX + 256 - n, "%.*s\n", (int)ll, line);
    }
    pthread_mutex_lock(&app.lock);
    app.requests++;
    pthread_mutex_unlock(&app.lock);
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      n);
    if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) == hl)
        send(fd, body, n, MSG_NOSIGNAL);
    free(req);
    free(body);
}

static void *app_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = app.wake[0], .events = POLLIN},
                              {.fd = app.fd, .events = POLLIN}};
        int r = poll(p, 2, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || p[0].revents)
            break;
        if (p[1].revents & POLLIN) {
            int fd = accept4(app.fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                app_serve(fd);
                shutdown(fd, SHUT_WR);
                close(fd);
            }
        }
    }
    return NULL;
}

static int app_start(void)
{
    app.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (app.fd < 0 || bind(app.fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(app.fd, 16) < 0 ||
        getsockname(app.fd, (struct sockaddr *)&a, &len) < 0 || pipe2(app.wake, O_CLOEXEC) < 0) {
        fprintf(stderr, "web app: %s\n", strerror(errno));
        return -1;
    }
    app.port = ntohs(a.sin_port);
    if (pthread_create(&app.thread, NULL, app_main, NULL) != 0) {
        fprintf(stderr, "web app: pthread_create failed\n");
        return -1;
    }
    app.started = 1;
    return 0;
}

static void app_stop(void)
{
    if (app.started) {
        ssize_t w = write(app.wake[1], "x", 1);
        (void)w;
        pthread_join(app.thread, NULL);
        app.started = 0;
    }
    for (int i = 0; i < 2; i++) {
        if (app.wake[i] >= 0)
            close(app.wake[i]);
        app.wake[i] = -1;
    }
    if (app.fd >= 0)
        close(app.fd);
    app.fd = -1;
}

/* ---- the proxies' configs ------------------------------------------------------------------ */

/* s with every `from` replaced by `to` (heap), or NULL. Frees s. */
static char *replace_all(char *s, const char *from, const char *to)
{
    if (!s)
        return NULL;
    size_t fl = strlen(from), tl = strlen(to), count = 0;
    for (const char *p = strstr(s, from); p; p = strstr(p + fl, from))
        count++;
    char *out = malloc(strlen(s) + count * tl + 1);
    if (!out) {
        free(s);
        return NULL;
    }
    char *o = out;
    const char *p = s;
    for (const char *hit = strstr(p, from); hit; hit = strstr(p, from)) {
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, tl);
        o += tl;
        p = hit + fl;
    }
    strcpy(o, p);
    free(s);
    return out;
}

static char *source_file(const char *rel)
{
    const char *root = getenv("SG_SOURCE_ROOT");
    if (!root || !*root) {
        fprintf(stderr, "SG_SOURCE_ROOT is not set (meson's test_env sets it)\n");
        return NULL;
    }
    char *path = th_fmt("%s/%s", root, rel);
    char *text = path ? th_read_file(path, NULL) : NULL;
    free(path);
    return text;
}

/* The template with this run's folder, ports and addresses (heap), or NULL. */
static char *render(const proxy_t *p)
{
    char *rel = th_fmt("tests/proxy/%s", p->template);
    char *text = rel ? source_file(rel) : NULL;
    free(rel);
    char listen_addr[64], gateway[64], web[64];
    snprintf(listen_addr, sizeof listen_addr, "127.0.0.1:%d", p->port);
    snprintf(gateway, sizeof gateway, "127.0.0.1:%d", p->stack.port);
    snprintf(web, sizeof web, "127.0.0.1:%d", app.port);
    text = replace_all(text, "@DIR@", p->dir);
    text = replace_all(text, "@LISTEN@", listen_addr);
    /* Run as root, nginx would hand its workers to "nobody", who cannot enter our folder. */
    text = replace_all(text, "@USER@", geteuid() == 0 ? "user root;" : "");
    text = replace_all(text, README_GATEWAY, gateway);
    text = replace_all(text, README_APP, web);
    if (!text)
        fprintf(stderr, "%s: could not write its config\n", p->name);
    return text;
}

/* ---- the proxies' processes ------------------------------------------------------------------ */

/* Our environment with HOME and the XDG folders moved into dir (Caddy keeps its data, its
 * autosaved config and its locks there). Built before fork: the app thread is running. */
static char **child_env(const char *dir)
{
    static const char *const moved[] = {
        "HOME=", "XDG_DATA_HOME=", "XDG_CONFIG_HOME=", "XDG_CACHE_HOME="};
    const size_t nmoved = sizeof moved / sizeof moved[0];
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + nmoved + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int skip = 0;
        for (size_t m = 0; m < nmoved; m++)
            skip |= strncmp(environ[i], moved[m], strlen(moved[m])) == 0;
        if (!skip)
            env[k++] = environ[i];
    }
    for (size_t m = 0; m < nmoved; m++) {
        env[k] = th_fmt("%s%s", moved[m], dir);
        if (!env[k]) {
            while (m-- > 0)
                free(env[--k]);
            free(env);
            return NULL;
        }
        k++;
    }
    return env;
}

static void child_env_free(char **env)
{
    if (!env)
        return;
    size_t k = 0;
    while (env[k])
        k++;
    for (size_t i = k >= 4 ? k - 4 : 0; i < k; i++)
        free(env[i]);
    free(env);
}

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void print_proxy_log(const proxy_t *p)
{
    char *log = th_read_file(p->log, NULL);
    fprintf(stderr, "%s's output (%s):\n%s\n", p->name, p->log, log ? log : "(none)");
    free(log);
    if (strcmp(p->name, "nginx") == 0) {
        char *path = th_fmt("%s/error.log", p->dir);
        char *err = path ? th_read_file(path, NULL) : NULL;
        fprintf(stderr, "nginx's error.log:\n%s\n", err ? err : "(none)");
        free(err);
        free(path);
    }
}

/* Runs the proxy in the foreground and waits until its port takes connections. */
static int proxy_spawn(proxy_t *p)
{
    char *pid_arg = th_fmt("daemon off; pid %s/nginx.pid; error_log %s/error.log;", p->dir, p->dir);
    char *err_arg = th_fmt("%s/error.log", p->dir);
    char *prefix = th_fmt("%s/", p->dir);
    char **env = child_env(p->dir);
    int logfd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = -1;
    if (!pid_arg || !err_arg || !prefix || !env || logfd < 0) {
        fprintf(stderr, "%s: cannot prepare its start: %s\n", p->name, strerror(errno));
        goto done;
    }
    int is_nginx = strcmp(p->name, "nginx") == 0;
    char *nginx_argv[] = {NGINX_BIN, "-p",    prefix, "-c",    p->conf,
                          "-e",      err_arg, "-g",   pid_arg, NULL};
    char *caddy_argv[] = {CADDY_BIN, "run", "--config", p->conf, "--adapter", "caddyfile", NULL};
    char **argv = is_nginx ? nginx_argv : caddy_argv;
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        goto done;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* it dies with the test, whatever happens */
        if (getppid() != parent)
            _exit(125);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(logfd, STDOUT_FILENO) < 0 ||
            dup2(logfd, STDERR_FILENO) < 0 || chdir(p->dir) < 0)
            _exit(126);
        execve(argv[0], argv, env);
        dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    long deadline = now_ms() + START_MS;
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            p->pid = -1;
            fprintf(stderr, "%s exited (status 0x%x) instead of listening on %s\n", p->name, status,
                    p->url);
            print_proxy_log(p);
            goto done;
        }
        if (port_open(p->port))
            break;
        if (now_ms() > deadline) {
            fprintf(stderr, "%s did not listen on %s within %d ms\n", p->name, p->url, START_MS);
            print_proxy_log(p);
            goto done;
        }
        sleep_ms(20);
    }
    rc = 0;
done:
    if (logfd >= 0)
        close(logfd);
    child_env_free(env);
    free(pid_arg);
    free(err_arg);
    free(prefix);
    return rc;
}

/* The running children of pid (nginx's workers), up to max; how many there are. */
static int children_of(pid_t pid, pid_t *out, int max)
{
    DIR *proc = opendir("/proc");
    if (!proc)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(proc)) != NULL) {
        char *end;
        long child = strtol(e->d_name, &end, 10);
        if (*end || child <= 0)
            continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", child);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[len] = '\0';
        const char *paren = strrchr(stat, ')');
        char state = 0;
        long ppid = 0;
        if (paren && sscanf(paren + 1, " %c %ld", &state, &ppid) == 2 && ppid == pid &&
            state != 'Z' && state != 'X') {
            if (n < max)
                out[n] = (pid_t)child;
            n++;
        }
    }
    closedir(proc);
    return n;
}

static int alive(pid_t pid)
{
    char path[64], stat[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *paren = strrchr(stat, ')');
    return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

/* SIGTERM, wait (then SIGKILL); 0 when it and its workers are gone and it exited cleanly. */
static int proxy_stop(proxy_t *p)
{
    if (p->pid <= 0)
        return 0;
    pid_t workers[16];
    int nworkers = children_of(p->pid, workers, 16);
    if (nworkers > 16)
        nworkers = 16;
    int rc = 0, status = 0;
    kill(p->pid, SIGTERM);
    long deadline = now_ms() + STOP_MS;
    pid_t r;
    while ((r = waitpid(p->pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(10);
    if (r != p->pid) {
        fprintf(stderr, "%s (pid %d) ignored SIGTERM for %d ms; killing it\n", p->name, (int)p->pid,
                STOP_MS);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        rc = -1;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s (pid %d) ended with status 0x%x after SIGTERM\n", p->name, (int)p->pid,
                status);
        print_proxy_log(p);
        rc = -1;
    }
    for (int i = 0; i < nworkers; i++) {
        long until = now_ms() + STOP_MS;
        while (alive(workers[i]) && now_ms() < until)
            sleep_ms(10);
        if (alive(workers[i])) {
            fprintf(stderr, "%s's worker %d outlived its master; killing it\n", p->name,
                    (int)workers[i]);
            kill(workers[i], SIGKILL);
            rc = -1;
        }
    }
    p->pid = -1;
    return rc;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static int proxy_down(proxy_t *p)
{
    int rc = proxy_stop(p);
    if (th_stack_stop(&p->stack))
        rc = -1;
    if (p->dir[0]) {
        nftw(p->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        p->dir[0] = '\0';
    }
    return rc;
}

/* A stack whose public_url is the proxy's address, then the proxy in front of it. */
static int proxy_up(proxy_t *p)
{
    p->pid = -1;
    const char *bin = strcmp(p->name, "nginx") == 0 ? NGINX_BIN : CADDY_BIN;
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "%s is missing: install the Debian package %s (scripts/deps.sh)\n", bin,
                p->name);
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(p->dir, sizeof p->dir, "%s/sg-proxy-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", p->name);
    if (!mkdtemp(p->dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", p->dir, strerror(errno));
        p->dir[0] = '\0';
        return -1;
    }
    snprintf(p->conf, sizeof p->conf, "%s/%s", p->dir, p->conf_name);
    snprintf(p->log, sizeof p->log, "%s/output.log", p->dir);
    p->port = th_free_port();
    if (p->port <= 0)
        return -1;
    snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->port);
    if (th_stack_start_public(&p->stack, NULL, p->url))
        return -1;
    char *conf = render(p);
    int rc = conf && th_write_file(p->conf, conf, 0600) == 0 ? proxy_spawn(p) : -1;
    free(conf);
    return rc;
}

/* ---- HTTP through the proxy ------------------------------------------------------------------ */

static th_client_t *browser(void)
{
    th_client_t *c = th_keep(th_client_new(), KEPT_CLIENT);
    CHECK(c != NULL, "could not make an HTTP client");
    return c;
}

/* A request (kept); extra is a NULL-terminated header list or NULL. */
static th_resp_t *req(th_client_t *c, const char *method, const char *url, const char *form,
                      const char *const *extra)
{
    th_resp_t *r = th_keep(calloc(1, sizeof *r), KEPT_RESP);
    CHECK(r != NULL, "out of memory");
    int rc =
        th_http(c, method, url, form ? "application/x-www-form-urlencoded" : NULL, form, extra, r);
    CHECK(rc == 0, "%s %s: no answer", method, url);
    return r;
}

static th_resp_t *get(th_client_t *c, const proxy_t *p, const char *path)
{
    char *url = keep_str(th_fmt("%s%s", p->url, path));
    return req(c, "GET", url, NULL, NULL);
}

/* A signed-out browser asking for asked is sent to the gateway's /login with rd=want (however
 * the proxy or the gateway encodes it). */
static void expect_login_rd(const proxy_t *p, const th_resp_t *r, const char *asked,
                            const char *want)
{
    char *login = keep_str(th_fmt("%s/login?rd=", p->url));
    char *rd = r->location ? keep_str(th_url_param(r->location, "rd")) : NULL;
    CHECK(r->status == 302 && r->location && strncmp(r->location, login, strlen(login)) == 0 &&
              rd && strcmp(rd, want) == 0,
          "%s: expected a signed-out request for %s to get 302 to %s<%s>, got %ld (Location %s: "
          "rd=%s)\n%.600s",
          p->name, asked, login, want, r->status, r->location ? r->location : "none",
          rd ? rd : "(none)", r->body);
}

static void expect_login_redirect(const proxy_t *p, const th_resp_t *r, const char *path)
{
    expect_login_rd(p, r, path, path);
}

/* The whole sign-in through the proxy, as a browser does it: the page, /login, sfsim's login
 * form and approval page, the callback; ends with the browser holding a session cookie and
 * sent back to path. */
static void sign_in(const proxy_t *p, th_client_t *c, const char *path, const char *user,
                    const char *password)
{
    long before = app_requests();
    th_resp_t *r = get(c, p, path);
    expect_login_redirect(p, r, path);
    CHECK(app_requests() == before, "%s: the web app was reached by a signed-out request", p->name);

    r = req(c, "GET", r->location, NULL, NULL);
    char *authorize = keep_str(th_fmt("%s/services/oauth2/authorize?", p->stack.sim.url));
    CHECK(r->status == 302 && r->location &&
              strncmp(r->location, authorize, strlen(authorize)) == 0,
          "%s: expected /login through the proxy to send the browser to %s..., got %ld "
          "(Location %s)\n%.600s",
          p->name, authorize, r->status, r->location ? r->location : "none", r->body);
    char *callback = keep_str(th_fmt("%s/oauth/callback", p->url));
    char *redirect_uri = keep_str(th_url_param(r->location, "redirect_uri"));
    CHECK(redirect_uri && strcmp(redirect_uri, callback) == 0,
          "%s: expected redirect_uri=%s (public_url is the proxy), got %s", p->name, callback,
          redirect_uri ? redirect_uri : "(none)");

    th_resp_t *fin = th_keep(calloc(1, sizeof *fin), KEPT_RESP);
    CHECK(fin != NULL, "out of memory");
    CHECK(th_browser_authorize(c, r->location, user, password, 1, fin) == 0,
          "%s: the sign-in at sfsim as %s did not come back", p->name, user);
    CHECK(fin->location && strncmp(fin->location, callback, strlen(callback)) == 0 &&
              fin->location[strlen(callback)] == '?',
          "%s: expected sfsim to send the browser to %s?..., got %s", p->name, callback,
          fin->location ? fin->location : "(nowhere)");

    r = req(c, "GET", fin->location, NULL, NULL);
    char *sid = keep_str(th_resp_set_cookie(r, TH_SESSION_COOKIE));
    /* An admin with no offline grant is first offered the connect page. */
    char *enc = keep_str(sg_url_encode(path));
    char *connect = keep_str(th_fmt("/connect?app=api&rd=%s", enc ? enc : ""));
    CHECK(r->status == 302 && r->location &&
              (strcmp(r->location, path) == 0 || strcmp(r->location, connect) == 0) && sid && *sid,
          "%s: expected the callback through the proxy to answer 302 to %s with a session "
          "cookie, got %ld (Location %s, cookie %s)\n%.800s",
          p->name, path, r->status, r->location ? r->location : "none", sid ? sid : "none",
          r->body);
}

/* The value of the one header line `name: value` in the web app's echo (kept); fails when the
 * app saw it more than once. NULL when it saw none. */
static char *app_saw(const proxy_t *p, const th_resp_t *r, const char *name)
{
    char *value = NULL;
    size_t nl = strlen(name);
    for (const char *line = r->body; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            CHECK(value == NULL, "%s: the web app got %s twice:\n%s", p->name, name, r->body);
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            value = keep_str(strndup(v, ll - (size_t)(v - line)));
        }
        line = eol ? eol + 1 : NULL;
    }
    return value;
}

static void expect_app_saw(const proxy_t *p, const th_resp_t *r, const char *name, const char *want)
{
    char *got = app_saw(p, r, name);
    CHECK(got && strcmp(got, want) == 0, "%s: expected the web app to get %s: %s, it got %s:\n%s",
          p->name, name, want, got ? got : "none", r->body);
}

/* The page of the web app, signed in: 200 from the app with the gateway's headers. */
static th_resp_t *app_page(const proxy_t *p, th_client_t *c, const char *path,
                           const char *const *extra)
{
    long before = app_requests();
    char *url = keep_str(th_fmt("%s%s", p->url, path));
    th_resp_t *r = req(c, "GET", url, NULL, extra);
    char *line = keep_str(th_fmt("app saw GET %s HTTP/1.", path));
    CHECK(r->status == 200 && strncmp(r->body, line, strlen(line)) == 0,
          "%s: expected the web app's page for GET %s (200 \"%s...\"), got %ld (Location %s)\n"
          "%.600s",
          p->name, path, line, r->status, r->location ? r->location : "none", r->body);
    CHECK(app_requests() == before + 1, "%s: expected the web app to see one request", p->name);
    return r;
}

static void expect_identity(const proxy_t *p, const th_resp_t *r, const char *id,
                            const char *username, const char *role)
{
    expect_app_saw(p, r, "X-Auth-Request-User", id);
    expect_app_saw(p, r, "X-Auth-Request-Preferred-Username", username);
    expect_app_saw(p, r, "X-Auth-Request-Email", username); /* the demo users' emails */
    expect_app_saw(p, r, "X-Auth-Request-Role", role);
    expect_app_saw(p, r, "X-Auth-Request-Org", ORG_ID);
}

/* ---- the tests (each runs for nginx and for Caddy) ---------------------------------------------
 */

/* Signed out, a page of the web app (GET, a query with '&', and a POST) ends at the gateway's
 * /login with the page as rd; the web app never sees the request. */
static void signed_out_goes_to_login(proxy_t *p)
{
    th_client_t *c = browser();
    long before = app_requests();
    static const char *const paths[] = {"/", "/reports/q3?year=2026&sort=desc%20name"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        expect_login_redirect(p, get(c, p, paths[i]), paths[i]);
    char *url = keep_str(th_fmt("%s/orders?id=7", p->url));
    expect_login_redirect(p, req(c, "POST", url, "qty=2", NULL), "/orders?id=7");
    /* A page address that is not a path of this site comes back as /, not as rd. */
    expect_login_rd(p, get(c, p, "//evil.example/x"), "//evil.example/x", "/");
    /* A cookie that is no session changes nothing. */
    const char *const junk[] = {"Cookie: " TH_SESSION_COOKIE "=not-a-session", NULL};
    url = keep_str(th_fmt("%s/private", p->url));
    expect_login_redirect(p, req(NULL, "GET", url, NULL, junk), "/private");
    CHECK(app_requests() == before, "%s: a signed-out request reached the web app", p->name);
}

/* A plain user and an admin sign in through the proxy; the web app then sees who they are. */
static void signed_in_app_sees_identity(proxy_t *p)
{
    th_client_t *alice = browser();
    const char *path = "/reports/q3?year=2026&sort=desc%20name";
    sign_in(p, alice, path, TH_ALICE, "alice");
    th_resp_t *r = app_page(p, alice, path, NULL);
    expect_identity(p, r, ALICE_ID, TH_ALICE, "user");

    /* A POST with a body reaches the app the same way. */
    char *url = keep_str(th_fmt("%s/orders?id=7", p->url));
    r = req(alice, "POST", url, "qty=2", NULL);
    CHECK(r->status == 200 && strncmp(r->body, "app saw POST /orders?id=7 ", 26) == 0,
          "%s: expected the web app to get the signed-in POST, got %ld\n%.600s", p->name, r->status,
          r->body);
    expect_app_saw(p, r, "X-Auth-Request-Role", "user");

    th_resp_t *hz = get(alice, p, "/healthz");
    CHECK(hz->status == 200 && strncmp(hz->body, "app saw GET /healthz ", 21) == 0,
          "%s: expected /healthz through the proxy to be the web app's, got %ld\n%.300s", p->name,
          hz->status, hz->body);

    th_client_t *admin = browser();
    sign_in(p, admin, "/", TH_ADMIN, "admin");
    r = app_page(p, admin, "/", NULL);
    expect_identity(p, r, ADMIN_ID, TH_ADMIN, "admin");
}

/* Headers a browser sends under the gateway's names never reach the app: signed out, the
 * request is still sent to /login; signed in, the app sees only the gateway's values. */
static void forged_headers_do_not_pass(proxy_t *p)
{
    static const char *const forged[] = {"X-Auth-Request-User: 005FORGED",
                                         "X-Auth-Request-Preferred-Username: mallory@evil.example",
                                         "X-Auth-Request-Email: mallory@evil.example",
                                         "X-Auth-Request-Role: admin",
                                         "X-Auth-Request-Org: 00DFORGED",
                                         NULL};
    th_client_t *c = browser();
    long before = app_requests();
    char *url = keep_str(th_fmt("%s/admin", p->url));
    expect_login_redirect(p, req(c, "GET", url, NULL, forged), "/admin");
    CHECK(app_requests() == before, "%s: forged headers got a signed-out request to the app",
          p->name);

    sign_in(p, c, "/admin", TH_ALICE, "alice");
    th_resp_t *r = app_page(p, c, "/admin", forged);
    expect_identity(p, r, ALICE_ID, TH_ALICE, "user");
}

/* The gateway's own page is reachable through the proxy; its sign-out button's POST /logout
 * ends the session (and without the form's CSRF token, it does not). */
static void sign_out_through_proxy(proxy_t *p)
{
    th_client_t *c = browser();
    sign_in(p, c, "/", TH_ALICE, "alice");
    char *sid = keep_str(th_client_cookie(c, TH_SESSION_COOKIE));
    CHECK(sid && *sid, "%s: no session cookie after signing in", p->name);

    th_resp_t *home = get(c, p, "/_scopegate/");
    CHECK(home->status == 200 && strstr(home->body, "id=\"role\">user<") &&
              strstr(home->body, "action=\"/logout\""),
          "%s: expected the gateway's page at /_scopegate/ with the role and the sign-out form, "
          "got %ld\n%.800s",
          p->name, home->status, home->body);
    const char *v = strstr(home->body, "name=\"csrf\" value=\"");
    CHECK(v != NULL, "%s: no CSRF token in the sign-out form:\n%.800s", p->name, home->body);
    v += strlen("name=\"csrf\" value=\"");
    const char *q = strchr(v, '"');
    CHECK(q != NULL, "%s: unterminated CSRF value", p->name);
    char *csrf = keep_str(strndup(v, (size_t)(q - v)));

    char *logout = keep_str(th_fmt("%s/logout", p->url));
    char *origin = keep_str(th_fmt("Origin: %s", p->url));
    const char *const hdr[] = {origin, NULL};
    th_resp_t *r = req(c, "POST", logout, "csrf=wrong", hdr);
    CHECK(r->status == 403,
          "%s: expected POST /logout with a wrong CSRF token to answer 403, got "
          "%ld",
          p->name, r->status);
    expect_app_saw(p, app_page(p, c, "/still", NULL), "X-Auth-Request-User", ALICE_ID);

    char *form = keep_str(th_fmt("csrf=%s", csrf));
    r = req(c, "POST", logout, form, hdr);
    char *cleared = keep_str(th_resp_set_cookie(r, TH_SESSION_COOKIE));
    CHECK(r->status == 302 && r->location &&
              strcmp(r->location, "/logout?notice=signed_out") == 0 && cleared && !*cleared,
          "%s: expected POST /logout through the proxy to answer 302 to the signed-out page "
          "and clear the cookie, "
          "got %ld (Location %s, cookie %s)\n%.600s",
          p->name, r->status, r->location ? r->location : "none", cleared ? cleared : "not set",
          r->body);
    long before = app_requests();
    expect_login_redirect(p, get(c, p, "/"), "/");
    CHECK(app_requests() == before, "%s: the web app was reached after signing out", p->name);

    /* The old id is dead at the gateway too, whoever presents it. */
    char *cookie = keep_str(th_fmt("Cookie: %s=%s", TH_SESSION_COOKIE, sid));
    const char *const old[] = {cookie, NULL};
    char *auth = keep_str(th_fmt("%s/auth", p->stack.url));
    r = req(NULL, "GET", auth, NULL, old);
    CHECK(r->status == 401,
          "%s: expected the gateway's /auth to refuse the signed-out id (401), "
          "got %ld",
          p->name, r->status);
}

#define BOTH(fn)                                                                                   \
    static void test_nginx_##fn(void **state)                                                      \
    {                                                                                              \
        (void)state;                                                                               \
        fn(&nginx_proxy);                                                                          \
    }                                                                                              \
    static void test_caddy_##fn(void **state)                                                      \
    {                                                                                              \
        (void)state;                                                                               \
        fn(&caddy_proxy);                                                                          \
    }
BOTH(signed_out_goes_to_login)
BOTH(signed_in_app_sees_identity)
BOTH(forged_headers_do_not_pass)
BOTH(sign_out_through_proxy)

/* ---- the README's examples are these configs --------------------------------------------------
 */

/* The non-blank lines of text[0..len), each trimmed and with runs of blanks made one space,
 * joined with '\n' (heap). */
static char *normalise(const char *text, size_t len)
{
    char *out = malloc(len + 2);
    if (!out)
        return NULL;
    size_t o = 0;
    const char *end = text + len;
    for (const char *line = text; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        const char *a = line, *b = eol;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (a < b) {
            for (const char *s = a; s < b; s++) {
                if (isspace((unsigned char)*s)) {
                    if (out[o - 1] != ' ')
                        out[o++] = ' ';
                } else {
                    out[o++] = *s;
                }
            }
            out[o++] = '\n';
        }
        line = eol + 1;
    }
    out[o] = '\0';
    return out;
}

/* The README's fenced block ```lang (its body, kept) */
static char *readme_block(const char *readme, const char *lang)
{
    char *fence = keep_str(th_fmt("\n```%s\n", lang));
    const char *start = strstr(readme, fence);
    CHECK(start != NULL, "docs/proxies.md has no ```%s block", lang);
    start += strlen(fence);
    const char *end = strstr(start, "\n```");
    CHECK(end != NULL, "docs/proxies.md's ```%s block does not end", lang);
    return keep_str(strndup(start, (size_t)(end - start + 1)));
}

/* The lines between the README markers of a template (kept). */
static char *template_part(const char *file)
{
    char *rel = keep_str(th_fmt("tests/proxy/%s", file));
    char *text = keep_str(source_file(rel));
    CHECK(text != NULL, "cannot read %s", rel);
    const char *begin = strstr(text, "# ---- README begin ----\n");
    const char *end = begin ? strstr(begin, "# ---- README end ----") : NULL;
    CHECK(begin && end, "%s lacks the README markers", rel);
    begin += strlen("# ---- README begin ----\n");
    while (end > begin && end[-1] != '\n')
        end--;
    return keep_str(strndup(begin, (size_t)(end - begin)));
}

static void expect_same(const char *what, const char *readme, const char *tested)
{
    char *a = keep_str(normalise(readme, strlen(readme)));
    char *b = keep_str(normalise(tested, strlen(tested)));
    CHECK(a && b, "out of memory");
    if (strcmp(a, b) == 0)
        return;
    const char *x = a, *y = b;
    int line = 1;
    while (*x && *x == *y) {
        if (*x == '\n')
            line++;
        x++;
        y++;
    }
    while (x > a && x[-1] != '\n') {
        x--;
        y--;
    }
    FAILF("%s: the README's example and the tested config differ at line %d of the example "
          "(blank lines and spacing aside):\n  README: %.*s\n  tested: %.*s",
          what, line, (int)strcspn(x, "\n"), x, (int)strcspn(y, "\n"), y);
}

static void test_readme_examples_are_the_tested_configs(void **state)
{
    (void)state;
    char *readme = keep_str(source_file("docs/proxies.md"));
    CHECK(readme != NULL, "cannot read docs/proxies.md");
    expect_same("nginx (docs/proxies.md vs tests/proxy/nginx.conf.in)",
                readme_block(readme, "nginx"), template_part("nginx.conf.in"));

    /* Caddy: the README's site block around the tested lines. */
    char *caddy = readme_block(readme, "caddy");
    const char *open = strchr(caddy, '{');
    const char *close = strrchr(caddy, '}');
    CHECK(open && close && close > open, "docs/proxies.md's ```caddy block is not one site block");
    char *inner = keep_str(strndup(open + 1, (size_t)(close - open - 1)));
    expect_same("Caddy (docs/proxies.md vs tests/proxy/Caddyfile.in)", inner,
                template_part("Caddyfile.in"));
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int group_teardown(void **state);

static int group_setup(void **state)
{
    if (app_start() || proxy_up(&nginx_proxy) || proxy_up(&caddy_proxy)) {
        fprintf(stderr, "proxy tests: setup failed (see above); no test ran\n");
        group_teardown(state);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (proxy_down(&nginx_proxy))
        rc = -1;
    if (proxy_down(&caddy_proxy))
        rc = -1;
    app_stop();
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    th_free_kept();
    return 0;
}

#define T(fn) cmocka_unit_test_teardown(fn, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_readme_examples_are_the_tested_configs), T(test_nginx_signed_out_goes_to_login),
        T(test_caddy_signed_out_goes_to_login),         T(test_nginx_signed_in_app_sees_identity),
        T(test_caddy_signed_in_app_sees_identity),      T(test_nginx_forged_headers_do_not_pass),
        T(test_caddy_forged_headers_do_not_pass),       T(test_nginx_sign_out_through_proxy),
        T(test_caddy_sign_out_through_proxy),
    };
    return cmocka_run_group_tests_name("proxy examples", tests, group_setup, group_teardown);
}
