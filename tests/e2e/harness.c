/*
 * End-to-end test harness (see harness.h): processes, HTTP over libcurl, a small HTML form
 * scraper that plays the browser through sfsim's login and approval pages, and the
 * Salesforce-flow shorthands.
 */
#include "harness.h"

#include "scopegate/buf.h"
#include "scopegate/http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libconfig.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
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

#define BODY_MAX         ((size_t)8 << 20)
#define HEADERS_MAX      ((size_t)1 << 20)
#define FIRST_LINE_MAX   512
#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS  10000
#define FLOW_MAX_STEPS   12

/* ---- small utilities ------------------------------------------------------------------ */

char *th_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fprintf(stderr, "harness: out of memory formatting a string\n");
        return NULL;
    }
    return s;
}

char *th_enc(const char *s)
{
    char *e = sg_url_encode(s ? s : "");
    if (!e)
        fprintf(stderr, "harness: out of memory percent-encoding\n");
    return e;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) with '+' as a space; text with a bad escape is kept as it is. */
static char *pct_decode(const char *s, size_t len)
{
    char *d = sg_url_decode(s, len);
    return d ? d : strndup(s, len);
}

char *th_url_param(const char *url, const char *name)
{
    if (!url || !name)
        return NULL;
    const char *q = strchr(url, '?');
    if (!q)
        return NULL;
    q++;
    const char *end = strchr(q, '#');
    if (!end)
        end = q + strlen(q);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *kend = eq ? eq : stop;
        char *key = pct_decode(q, (size_t)(kend - q));
        if (!key)
            return NULL;
        int match = strcmp(key, name) == 0;
        free(key);
        if (match)
            return eq ? pct_decode(eq + 1, (size_t)(stop - eq - 1)) : strdup("");
        q = stop + 1;
    }
    return NULL;
}

/* ---- processes ------------------------------------------------------------------------ */

/* The read end of each running process's stdout pipe stays open, so a later write by the
 * process never meets SIGPIPE; th_proc_stop closes it. */
#define MAX_PROCS 16
static struct {
    pid_t pid;
    int fd;
} procs[MAX_PROCS];

static void remember_fd(pid_t pid, int fd)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i].pid == 0) {
            procs[i].pid = pid;
            procs[i].fd = fd;
            return;
        }
    }
    close(fd); /* table full: lose the pipe rather than the process */
}

static void forget_fd(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i].pid == pid) {
            close(procs[i].fd);
            procs[i].pid = 0;
            procs[i].fd = -1;
        }
    }
}

/* Reads one line from fd within timeout_ms; 0 on success (line without '\n'). */
static int read_first_line(int fd, char *line, size_t cap, int timeout_ms)
{
    size_t len = 0;
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "harness: no first line on stdout within %d ms\n", timeout_ms);
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("harness: poll");
            return -1;
        }
        if (n == 0)
            continue;
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "harness: stdout closed before the first line (got \"%.*s\")\n",
                    (int)len, line);
            return -1;
        }
        if (c == '\n') {
            line[len] = '\0';
            return 0;
        }
        if (len + 1 >= cap) {
            fprintf(stderr, "harness: first line longer than %zu bytes\n", cap);
            return -1;
        }
        line[len++] = c;
    }
}

/* Waits for pid up to timeout_ms: 1 when it was reaped (*status set), 0 when still running,
 * -1 when it is not our child (someone else reaped it: its status is lost). */
static int wait_for(pid_t pid, int *status, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "harness: waitpid %d: %s\n", (int)pid, strerror(errno));
            return -1;
        }
        if (now_ms() >= deadline)
            return 0;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int th_sfsim_start(th_proc_t *p, const char *config)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    const char *exe = getenv("SFSIM");
    if (!config)
        config = getenv("SFSIM_DEMO_CFG");
    if (!exe || !*exe || !config || !*config) {
        fprintf(stderr, "harness: SFSIM and SFSIM_DEMO_CFG (or a config) must be set\n");
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    int n = snprintf(p->log_path, sizeof p->log_path, "%s/sfsim-log-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof p->log_path) {
        fprintf(stderr, "harness: TMPDIR too long\n");
        return -1;
    }
    int logfd = mkstemp(p->log_path);
    if (logfd < 0) {
        perror("harness: mkstemp");
        p->log_path[0] = '\0';
        return -1;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        perror("harness: pipe");
        close(logfd);
        unlink(p->log_path);
        p->log_path[0] = '\0';
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("harness: fork");
        close(pipefd[0]);
        close(pipefd[1]);
        close(logfd);
        unlink(p->log_path);
        p->log_path[0] = '\0';
        return -1;
    }
    if (pid == 0) {
        /* The child dies with the test, whatever happens to the test. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(pipefd[1], STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0)
            _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            close(devnull);
        }
        execl(exe, exe, "--config", config, "--listen", "127.0.0.1:0", (char *)NULL);
        dprintf(STDERR_FILENO, "harness: exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    close(logfd);
    p->pid = pid;

    char line[FIRST_LINE_MAX];
    if (read_first_line(pipefd[0], line, sizeof line, START_TIMEOUT_MS)) {
        char *log = th_proc_log(p);
        fprintf(stderr, "harness: %s did not start; its stderr:\n%s\n", exe, log ? log : "");
        free(log);
        close(pipefd[0]);
        th_proc_stop(p);
        return -1;
    }
    static const char prefix[] = "sfsim listening on ";
    const char *url = line;
    if (strncmp(line, prefix, sizeof prefix - 1) == 0)
        url = line + sizeof prefix - 1;
    if (strncmp(url, "http://", 7) != 0 || strlen(url) >= sizeof p->url) {
        fprintf(stderr, "harness: unexpected first line from %s: \"%s\"\n", exe, line);
        close(pipefd[0]);
        th_proc_stop(p);
        return -1;
    }
    strcpy(p->url, url);
    size_t ul = strlen(p->url);
    while (ul > 0 && (p->url[ul - 1] == '/' || p->url[ul - 1] == '\r'))
        p->url[--ul] = '\0';
    remember_fd(pid, pipefd[0]);
    return 0;
}

int th_proc_stop(th_proc_t *p)
{
    int result = -1;
    if (p->pid > 0) {
        int status = 0;
        kill(p->pid, SIGTERM);
        int w = wait_for(p->pid, &status, STOP_TIMEOUT_MS);
        if (w == 0) {
            fprintf(stderr, "harness: pid %d ignored SIGTERM for %d ms; killing it\n", (int)p->pid,
                    STOP_TIMEOUT_MS);
            kill(p->pid, SIGKILL);
            wait_for(p->pid, &status, STOP_TIMEOUT_MS);
        } else if (w < 0) {
            /* result stays -1 */
        } else if (WIFEXITED(status)) {
            result = WEXITSTATUS(status);
            if (result != 0)
                fprintf(stderr, "harness: pid %d exited with status %d\n", (int)p->pid, result);
        } else if (WIFSIGNALED(status)) {
            fprintf(stderr, "harness: pid %d died from signal %d\n", (int)p->pid, WTERMSIG(status));
        }
        forget_fd(p->pid);
        p->pid = -1;
    }
    if (p->log_path[0]) {
        unlink(p->log_path);
        p->log_path[0] = '\0';
    }
    return result;
}

char *th_proc_log(const th_proc_t *p)
{
    sg_buf_t b;
    sg_buf_init(&b, BODY_MAX * 4);
    if (!p->log_path[0])
        return sg_buf_steal(&b);
    FILE *f = fopen(p->log_path, "r");
    if (!f) {
        fprintf(stderr, "harness: cannot read %s: %s\n", p->log_path, strerror(errno));
        return sg_buf_steal(&b);
    }
    char chunk[4096];
    for (;;) {
        size_t n = fread(chunk, 1, sizeof chunk, f);
        if (n == 0)
            break;
        if (b.len + n > b.max) { /* keep what fits rather than lose it all */
            fprintf(stderr, "harness: log %s is longer than %zu bytes; reading the start\n",
                    p->log_path, b.max);
            break;
        }
        if (sg_buf_add(&b, chunk, n)) {
            fprintf(stderr, "harness: out of memory reading %s\n", p->log_path);
            break;
        }
    }
    fclose(f);
    return sg_buf_steal(&b);
}

/* ---- HTTP ----------------------------------------------------------------------------- */

struct th_client {
    CURLSH *share; /* holds the cookie jar; each request uses a fresh easy handle */
};

static void global_init(void)
{
    static int done;
    if (!done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {
            done = 1;
            atexit(curl_global_cleanup);
        }
    }
}

th_client_t *th_client_new(void)
{
    global_init();
    th_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "harness: out of memory\n");
        return NULL;
    }
    c->share = curl_share_init();
    if (!c->share || curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE)) {
        fprintf(stderr, "harness: curl_share_init failed\n");
        if (c->share)
            curl_share_cleanup(c->share);
        free(c);
        return NULL;
    }
    return c;
}

void th_client_free(th_client_t *c)
{
    if (!c)
        return;
    curl_share_cleanup(c->share);
    free(c);
}

typedef struct {
    sg_buf_t body;
    sg_buf_t headers;
    int too_big;
} capture_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    capture_t *cap = ud;
    size_t n = size * nmemb;
    if (sg_buf_add(&cap->body, data, n)) {
        cap->too_big = 1;
        return 0;
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    capture_t *cap = ud;
    size_t n = size * nmemb;
    /* A new status line starts a new header block (after "100 Continue"): keep the last. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        sg_buf_reset(&cap->headers);
    if (sg_buf_add(&cap->headers, data, n)) {
        cap->too_big = 1;
        return 0;
    }
    return n;
}

char *th_resp_header(const th_resp_t *r, const char *name)
{
    if (!r || !r->headers || !name)
        return NULL;
    size_t nl = strlen(name);
    const char *line = r->headers;
    while (*line) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            eol = line + strlen(line);
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\n'))
                ve--;
            return strndup(v, (size_t)(ve - v));
        }
        line = *eol ? eol + 2 : eol;
    }
    return NULL;
}

void th_resp_free(th_resp_t *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->headers);
    free(r->location);
    free(r->content_type);
    memset(r, 0, sizeof *r);
}

static void resp_empty(th_resp_t *out)
{
    memset(out, 0, sizeof *out);
    out->body = calloc(1, 1);
    out->headers = calloc(1, 1);
}

int th_http(th_client_t *c, const char *method, const char *url, const char *content_type,
            const char *body, const char *const *extra_headers, th_resp_t *out)
{
    global_init();
    resp_empty(out);
    if (!out->body || !out->headers) {
        fprintf(stderr, "harness: out of memory\n");
        return -1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(stderr, "harness: curl_easy_init failed\n");
        return -1;
    }
    capture_t cap;
    sg_buf_init(&cap.body, BODY_MAX);
    sg_buf_init(&cap.headers, HEADERS_MAX);
    cap.too_big = 0;
    struct curl_slist *hdrs = NULL;
    char *ct_line = NULL;
    int rc = -1;
    int oom = 0;

    if (content_type) {
        ct_line = th_fmt("Content-Type: %s", content_type);
        struct curl_slist *t = ct_line ? curl_slist_append(hdrs, ct_line) : NULL;
        if (!t)
            oom = 1;
        else
            hdrs = t;
    }
    for (size_t i = 0; extra_headers && extra_headers[i] && !oom; i++) {
        struct curl_slist *t = curl_slist_append(hdrs, extra_headers[i]);
        if (!t)
            oom = 1;
        else
            hdrs = t;
    }
    if (oom) {
        fprintf(stderr, "harness: out of memory building headers\n");
        goto done;
    }

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &cap);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &cap);
    if (c) {
        curl_easy_setopt(h, CURLOPT_SHARE, c->share);
        curl_easy_setopt(h, CURLOPT_COOKIEFILE, "");
    }
    if (hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

    if (!method || strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        if (body) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
        }
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        const char *b = body ? body : "";
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, b);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(b));
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode cr = curl_easy_perform(h);
    double secs = 0;
    curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &secs);
    out->seconds = secs;
    if (cr != CURLE_OK) {
        fprintf(stderr, "harness: %s %s: %s%s\n", method ? method : "GET", url,
                curl_easy_strerror(cr), cap.too_big ? " (response too big)" : "");
        goto done;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    free(out->body);
    free(out->headers);
    out->body_len = cap.body.len;
    out->body = sg_buf_steal(&cap.body);
    out->headers = sg_buf_steal(&cap.headers);
    if (!out->body || !out->headers) {
        fprintf(stderr, "harness: out of memory\n");
        free(out->body);
        free(out->headers);
        resp_empty(out);
        goto done;
    }
    out->status = status;
    out->location = th_resp_header(out, "Location");
    out->content_type = th_resp_header(out, "Content-Type");
    rc = 0;
done:
    sg_buf_free(&cap.body);
    sg_buf_free(&cap.headers);
    curl_slist_free_all(hdrs);
    free(ct_line);
    curl_easy_cleanup(h);
    return rc;
}

int th_get(th_client_t *c, const char *url, th_resp_t *out)
{
    return th_http(c, "GET", url, NULL, NULL, NULL, out);
}

int th_post_form(th_client_t *c, const char *url, const char *form, th_resp_t *out)
{
    return th_http(c, "POST", url, "application/x-www-form-urlencoded", form ? form : "", NULL,
                   out);
}

cJSON *th_resp_json(const th_resp_t *r)
{
    if (!r || !r->body || !r->body_len)
        return NULL;
    return cJSON_ParseWithLength(r->body, r->body_len);
}

/* ---- URLs ----------------------------------------------------------------------------- */

/* Length of "scheme://authority" at the start of url, or 0 when url is not absolute. */
static size_t origin_len(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return 0;
    for (const char *s = url; s < p; s++)
        if (!isalnum((unsigned char)*s) && *s != '+' && *s != '-' && *s != '.')
            return 0;
    p += 3;
    p += strcspn(p, "/?#");
    return (size_t)(p - url);
}

static int same_origin(const char *a, const char *b)
{
    size_t la = origin_len(a), lb = origin_len(b);
    return la && la == lb && strncasecmp(a, b, la) == 0;
}

static char *resolve_raw(const char *base, const char *ref);

/* RFC 3986 5.2.4 on the path of an absolute URL (query and fragment kept as they are). */
static char *remove_dot_segments(char *url)
{
    if (!url)
        return NULL;
    size_t ol = origin_len(url);
    char *path = url + ol;
    size_t plen = strcspn(path, "?#");
    char *out = malloc(plen + 2);
    if (!out) {
        free(url);
        return NULL;
    }
    size_t o = 0;
    const char *in = path, *end = path + plen;
    while (in < end) {
        if (end - in >= 3 && strncmp(in, "../", 3) == 0) {
            in += 3;
        } else if (end - in >= 2 && strncmp(in, "./", 2) == 0) {
            in += 2;
        } else if (end - in >= 3 && strncmp(in, "/./", 3) == 0) {
            in += 2;
        } else if (end - in == 2 && strncmp(in, "/.", 2) == 0) {
            in += 1;
            out[o++] = '/';
            in = end;
        } else if ((end - in >= 4 && strncmp(in, "/../", 4) == 0) ||
                   (end - in == 3 && strncmp(in, "/..", 3) == 0)) {
            int last = end - in == 3;
            in += 3;
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
            if (last) {
                out[o++] = '/';
                in = end;
            }
        } else if ((end - in == 1 && *in == '.') || (end - in == 2 && strncmp(in, "..", 2) == 0)) {
            in = end;
        } else {
            do {
                out[o++] = *in++;
            } while (in < end && *in != '/');
        }
    }
    out[o] = '\0';
    char *r = th_fmt("%.*s%s%s", (int)ol, url, out, path + plen);
    free(out);
    free(url);
    return r;
}

/* ref resolved against base (absolute, absolute-path, query-only or relative-path refs). */
static char *resolve_url(const char *base, const char *ref)
{
    char *resolved = resolve_raw(base, ref);
    return remove_dot_segments(resolved);
}

static char *resolve_raw(const char *base, const char *ref)
{
    if (origin_len(ref))
        return strdup(ref);
    size_t ol = origin_len(base);
    if (!ol)
        return strdup(ref);
    if (ref[0] == '/' && ref[1] == '/') {
        size_t sl = (size_t)(strstr(base, "://") - base);
        return th_fmt("%.*s:%s", (int)sl, base, ref);
    }
    if (ref[0] == '/')
        return th_fmt("%.*s%s", (int)ol, base, ref);
    /* path part of base, without query and fragment */
    size_t plen = strcspn(base + ol, "?#");
    if (ref[0] == '\0')
        return th_fmt("%.*s", (int)(ol + plen), base);
    if (ref[0] == '?')
        return th_fmt("%.*s%s", (int)(ol + plen), base, ref);
    if (ref[0] == '#')
        return th_fmt("%.*s%s", (int)(ol + plen), base, ref);
    /* relative path: drop the last segment of base's path */
    size_t dir = plen;
    while (dir > 0 && base[ol + dir - 1] != '/')
        dir--;
    if (dir == 0)
        return th_fmt("%.*s/%s", (int)ol, base, ref);
    return th_fmt("%.*s%s", (int)(ol + dir), base, ref);
}

/* ---- HTML form scraping --------------------------------------------------------------- */

typedef struct {
    char *name;
    char *value;
} attr_t;

#define MAX_ATTRS   32
#define MAX_FIELDS  64
#define MAX_SUBMITS 16

typedef struct {
    attr_t a[MAX_ATTRS];
    size_t n;
} tag_t;

typedef struct {
    char *action;     /* raw, entity-decoded */
    char *method;     /* lower case */
    sg_form_t fields; /* hidden inputs and other valued inputs, in order */
    struct {
        char *name;  /* may be NULL */
        char *value; /* may be NULL */
        char *label; /* value attribute of an <input>, inner text of a <button> */
    } submit[MAX_SUBMITS];
    size_t nsubmit;
    int has_pw;
    int has_username;
} form_t;

static void tag_free(tag_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->a[i].name);
        free(t->a[i].value);
    }
    t->n = 0;
}

static const char *tag_get(const tag_t *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcasecmp(t->a[i].name, name) == 0)
            return t->a[i].value ? t->a[i].value : "";
    return NULL;
}

static void form_free(form_t *f)
{
    free(f->action);
    free(f->method);
    sg_form_free(&f->fields);
    for (size_t i = 0; i < f->nsubmit; i++) {
        free(f->submit[i].name);
        free(f->submit[i].value);
        free(f->submit[i].label);
    }
    memset(f, 0, sizeof *f);
}

/* Appends the UTF-8 encoding of code point cp. */
static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the HTML entities of s[0..len) (named: amp quot apos lt gt; numeric: &#N; &#xH;). */
static char *entity_decode(const char *s, size_t len)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"quot", '"'}, {"apos", '\''}, {"lt", '<'}, {"gt", '>'}};
    char *out = malloc(len + 1); /* a decoded entity is never longer than its text */
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] != '&') {
            out[o++] = s[i++];
            continue;
        }
        const char *semi = memchr(s + i, ';', len - i);
        size_t elen = semi ? (size_t)(semi - (s + i)) - 1 : 0; /* between & and ; */
        int done = 0;
        if (semi && elen > 1 && elen < 10 && s[i + 1] == '#') {
            unsigned long cp = 0;
            int ok = 1;
            size_t k = i + 2;
            int hex = (s[k] == 'x' || s[k] == 'X');
            if (hex)
                k++;
            if (k >= (size_t)(semi - s))
                ok = 0;
            for (; ok && k < (size_t)(semi - s); k++) {
                int d = hex ? hexval((unsigned char)s[k])
                            : (isdigit((unsigned char)s[k]) ? s[k] - '0' : -1);
                if (d < 0)
                    ok = 0;
                else
                    cp = cp * (hex ? 16 : 10) + (unsigned long)d;
            }
            if (ok && cp > 0 && cp <= 0x10FFFF) { /* "&#N;" is 4+ bytes, UTF-8 at most 4 */
                o += put_utf8(out + o, cp);
                i = (size_t)(semi - s) + 1;
                done = 1;
            }
        } else if (semi && elen > 0) {
            for (size_t k = 0; k < sizeof named / sizeof named[0]; k++) {
                if (strlen(named[k].name) == elen && strncmp(s + i + 1, named[k].name, elen) == 0) {
                    out[o++] = named[k].c;
                    i = (size_t)(semi - s) + 1;
                    done = 1;
                    break;
                }
            }
        }
        if (!done)
            out[o++] = s[i++];
    }
    out[o] = '\0';
    return out;
}

/*
 * Parses the attributes of the tag whose name ends at p (p points just after the tag name)
 * up to its closing '>'. Returns a pointer after the '>' or NULL when the tag never closes.
 */
static const char *parse_attrs(const char *p, tag_t *t)
{
    t->n = 0;
    for (;;) {
        while (*p && (isspace((unsigned char)*p) || *p == '/'))
            p++;
        if (!*p)
            return NULL;
        if (*p == '>')
            return p + 1;
        const char *ns = p;
        while (*p && !isspace((unsigned char)*p) && *p != '=' && *p != '>' && *p != '/')
            p++;
        size_t nlen = (size_t)(p - ns);
        while (*p && isspace((unsigned char)*p))
            p++;
        char *value = NULL;
        if (*p == '=') {
            p++;
            while (*p && isspace((unsigned char)*p))
                p++;
            const char *vs;
            size_t vlen;
            if (*p == '"' || *p == '\'') {
                char q = *p++;
                vs = p;
                while (*p && *p != q)
                    p++;
                if (!*p)
                    return NULL;
                vlen = (size_t)(p - vs);
                p++;
            } else {
                vs = p;
                while (*p && !isspace((unsigned char)*p) && *p != '>')
                    p++;
                vlen = (size_t)(p - vs);
            }
            value = entity_decode(vs, vlen);
            if (!value)
                return NULL;
        }
        if (nlen == 0) { /* stray character: skip it */
            free(value);
            if (*p && *p != '>')
                p++;
            continue;
        }
        if (t->n >= MAX_ATTRS) {
            free(value);
            continue;
        }
        char *name = strndup(ns, nlen);
        if (!name) {
            free(value);
            return NULL;
        }
        t->a[t->n].name = name;
        t->a[t->n].value = value;
        t->n++;
    }
}

/* Case-insensitive search for needle in [s, end). */
static const char *find_ci(const char *s, const char *end, const char *needle)
{
    size_t nl = strlen(needle);
    for (; s + nl <= end; s++)
        if (strncasecmp(s, needle, nl) == 0)
            return s;
    return NULL;
}

/* Is the tag name at p (after '<') exactly name? */
static int tag_is(const char *p, const char *name)
{
    size_t nl = strlen(name);
    return strncasecmp(p, name, nl) == 0 &&
           (isspace((unsigned char)p[nl]) || p[nl] == '>' || p[nl] == '/');
}

/* Inner text of an element from p to its closing tag, tags stripped, trimmed, decoded. */
static char *inner_text(const char *p, const char *end)
{
    sg_buf_t b;
    sg_buf_init(&b, 4096);
    int in_tag = 0;
    for (; p < end; p++) {
        if (*p == '<')
            in_tag = 1;
        else if (*p == '>')
            in_tag = 0;
        else if (!in_tag && sg_buf_add(&b, p, 1))
            return NULL;
    }
    char *raw = sg_buf_steal(&b);
    if (!raw)
        return NULL;
    const char *s = raw;
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    char *out = entity_decode(s, len);
    free(raw);
    return out;
}

static int add_submit(form_t *f, const char *name, const char *value, char *label)
{
    if (f->nsubmit >= MAX_SUBMITS) {
        free(label);
        return 0;
    }
    size_t i = f->nsubmit;
    f->submit[i].name = name ? strdup(name) : NULL;
    f->submit[i].value = value ? strdup(value) : NULL;
    f->submit[i].label = label;
    if ((name && !f->submit[i].name) || (value && !f->submit[i].value) || !label) {
        free(f->submit[i].name);
        free(f->submit[i].value);
        free(label);
        f->submit[i].name = f->submit[i].value = f->submit[i].label = NULL;
        return -1;
    }
    f->nsubmit++;
    return 0;
}

/* Parses the form starting at the '<' of "<form"; *next is set after it. 0 on success. */
static int parse_form(const char *start, const char **next, form_t *f)
{
    memset(f, 0, sizeof *f);
    tag_t t = {.n = 0};
    const char *p = parse_attrs(start + 5, &t);
    if (!p) {
        tag_free(&t);
        return -1;
    }
    const char *action = tag_get(&t, "action");
    const char *method = tag_get(&t, "method");
    f->action = strdup(action ? action : "");
    f->method = strdup(method && *method ? method : "get");
    tag_free(&t);
    if (!f->action || !f->method)
        goto fail;
    for (char *m = f->method; *m; m++)
        *m = (char)tolower((unsigned char)*m);

    const char *end = find_ci(p, p + strlen(p), "</form");
    if (!end)
        end = p + strlen(p);
    *next = end;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt)
            break;
        if (strncmp(lt, "<!--", 4) == 0) {
            const char *ce = strstr(lt + 4, "-->");
            p = ce ? ce + 3 : end;
            continue;
        }
        if (tag_is(lt + 1, "input")) {
            const char *after = parse_attrs(lt + 6, &t);
            if (!after) {
                tag_free(&t);
                break;
            }
            const char *type = tag_get(&t, "type");
            const char *name = tag_get(&t, "name");
            const char *value = tag_get(&t, "value");
            if (!type)
                type = "text";
            int rc = 0;
            if (strcasecmp(type, "submit") == 0 || strcasecmp(type, "image") == 0) {
                char *label = strdup(value ? value : "");
                rc = add_submit(f, name, value, label);
            } else if (name &&
                       (strcasecmp(type, "checkbox") == 0 || strcasecmp(type, "radio") == 0)) {
                if (tag_get(&t, "checked"))
                    rc = sg_form_add(&f->fields, name, value ? value : "on") ? -1 : 0;
            } else if (name && strcasecmp(type, "button") != 0 && strcasecmp(type, "reset") != 0 &&
                       strcasecmp(type, "file") != 0) {
                if (strcmp(name, "pw") == 0 || strcasecmp(type, "password") == 0)
                    f->has_pw = 1;
                if (strcmp(name, "username") == 0)
                    f->has_username = 1;
                rc = sg_form_add(&f->fields, name, value ? value : "") ? -1 : 0;
            }
            tag_free(&t);
            if (rc)
                goto fail;
            p = after;
        } else if (tag_is(lt + 1, "button")) {
            const char *after = parse_attrs(lt + 7, &t);
            if (!after) {
                tag_free(&t);
                break;
            }
            const char *type = tag_get(&t, "type");
            const char *close = find_ci(after, end, "</button");
            const char *text_end = close ? close : end;
            if (!type || strcasecmp(type, "submit") == 0) {
                char *label = inner_text(after, text_end);
                if (add_submit(f, tag_get(&t, "name"), tag_get(&t, "value"), label)) {
                    tag_free(&t);
                    goto fail;
                }
            }
            tag_free(&t);
            p = close ? close + 1 : end;
        } else if (tag_is(lt + 1, "textarea")) {
            const char *after = parse_attrs(lt + 9, &t);
            if (!after) {
                tag_free(&t);
                break;
            }
            const char *close = find_ci(after, end, "</textarea");
            const char *name = tag_get(&t, "name");
            if (name) {
                char *text = entity_decode(after, (size_t)((close ? close : end) - after));
                int rc = !text || sg_form_add(&f->fields, name, text);
                free(text);
                if (rc) {
                    tag_free(&t);
                    goto fail;
                }
            }
            tag_free(&t);
            p = close ? close + 1 : end;
        } else {
            p = lt + 1;
        }
    }
    return 0;
fail:
    fprintf(stderr, "harness: out of memory parsing a form\n");
    form_free(f);
    return -1;
}

/* Is label (or value) the word want ("Allow"/"Deny"), ignoring case and spaces? */
static int label_is(const char *label, const char *want)
{
    if (!label)
        return 0;
    while (isspace((unsigned char)*label))
        label++;
    size_t wl = strlen(want);
    if (strncasecmp(label, want, wl) != 0)
        return 0;
    label += wl;
    while (isspace((unsigned char)*label))
        label++;
    return *label == '\0';
}

static int submit_index(const form_t *f, const char *want)
{
    for (size_t i = 0; i < f->nsubmit; i++)
        if (label_is(f->submit[i].label, want) || label_is(f->submit[i].value, want))
            return (int)i;
    return -1;
}

typedef enum { PAGE_OTHER, PAGE_LOGIN, PAGE_APPROVAL } page_kind;

/* Finds the login form (one with a pw field) or the form holding the wanted button. */
static page_kind scrape(const char *html, const char *button, form_t *out, int *submit)
{
    const char *p = html;
    *submit = -1;
    while (p && *p) {
        const char *start = strchr(p, '<');
        if (!start)
            break;
        if (strncmp(start, "<!--", 4) == 0) { /* a form in a comment is no form */
            const char *end = strstr(start + 4, "-->");
            p = end ? end + 3 : NULL;
            continue;
        }
        if (!tag_is(start + 1, "form")) {
            p = start + 1;
            continue;
        }
        form_t f;
        const char *next = NULL;
        if (parse_form(start, &next, &f))
            break;
        if (f.has_pw) {
            *out = f;
            *submit = f.nsubmit ? 0 : -1;
            return PAGE_LOGIN;
        }
        int idx = submit_index(&f, button);
        if (idx >= 0) {
            *out = f;
            *submit = idx;
            return PAGE_APPROVAL;
        }
        form_free(&f);
        p = next;
    }
    return PAGE_OTHER;
}

/* Serialises the form's fields, with username/pw replaced and the chosen submit added. */
static char *form_body(const form_t *f, int submit, const char *username, const char *password)
{
    sg_buf_t b;
    sg_buf_init(&b, BODY_MAX);
    int first = 1;
    int saw_user = 0, saw_pw = 0;
    for (size_t i = 0; i < f->fields.n + 3; i++) {
        const char *k, *v;
        if (i < f->fields.n) {
            k = f->fields.item[i].key;
            v = f->fields.item[i].value;
            if (username && strcmp(k, "username") == 0) {
                v = username;
                saw_user = 1;
            } else if (password && strcmp(k, "pw") == 0) {
                v = password;
                saw_pw = 1;
            }
        } else if (i == f->fields.n) {
            if (!username || saw_user)
                continue;
            k = "username";
            v = username;
        } else if (i == f->fields.n + 1) {
            if (!password || saw_pw)
                continue;
            k = "pw";
            v = password;
        } else {
            if (submit < 0 || !f->submit[submit].name)
                continue;
            k = f->submit[submit].name;
            v = f->submit[submit].value ? f->submit[submit].value : f->submit[submit].label;
        }
        char *ek = sg_url_encode(k), *ev = sg_url_encode(v ? v : "");
        int rc = !ek || !ev || sg_buf_printf(&b, "%s%s=%s", first ? "" : "&", ek, ev);
        free(ek);
        free(ev);
        if (rc) {
            sg_buf_free(&b);
            return NULL;
        }
        first = 0;
    }
    return sg_buf_steal(&b);
}

/* Submits form f (found on page_url) and puts the answer in *resp. */
static int submit_form(th_client_t *c, const char *page_url, const form_t *f, int submit,
                       const char *username, const char *password, th_resp_t *resp,
                       char **target_out)
{
    char *body = form_body(f, submit, username, password);
    char *target = resolve_url(page_url, f->action);
    int rc = -1;
    memset(resp, 0, sizeof *resp); /* th_http fills it; until then it is all zero */
    if (!body || !target) {
        fprintf(stderr, "harness: out of memory submitting a form\n");
        goto done;
    }
    if (strcmp(f->method, "post") == 0) {
        rc = th_post_form(c, target, body, resp);
    } else {
        size_t q = strcspn(target, "?#");
        char *url = th_fmt("%.*s?%s", (int)q, target, body);
        if (!url)
            goto done;
        free(target);
        target = url;
        rc = th_get(c, target, resp);
    }
done:
    free(body);
    if (rc == 0 && target_out) {
        *target_out = target;
        target = NULL;
    }
    free(target);
    return rc;
}

int th_browser_authorize(th_client_t *c, const char *authorize_url, const char *username,
                         const char *password, int approve, th_resp_t *final)
{
    th_client_t *own = NULL;
    memset(final, 0, sizeof *final);
    if (!c) {
        own = c = th_client_new();
        if (!c) {
            resp_empty(final);
            return -1;
        }
    }
    int result = -1;
    int logins = 0, approvals = 0;
    char *url = strdup(authorize_url);
    const char *button = approve ? "Allow" : "Deny";
    if (!url || th_get(c, url, final)) {
        if (!url)
            fprintf(stderr, "harness: out of memory\n");
        goto done;
    }
    for (int step = 0; step < FLOW_MAX_STEPS; step++) {
        if (final->status >= 300 && final->status < 400 && final->location) {
            char *next = resolve_url(url, final->location);
            if (!next) {
                fprintf(stderr, "harness: out of memory\n");
                goto done;
            }
            if (!same_origin(next, authorize_url)) {
                result = 0; /* left sfsim: final is the redirect to redirect_uri */
                free(next);
                goto done;
            }
            free(url);
            url = next;
            th_resp_free(final);
            if (th_get(c, url, final))
                goto done;
            continue;
        }
        if (final->status != 200) {
            fprintf(stderr, "harness: authorize flow stopped at HTTP %ld from %s:\n%.2000s\n",
                    final->status, url, final->body ? final->body : "");
            goto done;
        }
        form_t f;
        int submit = -1;
        page_kind kind = scrape(final->body, button, &f, &submit);
        if (kind == PAGE_OTHER) {
            fprintf(stderr,
                    "harness: page from %s has neither a login form nor a \"%s\" button:\n"
                    "%.2000s\n",
                    url, button, final->body);
            goto done;
        }
        if ((kind == PAGE_LOGIN && logins++) || (kind == PAGE_APPROVAL && approvals++)) {
            fprintf(stderr, "harness: the %s page came back a second time (from %s):\n%.2000s\n",
                    kind == PAGE_LOGIN ? "login" : "approval", url, final->body);
            form_free(&f);
            goto done;
        }
        th_resp_t next;
        char *target = NULL;
        int rc = kind == PAGE_LOGIN
                     ? submit_form(c, url, &f, submit, username, password, &next, &target)
                     : submit_form(c, url, &f, submit, NULL, NULL, &next, &target);
        form_free(&f);
        if (rc) {
            th_resp_free(final);
            *final = next;
            free(target);
            goto done;
        }
        th_resp_free(final);
        *final = next;
        free(url);
        url = target;
    }
    fprintf(stderr, "harness: authorize flow took more than %d steps\n", FLOW_MAX_STEPS);
done:
    /* the test may read final whatever happened: never leave NULL strings in it */
    if (!final->body)
        final->body = calloc(1, 1);
    if (!final->headers)
        final->headers = calloc(1, 1);
    free(url);
    th_client_free(own);
    return result;
}

/* ---- Salesforce flows ----------------------------------------------------------------- */

char *th_authorize_url(const char *base, const th_authz_t *a)
{
    sg_buf_t b;
    sg_buf_init(&b, BODY_MAX);
    char *cid = th_enc(a->client_id),
         *ru = th_enc(a->redirect_uri ? a->redirect_uri : TH_DEMO_CALLBACK);
    char *st = th_enc(a->state ? a->state : "st-123");
    char *sc = a->scope ? th_enc(a->scope) : NULL;
    char *no = a->nonce ? th_enc(a->nonce) : NULL;
    char *cc = a->code_challenge ? th_enc(a->code_challenge) : NULL;
    char *pr = a->prompt ? th_enc(a->prompt) : NULL;
    int bad = !cid || !ru || !st || (a->scope && !sc) || (a->nonce && !no) ||
              (a->code_challenge && !cc) || (a->prompt && !pr);
    if (!bad)
        bad = sg_buf_printf(&b,
                            "%s/services/oauth2/authorize?response_type=code&client_id=%s"
                            "&redirect_uri=%s&state=%s",
                            base, cid, ru, st) != SG_OK;
    if (!bad && sc)
        bad = sg_buf_printf(&b, "&scope=%s", sc) != SG_OK;
    if (!bad && no)
        bad = sg_buf_printf(&b, "&nonce=%s", no) != SG_OK;
    if (!bad && cc)
        bad = sg_buf_printf(&b, "&code_challenge=%s&code_challenge_method=S256", cc) != SG_OK;
    if (!bad && pr)
        bad = sg_buf_printf(&b, "&prompt=%s", pr) != SG_OK;
    if (!bad && a->extra)
        bad = sg_buf_adds(&b, a->extra) != SG_OK;
    free(cid);
    free(ru);
    free(st);
    free(sc);
    free(no);
    free(cc);
    free(pr);
    if (bad) {
        fprintf(stderr, "harness: out of memory building an authorize URL\n");
        sg_buf_free(&b);
        return NULL;
    }
    return sg_buf_steal(&b);
}

char *th_get_code(const char *base, const th_authz_t *a, const char *username, const char *password)
{
    char *url = th_authorize_url(base, a);
    if (!url)
        return NULL;
    th_client_t *c = th_client_new();
    char *code = NULL;
    th_resp_t final;
    memset(&final, 0, sizeof final);
    if (c && th_browser_authorize(c, url, username, password, 1, &final) == 0) {
        code = th_url_param(final.location, "code");
        if (!code) {
            fprintf(stderr, "harness: authorize for %s as %s ended without a code: %s\n",
                    a->client_id, username, final.location ? final.location : "(no Location)");
        }
    }
    th_resp_free(&final);
    th_client_free(c);
    free(url);
    return code;
}

/* POSTs a form to the token endpoint; returns the status and parses the body. */
static long token_call(const char *base, const char *form, cJSON **json)
{
    if (json)
        *json = NULL;
    char *url = th_fmt("%s/services/oauth2/token", base);
    if (!url)
        return 0;
    th_resp_t r;
    long status = 0;
    if (th_post_form(NULL, url, form, &r) == 0) {
        status = r.status;
        if (json) {
            *json = th_resp_json(&r);
            if (!*json)
                fprintf(stderr, "harness: token endpoint answered %ld with non-JSON: %.500s\n",
                        r.status, r.body);
        }
    }
    th_resp_free(&r);
    free(url);
    return status;
}

long th_exchange_code(const char *base, const char *client_id, const char *client_secret,
                      const char *code, const char *redirect_uri, const char *code_verifier,
                      cJSON **json)
{
    if (json)
        *json = NULL;
    char *ecode = th_enc(code), *ecid = th_enc(client_id);
    char *eru = th_enc(redirect_uri ? redirect_uri : TH_DEMO_CALLBACK);
    char *esec = client_secret ? th_enc(client_secret) : NULL;
    char *ever = code_verifier ? th_enc(code_verifier) : NULL;
    char *form = NULL;
    long status = 0;
    if (ecode && ecid && eru && (!client_secret || esec) && (!code_verifier || ever))
        form = th_fmt("grant_type=authorization_code&code=%s&client_id=%s&redirect_uri=%s"
                      "%s%s%s%s",
                      ecode, ecid, eru, esec ? "&client_secret=" : "", esec ? esec : "",
                      ever ? "&code_verifier=" : "", ever ? ever : "");
    if (form)
        status = token_call(base, form, json);
    else
        fprintf(stderr, "harness: out of memory\n");
    free(ecode);
    free(ecid);
    free(eru);
    free(esec);
    free(ever);
    free(form);
    return status;
}

long th_refresh(const char *base, const char *client_id, const char *client_secret,
                const char *refresh_token, cJSON **json)
{
    if (json)
        *json = NULL;
    char *ert = th_enc(refresh_token), *ecid = th_enc(client_id);
    char *esec = client_secret ? th_enc(client_secret) : NULL;
    char *form = NULL;
    long status = 0;
    if (ert && ecid && (!client_secret || esec))
        form = th_fmt("grant_type=refresh_token&refresh_token=%s&client_id=%s%s%s", ert, ecid,
                      esec ? "&client_secret=" : "", esec ? esec : "");
    if (form)
        status = token_call(base, form, json);
    else
        fprintf(stderr, "harness: out of memory\n");
    free(ert);
    free(ecid);
    free(esec);
    free(form);
    return status;
}

cJSON *th_authorize_and_exchange(const char *base, const char *client_id, const char *client_secret,
                                 const char *scope, const char *username, const char *password)
{
    th_authz_t a = {.client_id = client_id, .scope = scope};
    char *code = th_get_code(base, &a, username, password);
    if (!code)
        return NULL;
    cJSON *json = NULL;
    long status = th_exchange_code(base, client_id, client_secret, code, NULL, NULL, &json);
    free(code);
    if (status != 200) {
        char *text = json ? cJSON_PrintUnformatted(json) : NULL;
        fprintf(stderr, "harness: code exchange for %s as %s: HTTP %ld %s\n", client_id, username,
                status, text ? text : "");
        free(text);
        cJSON_Delete(json);
        return NULL;
    }
    return json;
}

/* ---- sfsim test-control API ----------------------------------------------------------- */

int th_sim_post(const char *base, const char *path_and_query)
{
    char *url = th_fmt("%s%s", base, path_and_query);
    if (!url)
        return -1;
    th_resp_t r;
    int rc = -1;
    if (th_http(NULL, "POST", url, "application/x-www-form-urlencoded", "", NULL, &r) == 0) {
        if (r.status == 200)
            rc = 0;
        else
            fprintf(stderr, "harness: POST %s: HTTP %ld %.500s\n", path_and_query, r.status,
                    r.body);
    }
    th_resp_free(&r);
    free(url);
    return rc;
}

cJSON *th_sim_get(const char *base, const char *path_and_query)
{
    char *url = th_fmt("%s%s", base, path_and_query);
    if (!url)
        return NULL;
    th_resp_t r;
    cJSON *json = NULL;
    if (th_get(NULL, url, &r) == 0) {
        if (r.status == 200)
            json = th_resp_json(&r);
        if (!json)
            fprintf(stderr, "harness: GET %s: HTTP %ld %.500s\n", path_and_query, r.status, r.body);
    }
    th_resp_free(&r);
    free(url);
    return json;
}

/* ---- the gateway stack ------------------------------------------------------------------ */

const char th_default_policy[] =
    "# The e2e tests' policy: the demo org's policy shape (tests/e2e/harness.h).\n"
    "version = 1;\n"
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
    "roles = {\n"
    "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\", "
    "\"offline_access\"]; };\n"
    "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"
    "  auditor = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "};\n"
    "assign = (\n"
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@demo.example\"]; },\n"
    "  { role = \"auditor\"; claim = \"custom_attributes.role\"; in = [\"admin\"]; },\n"
    "  { role = \"user\"; }\n"
    ");\n";

#define STACK_SIGNIN_ID     "demo-signin"
#define STACK_SIGNIN_SECRET "demo-signin-secret"
#define STACK_API_ID        "demo-api"
#define STACK_API_SECRET    "demo-api-secret"
#define STACK_LOG_TAIL      16384

int th_write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "harness: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "harness: cannot write %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    /* O_CREAT honours the umask; the mode asked for is the mode wanted. */
    if (fchmod(fd, mode) != 0 || close(fd) != 0) {
        fprintf(stderr, "harness: cannot finish %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

char *th_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "harness: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    sg_buf_t b;
    sg_buf_init(&b, (size_t)256 << 20);
    sg_rc rc = sg_buf_add_file(&b, f);
    fclose(f);
    if (rc != SG_OK) {
        fprintf(stderr, "harness: cannot read all of %s\n", path);
        sg_buf_free(&b);
        return NULL;
    }
    if (len)
        *len = b.len;
    return sg_buf_steal(&b);
}

/* A loopback socket bound to a free port and kept open (close-on-exec, so no child holds it),
 * so nothing else started meanwhile can take the port; -1 on failure. */
static int probe_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("harness: socket");
        return -1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        perror("harness: bind 127.0.0.1:0");
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int th_free_port(void)
{
    int port = -1;
    int fd = probe_port(&port);
    if (fd < 0)
        return -1;
    close(fd);
    return port;
}

/* A relative path setting made absolute against dir (sfsim resolves it against the config's
 * folder, and the copy lives elsewhere). */
static int absolutize_setting(config_setting_t *group, const char *name, const char *dir)
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

static int set_callback(config_setting_t *app, const char *callback)
{
    const char *client_id = NULL;
    if (!config_setting_lookup_string(app, "client_id", &client_id) ||
        (strcmp(client_id, STACK_SIGNIN_ID) != 0 && strcmp(client_id, STACK_API_ID) != 0))
        return 0;
    if (config_setting_get_member(app, "callbacks") && !config_setting_remove(app, "callbacks"))
        return -1;
    config_setting_t *list = config_setting_add(app, "callbacks", CONFIG_TYPE_ARRAY);
    return list && config_setting_set_string_elem(list, -1, callback) ? 0 : -1;
}

/* Writes to path a copy of $SFSIM_DEMO_CFG whose demo-signin and demo-api callbacks are
 * callback only. */
static int write_org_copy(const char *path, const char *callback)
{
    const char *src = getenv("SFSIM_DEMO_CFG");
    if (!src || !*src) {
        fprintf(stderr, "harness: SFSIM_DEMO_CFG is not set (meson's test_env sets it)\n");
        return -1;
    }
    char *src_copy = strdup(src);
    const char *dir = src_copy ? dirname(src_copy) : NULL;
    config_t cfg;
    config_init(&cfg);
    int rc = -1;
    if (!dir)
        goto done;
    if (!config_read_file(&cfg, src)) {
        fprintf(stderr, "harness: %s:%d: %s\n", src, config_error_line(&cfg),
                config_error_text(&cfg));
        goto done;
    }
    config_setting_t *apps = config_lookup(&cfg, "apps");
    int napps = apps ? config_setting_length(apps) : 0;
    for (int i = 0; i < napps; i++) {
        config_setting_t *app = config_setting_get_elem(apps, (unsigned)i);
        if (set_callback(app, callback) || absolutize_setting(app, "jwt_certificate", dir))
            goto done;
    }
    if (absolutize_setting(config_lookup(&cfg, "settings"), "key_file", dir))
        goto done;
    if (!config_write_file(&cfg, path)) {
        fprintf(stderr, "harness: cannot write %s\n", path);
        goto done;
    }
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "harness: could not write a copy of %s with the callback %s\n", src,
                callback);
    config_destroy(&cfg);
    free(src_copy);
    return rc;
}

char *th_stack_log(const th_stack_t *s)
{
    return th_proc_log(&s->gw);
}

/* Prints the end of the gateway's log, for a test that has to say why it failed. */
static void print_gateway_log(const th_stack_t *s, const char *why)
{
    char *log = th_stack_log(s);
    size_t len = log ? strlen(log) : 0;
    const char *from = len > STACK_LOG_TAIL ? log + len - STACK_LOG_TAIL : (log ? log : "");
    fprintf(stderr, "harness: %s; the gateway's stderr%s:\n%s\n", why,
            len > STACK_LOG_TAIL ? " (its end)" : "", from);
    free(log);
}

/* Starts $SCOPEGATE serve --config s->gw_cfg, its stderr appended to s->gw_log, and waits for
 * "scopegate listening on URL (internal URL)". */
static int gateway_spawn(th_stack_t *s)
{
    th_proc_t *p = &s->gw;
    memset(p, 0, sizeof *p);
    p->pid = -1;
    const char *exe = getenv("SCOPEGATE");
    if (!exe || !*exe) {
        fprintf(stderr, "harness: SCOPEGATE must name the gateway binary (meson's test_env "
                        "sets it)\n");
        return -1;
    }
    snprintf(p->log_path, sizeof p->log_path, "%s", s->gw_log);
    int logfd = open(s->gw_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0) {
        fprintf(stderr, "harness: cannot open %s: %s\n", s->gw_log, strerror(errno));
        return -1;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        perror("harness: pipe");
        close(logfd);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("harness: fork");
        close(pipefd[0]);
        close(pipefd[1]);
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(pipefd[1], STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0)
            _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            close(devnull);
        }
        execl(exe, exe, "serve", "--config", s->gw_cfg, (char *)NULL);
        dprintf(STDERR_FILENO, "harness: exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    close(logfd);
    p->pid = pid;

    char line[FIRST_LINE_MAX];
    static const char prefix[] = "scopegate listening on ";
    static const char internal[] = " (internal ";
    const char *pub = NULL, *in = NULL, *pub_end = NULL, *in_end = NULL;
    if (read_first_line(pipefd[0], line, sizeof line, START_TIMEOUT_MS) == 0 &&
        strncmp(line, prefix, sizeof prefix - 1) == 0) {
        pub = line + sizeof prefix - 1;
        pub_end = strstr(pub, internal);
        in = pub_end ? pub_end + sizeof internal - 1 : NULL;
        in_end = in ? strchr(in, ')') : NULL;
    }
    if (!in_end || pub_end - pub >= (long)sizeof p->url ||
        in_end - in >= (long)sizeof s->internal_url) {
        close(pipefd[0]);
        print_gateway_log(s, "the gateway did not start (expected the first stdout line "
                             "\"scopegate listening on URL (internal URL)\")");
        char keep[sizeof p->log_path];
        memcpy(keep, p->log_path, sizeof keep);
        p->log_path[0] = '\0'; /* the log is the stack's, not th_proc_stop's to remove */
        th_proc_stop(p);
        memcpy(p->log_path, keep, sizeof keep);
        return -1;
    }
    snprintf(p->url, sizeof p->url, "%.*s", (int)(pub_end - pub), pub);
    snprintf(s->internal_url, sizeof s->internal_url, "%.*s", (int)(in_end - in), in);
    remember_fd(pid, pipefd[0]);
    if (strcmp(p->url, s->url) != 0) {
        fprintf(stderr, "harness: the gateway listens on %s, expected %s (its listen key)\n",
                p->url, s->url);
        return -1;
    }
    return 0;
}

/* SIGTERM to the gateway; its exit status (see th_proc_stop). Keeps the log. */
static int gateway_stop(th_stack_t *s)
{
    if (s->gw.pid <= 0)
        return 0;
    char keep[sizeof s->gw.log_path];
    memcpy(keep, s->gw.log_path, sizeof keep);
    s->gw.log_path[0] = '\0';
    int status = th_proc_stop(&s->gw);
    memcpy(s->gw.log_path, keep, sizeof keep);
    if (status != 0)
        print_gateway_log(s, "the gateway did not exit 0 after SIGTERM");
    return status;
}

static int stack_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "harness: path %s/%s is too long\n", dir, name);
        return -1;
    }
    return 0;
}

int th_stack_start(th_stack_t *s, const char *policy_text)
{
    th_stack_opts_t o = {.policy = policy_text};
    return th_stack_start_opts(s, &o);
}

/* Did the gateway fail to start because its port was taken? Between the probe's close and
 * the gateway's bind another process may take the port; then the whole stack starts again. */
static int port_was_taken(const th_stack_t *s)
{
    if (!s->gw_log[0])
        return 0;
    char *log = th_stack_log(s);
    int taken = log && strstr(log, "cannot listen on") != NULL;
    free(log);
    return taken;
}

static int stack_try(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url,
                     int *retry);
/* The jwt app's and the integration's config text (appended section below). */
static int jwt_parts(const th_stack_t *s, const th_stack_opts_t *opts, char **app, char **integ);

/* Starts the stack; public_url NULL means the gateway's own URL. Retries a taken port. */
static int stack_start(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url)
{
    for (int attempt = 1;; attempt++) {
        int retry = 0;
        if (stack_try(s, opts, public_url, &retry) == 0)
            return 0;
        if (!retry || attempt == 3)
            return -1;
        fprintf(stderr, "harness: the gateway's port was taken meanwhile; starting again\n");
    }
}

int th_stack_start_opts(th_stack_t *s, const th_stack_opts_t *opts)
{
    return stack_start(s, opts, NULL);
}

static int stack_try(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url, int *retry)
{
    memset(s, 0, sizeof *s);
    s->sim.pid = s->gw.pid = -1;
    th_stack_opts_t none = {0};
    if (!opts)
        opts = &none;
    const char *tmp = getenv("TMPDIR");
    int probe = -1;
    char *callback = NULL, *gw_text = NULL, *path = NULL;
    char *jwt_app = NULL, *jwt_integ = NULL;
    int n = snprintf(s->dir, sizeof s->dir, "%s/sg-stack-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (n < 0 || (size_t)n >= sizeof s->dir || !mkdtemp(s->dir)) {
        fprintf(stderr, "harness: cannot make a temporary folder: %s\n", strerror(errno));
        s->dir[0] = '\0';
        return -1;
    }
    if (stack_path(s->gw_cfg, sizeof s->gw_cfg, s->dir, "gateway.cfg") ||
        stack_path(s->policy, sizeof s->policy, s->dir, "policy.cfg") ||
        stack_path(s->state_dir, sizeof s->state_dir, s->dir, "state") ||
        stack_path(s->db, sizeof s->db, s->state_dir, "scopegate.db") ||
        stack_path(s->sim_cfg, sizeof s->sim_cfg, s->dir, "org.cfg") ||
        stack_path(s->gw_log, sizeof s->gw_log, s->dir, "gw.log"))
        goto fail;

    probe = probe_port(&s->port);
    if (probe < 0)
        goto fail;
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
    if (!public_url)
        public_url = s->url;
    callback = th_fmt("%s/oauth/callback", public_url);
    if (!callback || write_org_copy(s->sim_cfg, callback) || th_sfsim_start(&s->sim, s->sim_cfg))
        goto fail;

    if (jwt_parts(s, opts, &jwt_app, &jwt_integ))
        goto fail;
    gw_text = th_fmt("# written by tests/e2e/harness.c\n"
                     "listen = \"127.0.0.1:%d\";\n"
                     "public_url = \"%s\";\n"
                     "internal_listen = \"127.0.0.1:0\";\n"
                     "policy_file = \"policy.cfg\";\n"
                     "state_dir = \"state\";\n"
                     "allow_http_issuer = true;\n"
                     "provider_timeout = \"%s\";\n"
                     "log_level = \"%s\";\n"
                     "apps = {\n"
                     "  signin = { issuer = \"%s\"; client_id = \"" STACK_SIGNIN_ID "\";\n"
                     "             client_secret_file = \"signin.secret\"; };\n"
                     "  api = { issuer = \"%s\"; client_id = \"" STACK_API_ID "\";\n"
                     "          client_secret_file = \"api.secret\"; };\n"
                     "%s"
                     "};\n%s%s%s",
                     s->port, public_url, opts->provider_timeout ? opts->provider_timeout : "2s",
                     opts->log_level ? opts->log_level : "debug", s->sim.url, s->sim.url,
                     jwt_app ? jwt_app : "", opts->extra_config ? opts->extra_config : "",
                     opts->extra_config ? "\n" : "", jwt_integ ? jwt_integ : "");
    if (!gw_text || th_write_file(s->gw_cfg, gw_text, 0600) ||
        th_write_file(s->policy, opts->policy ? opts->policy : th_default_policy, 0600))
        goto fail;
    path = th_fmt("%s/signin.secret", s->dir);
    if (!path || th_write_file(path, STACK_SIGNIN_SECRET "\n", 0600))
        goto fail;
    free(path);
    path = th_fmt("%s/api.secret", s->dir);
    if (!path || th_write_file(path, STACK_API_SECRET "\n", 0600))
        goto fail;

    close(probe); /* the gateway binds the port now */
    probe = -1;
    if (gateway_spawn(s))
        goto fail;
    free(callback);
    free(gw_text);
    free(path);
    free(jwt_app);
    free(jwt_integ);
    return 0;
fail:
    if (probe >= 0)
        close(probe);
    free(callback);
    free(gw_text);
    free(path);
    free(jwt_app);
    free(jwt_integ);
    *retry = port_was_taken(s);
    th_stack_stop(s);
    return -1;
}

int th_stack_restart_gateway(th_stack_t *s)
{
    if (gateway_stop(s) != 0) {
        fprintf(stderr, "harness: restart: the gateway did not exit 0 after SIGTERM\n");
        return -1;
    }
    return gateway_spawn(s);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "harness: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

int th_stack_stop(th_stack_t *s)
{
    int rc = 0;
    if (s->gw.pid > 0 && gateway_stop(s) != 0)
        rc = -1;
    if (s->sim.pid > 0 && th_proc_stop(&s->sim) != 0) {
        fprintf(stderr, "harness: sfsim did not exit 0 after SIGTERM\n");
        rc = -1;
    }
    if (s->dir[0]) {
        const char *keep = getenv("TH_KEEP_STACK");
        if (keep && *keep && strcmp(keep, "0") != 0)
            fprintf(stderr, "harness: kept the stack's folder %s\n", s->dir);
        else
            nftw(s->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        s->dir[0] = '\0';
    }
    s->gw.log_path[0] = '\0';
    return rc;
}

/* ---- the gateway's sign-in, as a browser does it ---------------------------------------- */

static int has_prefix(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

char *th_gateway_authorize(th_client_t *c, const th_stack_t *s, const char *rd, const char *user,
                           const char *password, th_resp_t *login_out)
{
    th_resp_t login, fin;
    memset(&login, 0, sizeof login);
    memset(&fin, 0, sizeof fin);
    char *erd = rd ? th_enc(rd) : NULL;
    char *url =
        rd ? (erd ? th_fmt("%s/login?rd=%s", s->url, erd) : NULL) : th_fmt("%s/login", s->url);
    char *authorize = th_fmt("%s/services/oauth2/authorize?", s->sim.url);
    char *callback = th_fmt("%s/oauth/callback?", s->url);
    char *result = NULL;
    if (!url || !authorize || !callback) {
        fprintf(stderr, "harness: out of memory\n");
        goto done;
    }
    if (th_get(c, url, &login))
        goto done;
    if (login.status != 302 || !has_prefix(login.location, authorize)) {
        fprintf(stderr, "harness: GET %s: expected 302 to %s..., got %ld (Location %s)\n%.1000s\n",
                url, authorize, login.status, login.location ? login.location : "none", login.body);
        goto done;
    }
    if (th_browser_authorize(c, login.location, user, password, 1, &fin)) {
        fprintf(stderr, "harness: the sign-in at sfsim as %s did not come back to the gateway\n",
                user);
        goto done;
    }
    if (!has_prefix(fin.location, callback)) {
        fprintf(stderr, "harness: sfsim sent the browser to %s, expected %s...\n",
                fin.location ? fin.location : "(nowhere)", callback);
        goto done;
    }
    result = strdup(fin.location);
done:
    if (login_out)
        *login_out = login;
    else
        th_resp_free(&login);
    th_resp_free(&fin);
    free(erd);
    free(url);
    free(authorize);
    free(callback);
    return result;
}

int th_gateway_signin(th_client_t *c, const th_stack_t *s, const char *rd, const char *user,
                      const char *password, th_resp_t *final)
{
    resp_empty(final);
    char *cb = th_gateway_authorize(c, s, rd, user, password, NULL);
    if (!cb)
        return -1;
    th_resp_free(final);
    int rc = th_get(c, cb, final);
    char *sid = rc == 0 ? th_resp_set_cookie(final, TH_SESSION_COOKIE) : NULL;
    if (rc == 0 && (final->status != 302 || !sid || !*sid)) {
        fprintf(stderr,
                "harness: the gateway's callback for %s: expected 302 with a %s cookie, got %ld "
                "(Location %s, %s)\n%.1500s\n",
                user, TH_SESSION_COOKIE, final->status, final->location ? final->location : "none",
                sid ? "cookie empty" : "no cookie", final->body);
        rc = -1;
    }
    free(sid);
    free(cb);
    return rc;
}

long th_gateway_status(th_client_t *c, const th_stack_t *s, const char *path)
{
    char *url = th_fmt("%s%s", s->url, path);
    if (!url)
        return 0;
    th_resp_t r;
    long status = th_get(c, url, &r) == 0 ? r.status : 0;
    th_resp_free(&r);
    free(url);
    return status;
}

/* ---- cookies and metrics ------------------------------------------------------------------ */

char *th_client_cookie(th_client_t *c, const char *name)
{
    if (!c || !name)
        return NULL;
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_COOKIEFILE, "");
    struct curl_slist *list = NULL;
    char *value = NULL;
    if (curl_easy_getinfo(h, CURLINFO_COOKIELIST, &list) == CURLE_OK) {
        /* Netscape format: domain, tailmatch, path, secure, expires, name, value (tabs). */
        for (struct curl_slist *it = list; it && !value; it = it->next) {
            const char *f = it->data;
            for (int i = 0; i < 5 && f; i++) {
                f = strchr(f, '\t');
                if (f)
                    f++;
            }
            if (!f)
                continue;
            const char *tab = strchr(f, '\t');
            if (!tab || (size_t)(tab - f) != strlen(name) || strncmp(f, name, strlen(name)) != 0)
                continue;
            value = strdup(tab + 1);
        }
    }
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
    return value;
}

char *th_resp_set_cookie(const th_resp_t *r, const char *name)
{
    if (!r || !r->headers || !name)
        return NULL;
    static const char hname[] = "Set-Cookie:";
    size_t nl = strlen(name);
    const char *line = r->headers;
    while (*line) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            eol = line + strlen(line);
        if ((size_t)(eol - line) > sizeof hname - 1 &&
            strncasecmp(line, hname, sizeof hname - 1) == 0) {
            const char *v = line + sizeof hname - 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            if ((size_t)(eol - v) > nl && strncmp(v, name, nl) == 0 && v[nl] == '=') {
                const char *val = v + nl + 1;
                const char *end = val;
                while (end < eol && *end != ';')
                    end++;
                while (end > val && (end[-1] == ' ' || end[-1] == '\t'))
                    end--;
                return strndup(val, (size_t)(end - val));
            }
        }
        line = *eol ? eol + 2 : eol;
    }
    return NULL;
}

double th_metric(const char *text, const char *name, const char *const *labels)
{
    double sum = -1;
    size_t nl = strlen(name);
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            eol = line + strlen(line);
        if (*line != '#' && (size_t)(eol - line) > nl && strncmp(line, name, nl) == 0 &&
            (line[nl] == '{' || line[nl] == ' ')) {
            const char *lab = line + nl, *lab_end = lab;
            if (*lab == '{') {
                lab_end = memchr(lab, '}', (size_t)(eol - lab));
                if (!lab_end)
                    lab_end = lab;
            }
            int match = 1;
            for (size_t i = 0; labels && labels[i] && match; i++) {
                size_t ll = strlen(labels[i]);
                match = 0;
                for (const char *p = lab; p + ll <= lab_end && !match; p++)
                    match = strncmp(p, labels[i], ll) == 0;
            }
            if (match) {
                const char *v = lab_end == lab ? lab : lab_end + 1;
                char *end = NULL;
                double d = strtod(v, &end);
                if (end && end != v)
                    sum = (sum < 0 ? 0 : sum) + d;
            }
        }
        line = *eol ? eol + 1 : eol;
    }
    return sum;
}

/* ---- a stack behind a reverse proxy --------------------------------------------------------- */

int th_stack_start_public(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url)
{
    if (!public_url || strncmp(public_url, "http", 4) != 0 ||
        public_url[strlen(public_url) - 1] == '/') {
        memset(s, 0, sizeof *s);
        s->sim.pid = s->gw.pid = -1;
        fprintf(stderr, "harness: public_url must be an http(s) URL without a trailing slash\n");
        return -1;
    }
    return stack_start(s, opts, public_url);
}

/* ---- the vault's tests ------------------------------------------------------- */

static int jwt_parts(const th_stack_t *s, const th_stack_opts_t *opts, char **app, char **integ)
{
    *app = *integ = NULL;
    if (!opts->jwt_integration)
        return 0;
    const char *demo = getenv("SFSIM_DEMO_CFG");
    char *demo_copy = demo ? strdup(demo) : NULL;
    char *secret = th_fmt("%s/jwt.secret", s->dir);
    int rc = -1;
    if (!demo_copy || !secret) {
        fprintf(stderr, "harness: SFSIM_DEMO_CFG is not set (it names jwt-demo.key's folder)\n");
        goto done;
    }
    if (th_write_file(secret, "demo-jwt-secret\n", 0600))
        goto done;
    *app = th_fmt("  jwt = { issuer = \"%s\"; client_id = \"demo-jwt\";\n"
                  "          client_secret_file = \"jwt.secret\"; };\n",
                  s->sim.url);
    *integ = th_fmt("integrations = {\n"
                    "  %s = { app = \"jwt\"; username = \"%s\"; org_id = \"" TH_DEMO_ORG_ID "\";\n"
                    "         private_key_file = \"%s/jwt-demo.key\"; };\n"
                    "};\n",
                    opts->jwt_integration, opts->jwt_username ? opts->jwt_username : TH_ADMIN,
                    dirname(demo_copy));
    rc = *app && *integ ? 0 : -1;
done:
    if (rc) {
        free(*app);
        free(*integ);
        *app = *integ = NULL;
    }
    free(demo_copy);
    free(secret);
    return rc;
}

int th_stack_kill_gateway(th_stack_t *s)
{
    if (s->gw.pid <= 0) {
        fprintf(stderr, "harness: kill: the gateway is not running\n");
        return -1;
    }
    pid_t pid = s->gw.pid;
    int status = 0;
    kill(pid, SIGKILL);
    int w = wait_for(pid, &status, STOP_TIMEOUT_MS);
    forget_fd(pid);
    s->gw.pid = -1;
    if (w != 1 || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "harness: kill: the gateway (pid %d) did not die from SIGKILL\n", (int)pid);
        return -1;
    }
    return 0;
}

int th_stack_crash_restart_gateway(th_stack_t *s)
{
    if (th_stack_kill_gateway(s))
        return -1;
    return gateway_spawn(s);
}

char *th_stack_internal_key(const th_stack_t *s)
{
    char *path = th_fmt("%s/internal.key", s->state_dir);
    char *key = path ? th_read_file(path, NULL) : NULL;
    free(path);
    if (!key)
        return NULL;
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r' || key[n - 1] == ' '))
        key[--n] = '\0';
    return key;
}

char *th_html_link(const char *html, const char *href_prefix)
{
    size_t plen = strlen(href_prefix);
    for (const char *p = html ? strchr(html, '<') : NULL; p; p = strchr(p + 1, '<')) {
        if (!tag_is(p + 1, "a"))
            continue;
        tag_t t = {.n = 0};
        if (!parse_attrs(p + 2, &t))
            return NULL;
        const char *href = tag_get(&t, "href");
        char *found = href && strncmp(href, href_prefix, plen) == 0 ? strdup(href) : NULL;
        tag_free(&t);
        if (found)
            return found;
    }
    return NULL;
}

char *th_html_form(const char *html, const char *action)
{
    const char *p = html;
    while (p && *p) {
        const char *start = strchr(p, '<');
        if (!start)
            break;
        if (strncmp(start, "<!--", 4) == 0) {
            const char *end = strstr(start + 4, "-->");
            p = end ? end + 3 : NULL;
            continue;
        }
        if (!tag_is(start + 1, "form")) {
            p = start + 1;
            continue;
        }
        form_t f;
        const char *next = NULL;
        if (parse_form(start, &next, &f))
            return NULL;
        if (strcmp(f.action, action) == 0) {
            char *body = form_body(&f, -1, NULL, NULL);
            form_free(&f);
            return body;
        }
        form_free(&f);
        p = next;
    }
    return NULL;
}
