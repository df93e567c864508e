/*
 * Running the scopegate binary as an operator would, for the CLI tests (tests/cli): $SCOPEGATE
 * with arguments, its exit status, stdout and stderr kept for assertions that show all three.
 * Include after <cmocka.h>, "harness.h" and "gw_test.h" (the stack GW gives the folder the
 * output goes through).
 */
#ifndef SG_CLI_TEST_H
#define SG_CLI_TEST_H

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_test.h"

typedef struct {
    int status; /* exit status; -1 when it did not exit normally */
    const char *out, *err;
    const char *cmd; /* for messages */
} run_t;

/* $SCOPEGATE with args (NULL-terminated); stdout and stderr kept. */
static inline run_t run_cli(const char *const *args)
{
    const char *bin = getenv("SCOPEGATE");
    CHECK(bin && *bin, "SCOPEGATE is not set (meson test sets it)");
    run_t r = {.status = -1};
    const char *cmd = "scopegate";
    const char *argv[32];
    size_t n = 0;
    argv[n++] = bin;
    for (size_t i = 0; args[i] && n < 31; i++) {
        argv[n++] = args[i];
        cmd = FMT("%s %s", cmd, args[i]);
    }
    argv[n] = NULL;
    r.cmd = cmd;
    const char *out_path = FMT("%s/cli.out", GW.dir[0] ? GW.dir : "/tmp");
    const char *err_path = FMT("%s/cli.err", GW.dir[0] ? GW.dir : "/tmp");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = keep_str(th_read_file(out_path, NULL));
    r.err = keep_str(th_read_file(err_path, NULL));
    if (!r.out)
        r.out = "";
    if (!r.err)
        r.err = "";
    unlink(out_path);
    unlink(err_path);
    if (getenv("TH_SHOW_CLI")) /* to see what operators see */
        fprintf(stderr, "$ %s  -> exit %d\n%s%s", cmd, r.status, r.out, r.err);
    return r;
}

#define CLI(...) run_cli((const char *const[]){__VA_ARGS__, NULL})

static inline void expect_exit(const run_t *r, int want)
{
    CHECK(r->status == want, "%s: expected exit %d, got %d\nstdout:\n%.3000s\nstderr:\n%.3000s",
          r->cmd, want, r->status, r->out, r->err);
}

static inline void expect_out(const run_t *r, const char *needle)
{
    CHECK(strstr(r->out, needle), "%s: expected \"%s\" in its output:\n%.3000s\nstderr:\n%.2000s",
          r->cmd, needle, r->out, r->err);
}

static inline void expect_err(const run_t *r, const char *needle)
{
    CHECK(strstr(r->err, needle), "%s: expected \"%s\" on stderr:\n%.3000s\nstdout:\n%.2000s",
          r->cmd, needle, r->err, r->out);
}

static inline cJSON *out_json(const run_t *r)
{
    cJSON *j = keep_json(cJSON_Parse(r->out));
    CHECK(j != NULL, "%s: expected JSON on stdout, got:\n%.3000s", r->cmd, r->out);
    return j;
}

#endif
