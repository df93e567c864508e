/* sg_notify: the datagram the service manager gets, byte for byte, over a path and over an
 * abstract name; nothing sent and no error without NOTIFY_SOCKET; a name that is not a socket
 * of ours, or a state too long for one datagram, refused without a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "scopegate/notify.h"

/* A datagram socket bound at name ("/path" or "@abstract"), or -1. */
static int bind_at(const char *name)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(name);
    memcpy(sa.sun_path, name, len);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    else
        salen++;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, salen) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The next datagram on fd within a second, into buf ("" when none came). */
static void read_one(int fd, char *buf, size_t len)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    buf[0] = '\0';
    if (poll(&p, 1, 1000) == 1) {
        ssize_t n = recv(fd, buf, len - 1, MSG_DONTWAIT);
        buf[n > 0 ? n : 0] = '\0';
    }
}

static void expect_datagram(int fd, const char *want)
{
    char got[8192];
    read_one(fd, got, sizeof(got));
    if (strcmp(got, want) != 0)
        fail_msg("expected the datagram \"%s\", got \"%s\"", want, got);
}

static void test_a_path_socket_gets_the_state_as_sent(void **state)
{
    (void)state;
    char dir[] = "/tmp/sg-notify-unit-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/notify", dir);
    int fd = bind_at(path);
    assert_true(fd >= 0);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(sg_notify("READY=1\nSTATUS=serving"), SG_OK);
    expect_datagram(fd, "READY=1\nSTATUS=serving");
    assert_int_equal(sg_notifyf("STATUS=serving; %d sessions", 12), SG_OK);
    expect_datagram(fd, "STATUS=serving; 12 sessions");
    close(fd);
    unlink(path);
    rmdir(dir);
    unsetenv("NOTIFY_SOCKET");
}

static void test_an_abstract_name_starts_with_an_at_sign(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof(name), "@sg-notify-unit-%ld", (long)getpid());
    int fd = bind_at(name);
    assert_true(fd >= 0);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sg_notify("STOPPING=1"), SG_OK);
    expect_datagram(fd, "STOPPING=1");
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_without_notify_socket_nothing_is_sent_and_nothing_fails(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sg_notify("READY=1"), SG_OK);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(sg_notify("READY=1"), SG_OK);
    unsetenv("NOTIFY_SOCKET");
}

static void test_names_that_are_not_our_sockets_are_refused(void **state)
{
    (void)state;
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[0] = '/';
    longname[sizeof(longname) - 1] = '\0';
    const char *bad[] = {"vsock:2:1234", "relative/path", "@", longname};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("NOTIFY_SOCKET", bad[i], 1);
        sg_rc rc = sg_notify("READY=1");
        if (rc != SG_ERR_CONFIG)
            fail_msg("NOTIFY_SOCKET=%.40s: expected SG_ERR_CONFIG, got %s", bad[i], sg_rc_str(rc));
    }
    unsetenv("NOTIFY_SOCKET");
}

static void test_a_socket_nobody_listens_on_is_an_io_error(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", "/tmp/sg-notify-unit-nobody-listens-here", 1);
    assert_int_equal(sg_notify("READY=1"), SG_ERR_IO);
    unsetenv("NOTIFY_SOCKET");
}

static void test_a_state_longer_than_a_datagram_is_refused_not_cut(void **state)
{
    (void)state;
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(sg_notifyf("STATUS=%s", big), SG_ERR_TOO_BIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_path_socket_gets_the_state_as_sent),
        cmocka_unit_test(test_an_abstract_name_starts_with_an_at_sign),
        cmocka_unit_test(test_without_notify_socket_nothing_is_sent_and_nothing_fails),
        cmocka_unit_test(test_names_that_are_not_our_sockets_are_refused),
        cmocka_unit_test(test_a_socket_nobody_listens_on_is_an_io_error),
        cmocka_unit_test(test_a_state_longer_than_a_datagram_is_refused_not_cut),
    };
    return cmocka_run_group_tests_name("notify", tests, NULL, NULL);
}
