/*
 * The README's first command, run as a newcomer runs it: `./scripts/demo` from the top of the
 * tree, with the demo's state removed first. It must serve the gateway on 127.0.0.1:8080 and
 * sfsim on 127.0.0.1:8090, print the URLs and the demo logins, let alice sign in through
 * sfsim's login and approval pages, and stop everything it started on Ctrl-C (SIGINT to its
 * process group, as a terminal sends it). Its failures must say why and exit non-zero: a port
 * another process holds (naming that process), sfsim failing to start.
 *
 * The demo builds in build/ (the README's hand build); scripts/test builds that first, so the
 * demo starts at once here. Not parallel: the demo's ports are fixed.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "harness.h"
#include "gw_test.h"

#define GW_URL  "http://127.0.0.1:8080"
#define SIM_URL "http://127.0.0.1:8090"
static const int demo_ports[] = {8080, 8081, 8090};

/* The demo may have to build first: generous, but bounded. */
#define READY_SECONDS 300
#define STOP_SECONDS  20

static char root[1024];
static char out_path[1100];
static pid_t demo_pid;   /* also its process group */
static int held_fd = -1; /* a port this test holds */
static char *kept;       /* the text a failing check printed (freed in teardown) */
static th_client_t *client;

/* A socket bound to 127.0.0.1:port (SO_REUSEADDR: TIME_WAIT leftovers do not count), or -1
 * when a listener (or another bound socket) holds the port. */
static int bind_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Whether something holds 127.0.0.1:port. */
static int port_busy(int port)
{
    int fd = bind_loopback(port);
    if (fd < 0)
        return 1;
    close(fd);
    return 0;
}

/* A listening socket on 127.0.0.1:port, held by this test process; -1 when it is taken. */
static int hold_port(int port)
{
    int fd = bind_loopback(port);
    if (fd >= 0 && listen(fd, 4) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* What the demo printed so far; valid until the next call. */
static const char *demo_output(void)
{
    free(kept);
    kept = th_read_file(out_path, NULL);
    return kept ? kept : "";
}

/* Starts ./scripts/demo in the source tree, in a process group of its own, stdout and stderr
 * into out_path; extra_env is one "NAME=VALUE" or NULL. */
static void start_demo(const char *extra_env)
{
    demo_pid = fork();
    if (demo_pid < 0)
        FAILF("fork: %s", strerror(errno));
    if (demo_pid == 0) {
        setpgid(0, 0);
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || chdir(root) != 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
            close(devnull);
        }
        /* Exactly the README's command: none of the demo's own knobs. */
        unsetenv("SFSIM_PORT");
        unsetenv("SG_DEMO_BUILD");
        if (extra_env)
            putenv((char *)extra_env);
        execl("./scripts/demo", "./scripts/demo", (char *)NULL);
        _exit(127);
    }
    setpgid(demo_pid, demo_pid); /* both sides, so the group exists before any signal */
}

/* Waits for the demo to exit by itself: its exit status, or -1 after seconds. */
static int wait_exit(double seconds)
{
    double end = now_s() + seconds;
    int st;
    while (now_s() < end) {
        pid_t r = waitpid(demo_pid, &st, WNOHANG);
        if (r == demo_pid) {
            demo_pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(50 * 1000);
    }
    return -1;
}

/* Whether any process of the demo's group is left. */
static int group_alive(pid_t pgid)
{
    return kill(-pgid, 0) == 0 || errno != ESRCH;
}

static int teardown(void **state)
{
    if (demo_pid > 0) {
        kill(-demo_pid, SIGKILL);
        waitpid(demo_pid, NULL, 0);
        demo_pid = 0;
    }
    if (held_fd >= 0)
        close(held_fd);
    held_fd = -1;
    free(kept);
    kept = NULL;
    th_client_free(client);
    client = NULL;
    return 0;
}

static void require_free_ports(void)
{
    for (size_t i = 0; i < sizeof demo_ports / sizeof demo_ports[0]; i++)
        if (port_busy(demo_ports[i]))
            FAILF("port %d is in use before the demo starts; the demo needs 8080, 8081 and "
                  "8090 free",
                  demo_ports[i]);
}

static long get_status(th_client_t *c, const char *url)
{
    th_resp_t r;
    long st = th_get(c, url, &r) == 0 ? r.status : 0;
    th_resp_free(&r);
    return st;
}

static void test_demo_serves_signin_and_stops_on_ctrl_c(void **state)
{
    require_free_ports();
    char *rm = th_fmt("rm -rf '%s/var/demo'", root);
    assert_non_null(rm);
    assert_int_equal(system(rm), 0);
    free(rm);

    start_demo(NULL);
    pid_t pgid = demo_pid;
    th_client_t *c = client = th_client_new();
    assert_non_null(c);

    /* Ready: both listeners answer and the banner is out. */
    double end = now_s() + READY_SECONDS;
    int ready = 0;
    while (!ready && now_s() < end) {
        int st;
        if (waitpid(demo_pid, &st, WNOHANG) == demo_pid) {
            demo_pid = 0;
            FAILF("the demo exited before it was ready (status %d); it printed:\n%s",
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1, demo_output());
        }
        /* A request only once something listens: the harness reports refused connections. */
        ready = port_busy(8080) && port_busy(8090) && get_status(c, GW_URL "/healthz") == 200 &&
                get_status(c, SIM_URL "/.well-known/openid-configuration") == 200 &&
                strstr(demo_output(), "Press Ctrl-C to stop.") != NULL;
        if (!ready)
            usleep(200 * 1000);
    }
    const char *out = demo_output();
    if (!ready)
        FAILF("the demo was not ready within %d s; it printed:\n%s", READY_SECONDS, out);
    const char *banner[] = {GW_URL,
                            SIM_URL,
                            "alice@demo.example / alice",
                            "admin@demo.example / admin",
                            "ops@demo.example   / ops",
                            GW_URL "/auth"};
    for (size_t i = 0; i < sizeof banner / sizeof banner[0]; i++)
        if (!strstr(out, banner[i]))
            FAILF("the demo's banner lacks \"%s\"; it printed:\n%s", banner[i], out);

    /* alice signs in through sfsim's login (and approval) pages. */
    th_stack_t s;
    memset(&s, 0, sizeof s);
    snprintf(s.url, sizeof s.url, "%s", GW_URL);
    snprintf(s.sim.url, sizeof s.sim.url, "%s", SIM_URL);
    th_resp_t fin;
    if (th_gateway_signin(c, &s, "/", TH_ALICE, "alice", &fin) != 0)
        FAILF("alice's sign-in through the demo failed at HTTP %ld:\n%.2000s", fin.status,
              fin.body ? fin.body : "");
    th_resp_free(&fin);
    th_resp_t a;
    assert_int_equal(th_get(c, GW_URL "/auth", &a), 0);
    char *role = th_resp_header(&a, "X-Auth-Request-Role");
    char *email = th_resp_header(&a, "X-Auth-Request-Email");
    if (a.status != 200 || !role || strcmp(role, "user") != 0 || !email ||
        strcmp(email, TH_ALICE) != 0)
        FAILF("/auth after alice's sign-in: expected 200, role user, email %s; got %ld, role "
              "%s, email %s",
              TH_ALICE, a.status, role ? role : "(none)", email ? email : "(none)");
    free(role);
    free(email);
    th_resp_free(&a);
    th_client_free(c);
    client = NULL;

    /* Ctrl-C: SIGINT to the whole foreground group, as a terminal does. */
    assert_int_equal(kill(-pgid, SIGINT), 0);
    int status = wait_exit(STOP_SECONDS);
    if (status < 0)
        FAILF("the demo was still running %d s after SIGINT; it printed:\n%s", STOP_SECONDS,
              demo_output());
    end = now_s() + 5;
    while (group_alive(pgid) && now_s() < end)
        usleep(50 * 1000);
    if (group_alive(pgid)) {
        kill(-pgid, SIGKILL);
        FAILF("processes the demo started were still running after it exited on SIGINT");
    }
    for (size_t i = 0; i < sizeof demo_ports / sizeof demo_ports[0]; i++)
        if (port_busy(demo_ports[i]))
            FAILF("port %d is still in use after the demo stopped", demo_ports[i]);
}

static void expect_refusal(const char *extra_env, const char *const *want, size_t nwant)
{
    start_demo(extra_env);
    pid_t pgid = demo_pid;
    int status = wait_exit(READY_SECONDS);
    const char *out = demo_output();
    if (status < 0)
        FAILF("the demo did not give up within %d s; it printed:\n%s", READY_SECONDS, out);
    if (status == 0)
        FAILF("the demo exited 0; expected a non-zero status. It printed:\n%s", out);
    for (size_t i = 0; i < nwant; i++)
        if (!strstr(out, want[i]))
            FAILF("expected the demo to say \"%s\"; it printed (status %d):\n%s", want[i], status,
                  out);
    double end = now_s() + 5;
    while (group_alive(pgid) && now_s() < end)
        usleep(50 * 1000);
    if (group_alive(pgid)) {
        kill(-pgid, SIGKILL);
        FAILF("the demo left processes running after it failed");
    }
}

static void test_demo_names_the_process_holding_its_port(void **state)
{
    require_free_ports();
    held_fd = hold_port(8080);
    if (held_fd < 0)
        FAILF("cannot listen on 127.0.0.1:8080 for the test: %s", strerror(errno));
    char by[128];
    snprintf(by, sizeof by, "port 8080 is already in use by test_demo (pid %ld)", (long)getpid());
    const char *want[] = {by};
    expect_refusal(NULL, want, 1);
}

static void test_demo_shows_why_sfsim_did_not_start(void **state)
{
    require_free_ports();
    /* An address sfsim refuses: its own words must reach the person. */
    static char env[] = "SFSIM_PORT=99999";
    const char *want[] = {"sfsim exited at start-up", "is not a loopback HOST:PORT"};
    expect_refusal(env, want, 2);
    for (size_t i = 0; i < sizeof demo_ports / sizeof demo_ports[0]; i++)
        if (port_busy(demo_ports[i]))
            FAILF("port %d is still in use after the demo failed", demo_ports[i]);
}

int main(void)
{
    const char *src = getenv("SG_SOURCE_ROOT");
    if (!src || !*src) {
        fprintf(stderr, "SG_SOURCE_ROOT is not set (run through meson test)\n");
        return 1;
    }
    snprintf(root, sizeof root, "%s", src);
    const char *tmp = getenv("TMPDIR");
    snprintf(out_path, sizeof out_path, "%s/scopegate-demo-test-%ld.out",
             tmp && *tmp ? tmp : "/tmp", (long)getpid());
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_demo_serves_signin_and_stops_on_ctrl_c, teardown),
        cmocka_unit_test_teardown(test_demo_names_the_process_holding_its_port, teardown),
        cmocka_unit_test_teardown(test_demo_shows_why_sfsim_did_not_start, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(out_path);
    return failed;
}
