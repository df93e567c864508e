/*
 * The harness's processes (see harness.h and harness_int.h): sfsim started on an ephemeral
 * port and read for its first line, stopped by its PID; the pipes and waits the gateway's
 * start and kill in stack.c use too; and the small utilities and file helpers every file uses.
 */
#include "harness_int.h"

#include "scopegate/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- processes ------------------------------------------------------------------------ */

/* The read end of each running process's stdout pipe stays open, so a later write by the
 * process never meets SIGPIPE; th_proc_stop closes it. */
#define MAX_PROCS 16
static struct {
    pid_t pid;
    int fd;
} procs[MAX_PROCS];

void th_remember_fd(pid_t pid, int fd)
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

void th_forget_fd(pid_t pid)
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
int th_read_first_line(int fd, char *line, size_t cap, int timeout_ms)
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
int th_wait_for(pid_t pid, int *status, int timeout_ms)
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

    char line[TH_FIRST_LINE_MAX];
    if (th_read_first_line(pipefd[0], line, sizeof line, TH_START_TIMEOUT_MS)) {
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
    th_remember_fd(pid, pipefd[0]);
    return 0;
}

int th_proc_stop(th_proc_t *p)
{
    int result = -1;
    if (p->pid > 0) {
        int status = 0;
        kill(p->pid, SIGTERM);
        int w = th_wait_for(p->pid, &status, TH_STOP_TIMEOUT_MS);
        if (w == 0) {
            fprintf(stderr, "harness: pid %d ignored SIGTERM for %d ms; killing it\n", (int)p->pid,
                    TH_STOP_TIMEOUT_MS);
            kill(p->pid, SIGKILL);
            th_wait_for(p->pid, &status, TH_STOP_TIMEOUT_MS);
        } else if (w < 0) {
            /* result stays -1 */
        } else if (WIFEXITED(status)) {
            result = WEXITSTATUS(status);
            if (result != 0)
                fprintf(stderr, "harness: pid %d exited with status %d\n", (int)p->pid, result);
        } else if (WIFSIGNALED(status)) {
            fprintf(stderr, "harness: pid %d died from signal %d\n", (int)p->pid, WTERMSIG(status));
        }
        th_forget_fd(p->pid);
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
    sg_buf_init(&b, TH_BODY_MAX * 4);
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

/* ---- files ---------------------------------------------------------------------------- */

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

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "harness: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

void th_remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
