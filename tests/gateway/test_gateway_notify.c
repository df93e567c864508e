/*
 * The service manager's readiness protocol end to end: the test binds a datagram socket, starts
 * sfsim and `scopegate serve` with NOTIFY_SOCKET naming it (the gateway inherits the test's
 * environment), and reads what a Type=notify unit's systemd would: READY=1 with MAINPID= once
 * the gateway answers, RELOADING=1 then READY=1 around a SIGHUP, a STATUS= line that counts
 * the sessions, the same over an abstract socket ("@name"), and STOPPING=1 at SIGTERM.
 *
 * The tests run in order on one stack: each reads the datagrams the one before caused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"

#define WAIT_MS 15000 /* READY=1 comes after start-up, which a sanitizer build makes slow */

static char sock_dir[256];
static char sock_path[300];
static int sock_fd = -1;

/* Binds a datagram socket at name (a path, or "@abstract") and points NOTIFY_SOCKET at it. */
static int listen_notify(const char *name)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(name);
    if (len >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, name, len);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    else
        salen++;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, salen) != 0) {
        fprintf(stderr, "cannot bind the notify socket %s: %s\n", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (sock_fd >= 0)
        close(sock_fd);
    sock_fd = fd;
    return setenv("NOTIFY_SOCKET", name, 1);
}

/* Does datagram msg hold the line want? */
static int has_line(const char *msg, const char *want)
{
    size_t n = strlen(want);
    for (const char *p = msg; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, want, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

/* The value of KEY= in msg (kept), or NULL. */
static const char *value_of(const char *msg, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = msg; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, key, n) == 0 && p[n] == '=') {
            const char *end = strchr(p, '\n');
            size_t vlen = end ? (size_t)(end - p - n - 1) : strlen(p + n + 1);
            return FMT("%.*s", (int)vlen, p + n + 1);
        }
    return NULL;
}

/* Reads datagrams until one holds the line want (a "KEY=" want matches any value): that
 * datagram (kept). Fails the test after WAIT_MS, saying what came instead. */
static const char *wait_for(const char *want, const char *what)
{
    char *seen = keep_str(strdup(""));
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left =
            WAIT_MS - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd pfd = {.fd = sock_fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            FAILF("%s: expected a datagram with %s within %d ms, got: %s", what, want, WAIT_MS,
                  *seen ? seen : "(nothing)");
        char buf[4097];
        ssize_t n = recv(sock_fd, buf, sizeof(buf) - 1, 0);
        CHECK(n >= 0, "%s: recv: %s", what, strerror(errno));
        buf[n] = '\0';
        size_t wl = strlen(want);
        int match = want[wl - 1] == '=' ? value_of(buf, FMT("%.*s", (int)(wl - 1), want)) != NULL
                                        : has_line(buf, want);
        if (match)
            return FMT("%s", buf);
        seen = FMT("%s[%s] ", seen, buf);
    }
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_ready_with_mainpid_once_the_gateway_answers(void **state)
{
    (void)state;
    const char *msg = wait_for("READY=1", "start-up");
    const char *pid = value_of(msg, "MAINPID");
    const char *want = FMT("%ld", (long)GW.gw.pid);
    CHECK(pid && strcmp(pid, want) == 0, "expected MAINPID=%s with READY=1, got %s", want,
          pid ? pid : "(none)");
    const char *status = value_of(msg, "STATUS");
    CHECK(status && strstr(status, "serving") && strstr(status, "0 sessions"),
          "expected a STATUS= with READY=1 saying serving and 0 sessions, got %s",
          status ? status : "(none)");
    expect_status(gw_get(NULL, "/healthz"), 200, "GET /healthz after READY=1");
}

static void test_sighup_says_reloading_then_ready(void **state)
{
    (void)state;
    CHECK(kill(GW.gw.pid, SIGHUP) == 0, "kill SIGHUP: %s", strerror(errno));
    const char *msg = wait_for("RELOADING=1", "after SIGHUP");
    CHECK(value_of(msg, "MONOTONIC_USEC") != NULL,
          "expected MONOTONIC_USEC= with RELOADING=1, "
          "got %s",
          msg);
    msg = wait_for("READY=1", "after RELOADING=1");
    const char *status = value_of(msg, "STATUS");
    CHECK(status && strstr(status, "policy reloaded"),
          "expected the STATUS= after a good reload to say so, got %s", status ? status : "(none)");
}

static void test_a_rejected_reload_is_in_the_status(void **state)
{
    (void)state;
    char *good = keep_str(th_read_file(GW.policy, NULL));
    CHECK(good != NULL, "cannot read %s", GW.policy);
    CHECK(th_write_file(GW.policy, "this is not a policy", 0600) == 0, "cannot write %s",
          GW.policy);
    CHECK(kill(GW.gw.pid, SIGHUP) == 0, "kill SIGHUP: %s", strerror(errno));
    wait_for("RELOADING=1", "after SIGHUP with a bad policy");
    const char *msg = wait_for("READY=1", "after a rejected reload");
    CHECK(th_write_file(GW.policy, good, 0600) == 0, "cannot write %s back", GW.policy);
    const char *status = value_of(msg, "STATUS");
    CHECK(status && strstr(status, "rejected"),
          "expected the STATUS= after a rejected reload to say so, got %s",
          status ? status : "(none)");
    expect_status(gw_get(NULL, "/healthz"), 200, "GET /healthz after a rejected reload");
}

static void test_status_counts_the_sessions(void **state)
{
    (void)state;
    sign_in(browser(), "/", TH_ALICE, "alice");
    /* The housekeeping thread says so when the count changes (every 5 s at most). */
    const char *msg = wait_for("STATUS=", "after a sign-in");
    const char *status = value_of(msg, "STATUS");
    CHECK(strstr(status, "; 1 session"), "expected STATUS= to count 1 session, got %s", status);
}

static void test_an_abstract_socket_works_too(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof(name), "@scopegate-notify-test-%ld", (long)getpid());
    CHECK(listen_notify(name) == 0, "cannot listen on %s", name);
    CHECK(th_stack_restart_gateway(&GW) == 0, "the gateway did not restart (see above)");
    const char *msg = wait_for("READY=1", "start-up on an abstract socket");
    const char *want = FMT("%ld", (long)GW.gw.pid);
    const char *pid = value_of(msg, "MAINPID");
    CHECK(pid && strcmp(pid, want) == 0, "expected MAINPID=%s, got %s", want, pid ? pid : "(none)");
}

static void test_sigterm_says_stopping(void **state)
{
    (void)state;
    CHECK(kill(GW.gw.pid, SIGTERM) == 0, "kill SIGTERM: %s", strerror(errno));
    wait_for("STOPPING=1", "after SIGTERM");
    /* th_stack_stop (the group's teardown) reaps it and checks that it exited 0. */
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(sock_dir, sizeof(sock_dir), "%s/sg-notify-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(sock_dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", sock_dir, strerror(errno));
        return -1;
    }
    snprintf(sock_path, sizeof(sock_path), "%s/notify", sock_dir);
    if (listen_notify(sock_path))
        return -1;
    if (th_stack_start(&GW, NULL)) {
        fprintf(stderr, "the stack (sfsim and the gateway) did not start; no test ran\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    int rc = gw_group_teardown(state);
    if (sock_fd >= 0)
        close(sock_fd);
    unlink(sock_path);
    rmdir(sock_dir);
    return rc;
}

#define T(f) cmocka_unit_test_setup_teardown(f, gw_setup, gw_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_ready_with_mainpid_once_the_gateway_answers),
        T(test_sighup_says_reloading_then_ready),
        T(test_a_rejected_reload_is_in_the_status),
        T(test_status_counts_the_sessions),
        T(test_an_abstract_socket_works_too),
        T(test_sigterm_says_stopping),
    };
    return cmocka_run_group_tests_name("gateway sd_notify", tests, group_setup, group_teardown);
}
