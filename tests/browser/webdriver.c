/*
 * The WebDriver client of webdriver.h: chromedriver's process, its temp folder, and the few
 * W3C commands the browser tests use (https://www.w3.org/TR/webdriver2/).
 */
#include "webdriver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "scopegate/buf.h"
#include "scopegate/crypto.h"

extern char **environ;

#define READY_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS  5000
#define CALL_TIMEOUT_S   30
#define STATUS_TIMEOUT_S 2
#define RESPONSE_MAX     (64u << 20) /* a screenshot or a page source */
#define START_ATTEMPTS   3           /* the free port may be taken before chromedriver binds it */
#define PAGE_LOAD_MS     15000
#define SCRIPT_MS        5000
#define ELEMENT_KEY      "element-6066-11e4-a52e-4f735466cecf" /* W3C web element identifier */
#define LOG_TAIL         4000
#define STR_(x)          #x
#define STR(x)           STR_(x)

struct wd_driver {
    pid_t pid; /* chromedriver, -1 once reaped */
    char base[64];
    char dir[PATH_MAX / 4];             /* everything the browser writes lives under it */
    char tmpdir_env[PATH_MAX / 4 + 16]; /* "TMPDIR=<dir>/tmp" */
    char log_path[PATH_MAX / 4 + 32];
    CURL *curl;
    char *session;
    pid_t browser_pid; /* goog:processID of the session's browser, 0 when unknown */
    char profile[PATH_MAX / 4 + 32];
    unsigned nsessions;
    int emulated_width; /* wd_set_viewport's width, 0 for the desktop window */
};

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

/* ---- the temp folder ----------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) < 0 && errno != ENOENT)
        fprintf(stderr, "webdriver: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_tree(const char *path)
{
    if (path[0])
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int make_dirs(wd_driver_t *d)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    int n = snprintf(d->dir, sizeof d->dir, "%s/sg-browser-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof d->dir) {
        fprintf(stderr, "webdriver: TMPDIR too long\n");
        d->dir[0] = '\0';
        return -1;
    }
    if (!mkdtemp(d->dir)) {
        fprintf(stderr, "webdriver: mkdtemp %s: %s\n", d->dir, strerror(errno));
        d->dir[0] = '\0';
        return -1;
    }
    static const char *const subdirs[] = {"xdg-config", "xdg-cache", "tmp"};
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        char path[sizeof d->dir + 32];
        snprintf(path, sizeof path, "%s/%s", d->dir, subdirs[i]);
        if (mkdir(path, 0700) < 0) {
            fprintf(stderr, "webdriver: mkdir %s: %s\n", path, strerror(errno));
            return -1;
        }
    }
    snprintf(d->tmpdir_env, sizeof d->tmpdir_env, "TMPDIR=%s/tmp", d->dir);
    snprintf(d->log_path, sizeof d->log_path, "%s/chromedriver.log", d->dir);
    return 0;
}

/* The end of chromedriver's log, for failure messages. */
static void print_log_tail(const wd_driver_t *d)
{
    FILE *f = fopen(d->log_path, "r");
    if (!f)
        return;
    char buf[LOG_TAIL + 1];
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        fseek(f, size > LOG_TAIL ? size - LOG_TAIL : 0, SEEK_SET);
    }
    size_t n = fread(buf, 1, LOG_TAIL, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "webdriver: end of chromedriver's log (%s):\n%s\n", d->log_path, buf);
}

/* ---- processes ------------------------------------------------------------------------ */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("webdriver: socket");
        return -1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    else
        perror("webdriver: bind 127.0.0.1:0");
    close(fd);
    return port;
}

/* Our environment with Chromium's writable places moved into the temp folder. Built before
 * fork: the child of a threaded process may only call async-signal-safe functions. */
static char **child_env(const wd_driver_t *d)
{
    static const char *const moved[] = {"XDG_CONFIG_HOME=", "XDG_CACHE_HOME=", "TMPDIR="};
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 4, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int skip = 0;
        for (size_t m = 0; m < sizeof moved / sizeof moved[0]; m++)
            skip |= strncmp(environ[i], moved[m], strlen(moved[m])) == 0;
        if (!skip)
            env[k++] = environ[i];
    }
    char *cfg = malloc(strlen(d->dir) + 64), *cache = malloc(strlen(d->dir) + 64);
    char *tmp = strdup(d->tmpdir_env);
    if (!cfg || !cache || !tmp) {
        free(cfg);
        free(cache);
        free(tmp);
        free(env);
        return NULL;
    }
    sprintf(cfg, "XDG_CONFIG_HOME=%s/xdg-config", d->dir);
    sprintf(cache, "XDG_CACHE_HOME=%s/xdg-cache", d->dir);
    env[k++] = cfg;
    env[k++] = cache;
    env[k++] = tmp;
    env[k] = NULL;
    return env;
}

static void child_env_free(char **env)
{
    if (!env)
        return;
    size_t k = 0;
    while (env[k])
        k++;
    for (size_t i = k >= 3 ? k - 3 : 0; i < k; i++)
        free(env[i]); /* only the three we added are ours */
    free(env);
}

static int spawn(wd_driver_t *d, int port)
{
    char port_arg[32];
    snprintf(port_arg, sizeof port_arg, "--port=%d", port);
    char *argv[] = {WD_CHROMEDRIVER, port_arg, NULL};
    char **env = child_env(d);
    if (!env) {
        fprintf(stderr, "webdriver: out of memory\n");
        return -1;
    }
    int logfd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0) {
        fprintf(stderr, "webdriver: open %s: %s\n", d->log_path, strerror(errno));
        child_env_free(env);
        return -1;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("webdriver: fork");
        close(logfd);
        child_env_free(env);
        return -1;
    }
    if (pid == 0) {
        /* chromedriver dies with the test; Chromium dies with chromedriver (the pipe). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(125);
        /* The folder marks every process of ours: see our_processes. */
        int devnull = open("/dev/null", O_RDONLY);
        if (chdir(d->dir) < 0 || devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 ||
            dup2(logfd, STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0)
            _exit(126);
        execve(WD_CHROMEDRIVER, argv, env);
        _exit(127);
    }
    close(logfd);
    child_env_free(env);
    d->pid = pid;
    snprintf(d->base, sizeof d->base, "http://127.0.0.1:%d", port);
    return 0;
}

/* Waits up to timeout_ms for pid; 1 when reaped (*status set), 0 when still running. */
static int reap(pid_t pid, int *status, long timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return 1;
        if (now_ms() >= deadline)
            return 0;
        sleep_ms(10);
    }
}

/* Is pid running (not a zombie, not gone)? */
static int running(pid_t pid)
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

/*
 * Running processes (not zombies) whose working directory is our temp folder: chromedriver
 * starts there and every Chromium process inherits it. (The environment would not do: the
 * zygote and its children overwrite theirs with their process title.) Fills up to max pids;
 * returns how many there are.
 */
static int our_processes(const wd_driver_t *d, pid_t *pids, int max)
{
    DIR *proc = opendir("/proc");
    if (!proc)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == getpid() || !running((pid_t)pid))
            continue;
        char path[64], cwd[sizeof d->dir + 1];
        snprintf(path, sizeof path, "/proc/%ld/cwd", pid);
        ssize_t len = readlink(path, cwd, sizeof cwd - 1);
        if (len <= 0)
            continue;
        cwd[len] = '\0';
        if (strcmp(cwd, d->dir) == 0) {
            if (n < max)
                pids[n] = (pid_t)pid;
            n++;
        }
    }
    closedir(proc);
    return n;
}

/* Waits for every process we started to end; SIGKILLs stragglers. 0 when none was left. */
static int no_leftovers(const wd_driver_t *d, long timeout_ms)
{
    pid_t pids[64];
    long deadline = now_ms() + timeout_ms;
    int n;
    while ((n = our_processes(d, pids, 64)) > 0 && now_ms() < deadline)
        sleep_ms(20);
    if (n == 0)
        return 0;
    fprintf(stderr, "webdriver: %d browser process(es) still running after %ld ms; killing:", n,
            timeout_ms);
    for (int i = 0; i < n && i < 64; i++) {
        fprintf(stderr, " %d", (int)pids[i]);
        kill(pids[i], SIGKILL);
    }
    fprintf(stderr, "\n");
    return -1;
}

/* ---- HTTP + JSON ----------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    return sg_buf_add(ud, data, size * nmemb) == SG_OK ? size * nmemb : 0;
}

/*
 * One command. body NULL sends "{}" on POST. Returns 0 on HTTP 200 with a JSON object
 * (*value then owns its "value" member, possibly JSON null). On failure prints the command
 * and WebDriver's error unless quiet; *status gets the HTTP status (0: no answer).
 */
static int request(wd_driver_t *d, const char *method, const char *path, const cJSON *body,
                   cJSON **value, long timeout_s, int quiet)
{
    if (value)
        *value = NULL;
    char url[512];
    int n = snprintf(url, sizeof url, "%s%s", d->base, path);
    char *json = body ? cJSON_PrintUnformatted(body) : NULL;
    if (n < 0 || (size_t)n >= sizeof url || (body && !json)) {
        fprintf(stderr, "webdriver: %s %s: URL too long or out of memory\n", method, path);
        free(json);
        return -1;
    }
    sg_buf_t resp;
    sg_buf_init(&resp, RESPONSE_MAX);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *c = d->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json ? json : "{}");
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    free(json);

    int rc = -1;
    cJSON *root = cc == CURLE_OK && resp.ptr ? cJSON_Parse(resp.ptr) : NULL;
    cJSON *v = root ? cJSON_GetObjectItemCaseSensitive(root, "value") : NULL;
    if (cc != CURLE_OK) {
        if (!quiet)
            fprintf(stderr, "webdriver: %s %s: %s\n", method, path, curl_easy_strerror(cc));
    } else if (status != 200 || !v) {
        if (!quiet) {
            cJSON *err = v ? cJSON_GetObjectItemCaseSensitive(v, "error") : NULL;
            cJSON *msg = v ? cJSON_GetObjectItemCaseSensitive(v, "message") : NULL;
            fprintf(stderr, "webdriver: %s %s: expected HTTP 200 {\"value\":...}, got HTTP %ld ",
                    method, path, status);
            if (cJSON_IsString(err))
                fprintf(stderr, "%s: %.600s\n", err->valuestring,
                        cJSON_IsString(msg) ? msg->valuestring : "");
            else
                fprintf(stderr, "%.600s\n", resp.ptr ? resp.ptr : "(empty body)");
        }
    } else {
        if (value)
            *value = cJSON_DetachItemViaPointer(root, v);
        rc = 0;
    }
    cJSON_Delete(root);
    sg_buf_free(&resp);
    return rc;
}

static int call(wd_driver_t *d, const char *method, const char *path, const cJSON *body,
                cJSON **value)
{
    return request(d, method, path, body, value, CALL_TIMEOUT_S, 0);
}

/* "/session/ID" + part1 + element + part2 into out; -1 (after a message) without a session.
 * element may be NULL (then part2 must be too). */
static int session_path(const wd_driver_t *d, char *out, size_t cap, const char *part1,
                        const char *element, const char *part2)
{
    if (!d || !d->session) {
        fprintf(stderr, "webdriver: no browser session\n");
        return -1;
    }
    int n = snprintf(out, cap, "/session/%s%s%s%s", d->session, part1, element ? element : "",
                     part2 ? part2 : "");
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "webdriver: command path too long\n");
        return -1;
    }
    return 0;
}

/* A GET on the session whose "value" is a string: that string (heap) or NULL. */
static char *string_command(wd_driver_t *d, const char *part1, const char *element,
                            const char *part2)
{
    char path[512];
    cJSON *v = NULL;
    if (session_path(d, path, sizeof path, part1, element, part2) || call(d, "GET", path, NULL, &v))
        return NULL;
    char *s = cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
    if (!s)
        fprintf(stderr, "webdriver: GET %s: expected a string value\n", path);
    cJSON_Delete(v);
    return s;
}

/* ---- the driver ------------------------------------------------------------------------ */

static int wait_ready(wd_driver_t *d, int *exited)
{
    long deadline = now_ms() + READY_TIMEOUT_MS;
    *exited = 0;
    while (now_ms() < deadline) {
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = -1;
            *exited = 1;
            return -1;
        }
        cJSON *v = NULL;
        if (request(d, "GET", "/status", NULL, &v, STATUS_TIMEOUT_S, 1) == 0) {
            int ready = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "ready"));
            cJSON_Delete(v);
            if (ready)
                return 0;
        }
        sleep_ms(50);
    }
    fprintf(stderr, "webdriver: chromedriver at %s not ready within %d ms\n", d->base,
            READY_TIMEOUT_MS);
    return -1;
}

static int stop_chromedriver(wd_driver_t *d)
{
    if (d->pid <= 0)
        return 0;
    int status = 0, rc = 0;
    kill(d->pid, SIGTERM);
    if (!reap(d->pid, &status, STOP_TIMEOUT_MS)) {
        fprintf(stderr, "webdriver: chromedriver (pid %d) ignored SIGTERM; killing it\n",
                (int)d->pid);
        kill(d->pid, SIGKILL);
        reap(d->pid, &status, STOP_TIMEOUT_MS);
        rc = -1;
    }
    d->pid = -1;
    return rc;
}

int wd_start(wd_driver_t **out)
{
    *out = NULL;
    static const char *const need[] = {WD_CHROMEDRIVER, WD_CHROMIUM};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if (access(need[i], X_OK) != 0) {
            fprintf(stderr,
                    "webdriver: %s is missing (%s): the browser tests need the Debian packages "
                    "chromium and chromium-driver; scripts/test installs them (or run "
                    "`apt-get install -y chromium chromium-driver` as root)\n",
                    need[i], strerror(errno));
            return -1;
        }
    }
    wd_driver_t *d = calloc(1, sizeof *d);
    if (!d) {
        fprintf(stderr, "webdriver: out of memory\n");
        return -1;
    }
    d->pid = -1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "webdriver: curl_global_init failed\n");
        free(d);
        return -1;
    }
    d->curl = curl_easy_init();
    if (!d->curl) {
        fprintf(stderr, "webdriver: curl_easy_init failed\n");
        curl_global_cleanup();
        free(d);
        return -1;
    }
    if (make_dirs(d))
        goto fail;
    for (int attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        int port = free_port(), exited = 0;
        if (port < 0 || spawn(d, port))
            goto fail;
        if (wait_ready(d, &exited) == 0) {
            *out = d;
            return 0;
        }
        if (!exited)
            goto fail;
        fprintf(stderr, "webdriver: chromedriver exited before it was ready on port %d%s\n", port,
                attempt < START_ATTEMPTS ? "; trying another port" : "");
    }
fail:
    print_log_tail(d);
    wd_stop(d);
    return -1;
}

int wd_stop(wd_driver_t *d)
{
    if (!d)
        return 0;
    int rc = 0;
    if (d->session && wd_session_delete(d))
        rc = -1;
    if (stop_chromedriver(d))
        rc = -1;
    if (d->dir[0] && no_leftovers(d, STOP_TIMEOUT_MS))
        rc = -1;
    rm_tree(d->dir);
    curl_easy_cleanup(d->curl);
    curl_global_cleanup();
    free(d->session);
    free(d);
    return rc;
}

/* ---- sessions --------------------------------------------------------------------------- */

/* {"capabilities":{"alwaysMatch":{...}}} for a headless Chromium on profile; NULL: no memory. */
static cJSON *capabilities(const char *profile)
{
    char dir_arg[sizeof((wd_driver_t *)0)->profile + 32];
    snprintf(dir_arg, sizeof dir_arg, "--user-data-dir=%s", profile);
    const char *args[] = {
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        /* A desktop window whatever the headless default is; wd_clear_viewport returns to it. */
        "--window-size=" STR(WD_WINDOW_WIDTH) "," STR(WD_WINDOW_HEIGHT),
        /* DevTools over a pipe: Chromium exits when chromedriver does, however it ends. */
        "--remote-debugging-pipe", dir_arg};
    cJSON *root = cJSON_CreateObject();
    cJSON *caps = root ? cJSON_AddObjectToObject(root, "capabilities") : NULL;
    cJSON *always = caps ? cJSON_AddObjectToObject(caps, "alwaysMatch") : NULL;
    cJSON *chrome = always ? cJSON_AddObjectToObject(always, "goog:chromeOptions") : NULL;
    cJSON *timeouts = always ? cJSON_AddObjectToObject(always, "timeouts") : NULL;
    /* Without it chromedriver keeps no console messages for wd_browser_log. */
    cJSON *logging = always ? cJSON_AddObjectToObject(always, "goog:loggingPrefs") : NULL;
    cJSON *list = cJSON_CreateStringArray(args, (int)(sizeof args / sizeof args[0]));
    if (!chrome || !timeouts || !logging || !list || !cJSON_AddItemToObject(chrome, "args", list)) {
        cJSON_Delete(list);
        cJSON_Delete(root);
        return NULL;
    }
    if (!cJSON_AddStringToObject(always, "browserName", "chrome") ||
        !cJSON_AddStringToObject(chrome, "binary", WD_CHROMIUM) ||
        !cJSON_AddStringToObject(logging, "browser", "ALL") ||
        !cJSON_AddNumberToObject(timeouts, "implicit", WD_IMPLICIT_MS) ||
        !cJSON_AddNumberToObject(timeouts, "pageLoad", PAGE_LOAD_MS) ||
        !cJSON_AddNumberToObject(timeouts, "script", SCRIPT_MS)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int wd_session_new(wd_driver_t *d)
{
    if (d->session) {
        fprintf(stderr, "webdriver: a session is already open\n");
        return -1;
    }
    snprintf(d->profile, sizeof d->profile, "%s/profile-%u", d->dir, ++d->nsessions);
    if (mkdir(d->profile, 0700) < 0) {
        fprintf(stderr, "webdriver: mkdir %s: %s\n", d->profile, strerror(errno));
        d->profile[0] = '\0';
        return -1;
    }
    cJSON *body = capabilities(d->profile);
    cJSON *v = NULL;
    if (!body) {
        fprintf(stderr, "webdriver: out of memory\n");
        return -1;
    }
    int rc = call(d, "POST", "/session", body, &v);
    cJSON_Delete(body);
    if (rc) {
        print_log_tail(d);
        return -1;
    }
    cJSON *id = cJSON_GetObjectItemCaseSensitive(v, "sessionId");
    cJSON *caps = cJSON_GetObjectItemCaseSensitive(v, "capabilities");
    cJSON *pid = cJSON_GetObjectItemCaseSensitive(caps, "goog:processID");
    d->session = cJSON_IsString(id) ? strdup(id->valuestring) : NULL;
    d->browser_pid = cJSON_IsNumber(pid) ? (pid_t)pid->valuedouble : 0;
    cJSON_Delete(v);
    if (!d->session) {
        fprintf(stderr, "webdriver: POST /session: no sessionId in the answer\n");
        return -1;
    }
    return 0;
}

int wd_session_delete(wd_driver_t *d)
{
    if (!d || !d->session)
        return 0;
    char path[512];
    int rc = session_path(d, path, sizeof path, "", NULL, NULL)
                 ? -1
                 : call(d, "DELETE", path, NULL, NULL);
    free(d->session);
    d->session = NULL;
    d->emulated_width = 0;
    /* The profile may be removed only once the browser has let go of it. */
    long deadline = now_ms() + STOP_TIMEOUT_MS;
    while (d->browser_pid > 0 && running(d->browser_pid) && now_ms() < deadline)
        sleep_ms(20);
    if (d->browser_pid > 0 && running(d->browser_pid)) {
        fprintf(stderr,
                "webdriver: the browser (pid %d) still runs %d ms after its session "
                "was deleted\n",
                (int)d->browser_pid, STOP_TIMEOUT_MS);
        rc = -1;
    }
    d->browser_pid = 0;
    rm_tree(d->profile);
    d->profile[0] = '\0';
    return rc;
}

/* ---- commands ---------------------------------------------------------------------------- */

int wd_navigate(wd_driver_t *d, const char *url)
{
    char path[512];
    cJSON *body = cJSON_CreateObject();
    int rc = -1;
    if (body && cJSON_AddStringToObject(body, "url", url) &&
        session_path(d, path, sizeof path, "/url", NULL, NULL) == 0)
        rc = call(d, "POST", path, body, NULL);
    else if (!body)
        fprintf(stderr, "webdriver: out of memory\n");
    cJSON_Delete(body);
    if (rc)
        fprintf(stderr, "webdriver: could not load %s\n", url);
    return rc;
}

char *wd_find(wd_driver_t *d, const char *css)
{
    char path[512];
    cJSON *body = cJSON_CreateObject(), *v = NULL;
    char *id = NULL;
    if (body && cJSON_AddStringToObject(body, "using", "css selector") &&
        cJSON_AddStringToObject(body, "value", css) &&
        session_path(d, path, sizeof path, "/element", NULL, NULL) == 0 &&
        call(d, "POST", path, body, &v) == 0) {
        cJSON *ref = cJSON_GetObjectItemCaseSensitive(v, ELEMENT_KEY);
        id = cJSON_IsString(ref) ? strdup(ref->valuestring) : NULL;
    }
    cJSON_Delete(body);
    cJSON_Delete(v);
    if (!id && d && d->session) {
        char *url = wd_current_url(d), *title = wd_title(d);
        fprintf(stderr,
                "webdriver: expected an element matching \"%s\" within %d ms on %s "
                "(title \"%s\"); found none\n",
                css, WD_IMPLICIT_MS, url ? url : "?", title ? title : "?");
        free(url);
        free(title);
    }
    return id;
}

int wd_count(wd_driver_t *d, const char *css)
{
    char path[512];
    cJSON *body = cJSON_CreateObject(), *v = NULL;
    cJSON *args = cJSON_CreateArray();
    cJSON *arg = cJSON_CreateString(css);
    int n = -1;
    if (body && args && arg && cJSON_AddItemToArray(args, arg)) {
        arg = NULL;
        if (cJSON_AddItemToObject(body, "args", args)) {
            args = NULL;
            if (cJSON_AddStringToObject(body, "script",
                                        "return document.querySelectorAll(arguments[0]).length;") &&
                session_path(d, path, sizeof path, "/execute/sync", NULL, NULL) == 0 &&
                call(d, "POST", path, body, &v) == 0 && cJSON_IsNumber(v))
                n = (int)v->valuedouble;
        }
    }
    cJSON_Delete(arg);
    cJSON_Delete(args);
    cJSON_Delete(body);
    cJSON_Delete(v);
    return n;
}

int wd_send_keys(wd_driver_t *d, const char *element, const char *text)
{
    char path[512];
    cJSON *body = cJSON_CreateObject();
    int rc = -1;
    if (body && cJSON_AddStringToObject(body, "text", text) &&
        session_path(d, path, sizeof path, "/element/", element, "/value") == 0)
        rc = call(d, "POST", path, body, NULL);
    cJSON_Delete(body);
    return rc;
}

int wd_click(wd_driver_t *d, const char *element)
{
    char path[512];
    if (session_path(d, path, sizeof path, "/element/", element, "/click"))
        return -1;
    return call(d, "POST", path, NULL, NULL);
}

char *wd_text(wd_driver_t *d, const char *element)
{
    return string_command(d, "/element/", element, "/text");
}

char *wd_value(wd_driver_t *d, const char *element)
{
    return string_command(d, "/element/", element, "/property/value");
}

char *wd_current_url(wd_driver_t *d)
{
    return string_command(d, "/url", NULL, NULL);
}

char *wd_page_source(wd_driver_t *d)
{
    return string_command(d, "/source", NULL, NULL);
}

char *wd_title(wd_driver_t *d)
{
    return string_command(d, "/title", NULL, NULL);
}

char *wd_wait_url(wd_driver_t *d, const char *prefix, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    char *url = NULL;
    for (;;) {
        free(url);
        url = wd_current_url(d);
        if (url && strncmp(url, prefix, strlen(prefix)) == 0)
            return url;
        if (now_ms() >= deadline)
            break;
        sleep_ms(50);
    }
    char *title = wd_title(d);
    fprintf(stderr,
            "webdriver: expected the browser on %s... within %d ms, got %s (title "
            "\"%s\")\n",
            prefix, timeout_ms, url ? url : "?", title ? title : "?");
    free(title);
    free(url);
    return NULL;
}

/* POST on the session with body (NULL: "{}"); 0 with *value as in request(). */
static int session_post(wd_driver_t *d, const char *part, const cJSON *body, cJSON **value)
{
    char path[512];
    if (value)
        *value = NULL;
    if (session_path(d, path, sizeof path, part, NULL, NULL))
        return -1;
    return call(d, "POST", path, body, value);
}

/* Runs script (a function body; args, a JSON array that stays the caller's, are its
 * arguments[], NULL for none): its return value (heap, possibly JSON null), or NULL after a
 * message. */
static cJSON *script_value(wd_driver_t *d, const char *script, cJSON *args)
{
    cJSON *body = cJSON_CreateObject(), *v = NULL;
    int added = body && (args ? cJSON_AddItemReferenceToObject(body, "args", args)
                              : cJSON_AddArrayToObject(body, "args") != NULL);
    if (!added || !cJSON_AddStringToObject(body, "script", script)) {
        fprintf(stderr, "webdriver: out of memory\n");
    } else if (session_post(d, "/execute/sync", body, &v)) {
        fprintf(stderr, "webdriver: the script \"%.200s\" failed\n", script);
    }
    cJSON_Delete(body);
    return v;
}

char *wd_script_string(wd_driver_t *d, const char *script)
{
    cJSON *v = script_value(d, script, NULL);
    char *out = NULL;
    if (cJSON_IsString(v)) {
        out = strdup(v->valuestring);
        if (!out)
            fprintf(stderr, "webdriver: out of memory\n");
    } else if (v) {
        fprintf(stderr, "webdriver: the script \"%.200s\" did not return a string\n", script);
    }
    cJSON_Delete(v);
    return out;
}

int wd_script_int(wd_driver_t *d, const char *script, long *out)
{
    cJSON *v = script_value(d, script, NULL);
    int rc = -1;
    /* JSON numbers are doubles: refuse what a long cannot hold rather than wrap. */
    if (cJSON_IsNumber(v) && v->valuedouble >= (double)LONG_MIN &&
        v->valuedouble < -(double)LONG_MIN) {
        *out = (long)v->valuedouble;
        rc = 0;
    } else if (v) {
        fprintf(stderr, "webdriver: the script \"%.200s\" did not return a number\n", script);
    }
    cJSON_Delete(v);
    return rc;
}

cJSON *wd_cookies(wd_driver_t *d)
{
    char path[512];
    cJSON *v = NULL;
    if (session_path(d, path, sizeof path, "/cookie", NULL, NULL) || call(d, "GET", path, NULL, &v))
        return NULL;
    if (!cJSON_IsArray(v)) {
        fprintf(stderr, "webdriver: GET %s: expected an array of cookies\n", path);
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

const cJSON *wd_cookie_in(const cJSON *cookies, const char *name)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cookies)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(c, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return c;
    }
    return NULL;
}

int wd_screenshot(wd_driver_t *d, const char *path)
{
    char *b64 = string_command(d, "/screenshot", NULL, NULL);
    if (!b64)
        return -1;
    unsigned char *png = NULL;
    size_t len = 0;
    int rc = -1;
    if (sg_b64_decode(b64, strlen(b64), &png, &len) != SG_OK) {
        fprintf(stderr, "webdriver: the screenshot is not base64\n");
    } else {
        FILE *f = fopen(path, "wb");
        int written = f && fwrite(png, 1, len, f) == len;
        int closed = f && fclose(f) == 0;
        if (written && closed)
            rc = 0;
        else
            fprintf(stderr, "webdriver: cannot write %s: %s\n", path, strerror(errno));
    }
    free(png);
    free(b64);
    return rc;
}

/* mkdir -p: dir and every missing parent. */
static int make_path(const char *dir, mode_t mode)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        fprintf(stderr, "webdriver: folder name too long: %.200s\n", dir);
        return -1;
    }
    /* Each parent in turn (from the second character on, so "/" itself is skipped), then dir. */
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, mode) < 0 && errno != EEXIST) {
            fprintf(stderr, "webdriver: mkdir %s: %s\n", path, strerror(errno));
            return -1;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "webdriver: %s is not a folder\n", path);
        return -1;
    }
    return 0;
}

int wd_snapshot(wd_driver_t *d, const char *name)
{
    const char *dir = getenv("SG_SCREENSHOT_DIR");
    if (!dir || !*dir)
        return 0;
    if (make_path(dir, 0755))
        return -1;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s.png", dir, name);
    if (n < 0 || (size_t)n >= sizeof path) {
        fprintf(stderr, "webdriver: screenshot path too long\n");
        return -1;
    }
    return wd_screenshot(d, path);
}

/* ---- the console log ------------------------------------------------------------------- */

cJSON *wd_browser_log(wd_driver_t *d)
{
    cJSON *body = cJSON_CreateObject(), *v = NULL;
    if (!body || !cJSON_AddStringToObject(body, "type", "browser")) {
        fprintf(stderr, "webdriver: out of memory\n");
        cJSON_Delete(body);
        return NULL;
    }
    /* Selenium's legacy log endpoint: the W3C protocol has none, chromedriver keeps this one. */
    int rc = session_post(d, "/se/log", body, &v);
    cJSON_Delete(body);
    if (rc)
        return NULL;
    if (!cJSON_IsArray(v)) {
        fprintf(stderr, "webdriver: POST /session/{id}/se/log: expected an array of entries\n");
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

int wd_csp_violations(wd_driver_t *d, char *first, size_t firstlen)
{
    if (first && firstlen)
        first[0] = '\0';
    cJSON *entries = wd_browser_log(d);
    if (!entries)
        return -1;
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, entries)
    {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        /* Chromium's wording in every CSP console message ("... violates the following
         * Content Security Policy directive: ..."); the source, "security", also covers
         * mixed content and certificate warnings. */
        if (!cJSON_IsString(msg) || !strstr(msg->valuestring, "Content Security Policy"))
            continue;
        if (n == 0 && first && firstlen) {
            snprintf(first, firstlen, "%s", msg->valuestring);
            /* Some end in "\n" (form-action's does), which a test's message does not want. */
            size_t len = strlen(first);
            while (len > 0 && (first[len - 1] == '\n' || first[len - 1] == ' '))
                first[--len] = '\0';
        }
        n++;
    }
    cJSON_Delete(entries);
    return n;
}

/* ---- the viewport ----------------------------------------------------------------------- */

/* One Chrome DevTools Protocol command through chromedriver's passthrough. params stays the
 * caller's; NULL (a failed allocation) fails here, so callers need not check it twice. */
static int cdp(wd_driver_t *d, const char *cmd, cJSON *params)
{
    cJSON *body = cJSON_CreateObject();
    int rc = -1;
    if (!params || !body || !cJSON_AddStringToObject(body, "cmd", cmd) ||
        !cJSON_AddItemReferenceToObject(body, "params", params)) {
        fprintf(stderr, "webdriver: out of memory\n");
    } else {
        rc = session_post(d, "/goog/cdp/execute", body, NULL);
        if (rc)
            fprintf(stderr, "webdriver: the DevTools command %s failed\n", cmd);
    }
    cJSON_Delete(body);
    return rc;
}

int wd_set_viewport(wd_driver_t *d, int width, int height, int mobile)
{
    cJSON *p = cJSON_CreateObject();
    int rc = -1;
    if (p && cJSON_AddNumberToObject(p, "width", width) &&
        cJSON_AddNumberToObject(p, "height", height) &&
        cJSON_AddNumberToObject(p, "deviceScaleFactor", 1) &&
        cJSON_AddBoolToObject(p, "mobile", mobile != 0))
        rc = cdp(d, "Emulation.setDeviceMetricsOverride", p);
    else
        fprintf(stderr, "webdriver: out of memory\n");
    if (rc == 0)
        d->emulated_width = width;
    cJSON_Delete(p);
    return rc;
}

int wd_clear_viewport(wd_driver_t *d)
{
    cJSON *p = cJSON_CreateObject();
    int rc = cdp(d, "Emulation.clearDeviceMetricsOverride", p);
    if (rc == 0)
        d->emulated_width = 0;
    cJSON_Delete(p);
    return rc;
}

/* ---- layout width ------------------------------------------------------------------------ */

/*
 * arguments[0]: the emulated screen width (0: none). A phone lays a page that is wider than
 * its screen out wider and zooms out, and innerWidth then grows with it (to the content's
 * width, or 980 without a viewport meta tag), so with a phone viewport the screen's width is
 * the measure. Elements and text inside a box that clips or scrolls sideways (overflow-x not
 * visible, below <body>) do not widen the page: a wide table in an overflow-x:auto wrapper is
 * the fix, not a fault. Text nodes count because a long word sticks out of its box without
 * making the box wider.
 */
static const char overflow_js[] =
    "var iw = window.innerWidth, sw = document.documentElement.scrollWidth;"
    "var ref = arguments[0] > 0 && arguments[0] < iw ? arguments[0] : iw;"
    "var sx = window.scrollX, memo = new Map();"
    "function clips(e) {"
    "  if (!e || e === document.body || e === document.documentElement) return false;"
    "  if (memo.has(e)) return memo.get(e);"
    "  var c = getComputedStyle(e).overflowX !== 'visible' || clips(e.parentElement);"
    "  memo.set(e, c);"
    "  return c;"
    "}"
    "function name(e) {"
    "  var s = e.tagName.toLowerCase(), c = e.getAttribute('class');"
    "  if (e.id) s += '#' + e.id;"
    "  if (c && c.trim()) s += '.' + c.trim().split(/\\s+/).join('.');"
    "  return s;"
    "}"
    "var worst = '', right = 0;"
    "function consider(r, what) {"
    "  if (r.width > 0 && r.height > 0 && r.right + sx > right) {"
    "    right = r.right + sx;"
    "    worst = what();"
    "  }"
    "}"
    "var all = document.querySelectorAll('body, body *');"
    "for (var i = 0; i < all.length; i++) {"
    "  var e = all[i];"
    "  if (!clips(e.parentElement)) consider(e.getBoundingClientRect(), function () {"
    "    return name(e);"
    "  });"
    "}"
    "var walk = document.createTreeWalker(document.body || document.documentElement,"
    "                                     NodeFilter.SHOW_TEXT);"
    "var range = document.createRange();"
    "for (var t = walk.nextNode(); t; t = walk.nextNode()) {"
    "  if (!t.data.trim() || !t.parentElement || clips(t.parentElement)) continue;"
    "  range.selectNodeContents(t);"
    "  consider(range.getBoundingClientRect(), function () {"
    "    return 'text \"' + t.data.trim().slice(0, 24) + '\" in ' + name(t.parentElement);"
    "  });"
    "}"
    "var px = Math.max(sw, right) - ref;"
    "return {px: px > 1 ? Math.ceil(px) : 0,"
    "        what: (worst || '(no element)') + ' right=' + Math.round(right) +"
    "              ' innerWidth=' + iw + ' scrollWidth=' + sw +"
    "              (ref < iw ? ' screen=' + ref : '')};";

int wd_overflow(wd_driver_t *d, char *what, size_t whatlen)
{
    if (what && whatlen)
        what[0] = '\0';
    if (!d || !d->session) {
        fprintf(stderr, "webdriver: no browser session\n");
        return -1;
    }
    cJSON *args = cJSON_CreateArray();
    cJSON *width = cJSON_CreateNumber(d->emulated_width);
    if (!args || !width || !cJSON_AddItemToArray(args, width)) {
        fprintf(stderr, "webdriver: out of memory\n");
        cJSON_Delete(width);
        cJSON_Delete(args);
        return -1;
    }
    cJSON *v = script_value(d, overflow_js, args);
    cJSON_Delete(args);
    if (!v)
        return -1;
    const cJSON *px = cJSON_GetObjectItemCaseSensitive(v, "px");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(v, "what");
    int rc = -1;
    if (cJSON_IsNumber(px) && px->valuedouble >= 0 && px->valuedouble < INT_MAX &&
        cJSON_IsString(desc)) {
        rc = (int)px->valuedouble;
        if (what && whatlen)
            snprintf(what, whatlen, "%s", desc->valuestring);
    } else {
        fprintf(stderr, "webdriver: the overflow script returned no {px, what}\n");
    }
    cJSON_Delete(v);
    return rc;
}
