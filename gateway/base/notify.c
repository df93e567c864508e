/*
 * sd_notify without libsystemd (include/scopegate/notify.h). The protocol is one datagram per
 * state change; the service manager reads the sender's credentials from the socket, so
 * MAINPID= is only a hint that says which process is the daemon.
 */
#include "scopegate/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "scopegate/log.h"

#define NOTIFY_MAX 4096

sg_rc sg_notify(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return SG_OK;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(name);
    /* Only a path or an abstract name: anything else (vsock addresses, which systemd also
     * accepts) is not a socket this daemon has reason to meet. */
    if ((name[0] != '/' && name[0] != '@') || len >= sizeof(sa.sun_path) || len < 2) {
        sg_log(SG_LOG_WARN, "notify",
               "NOTIFY_SOCKET is not an AF_UNIX socket name; not "
               "telling the service manager");
        return SG_ERR_CONFIG;
    }
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    /* The abstract name's length is exact (no terminating NUL); a path's includes its NUL. */
    socklen_t salen =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/' ? 1 : 0));

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sg_log(SG_LOG_WARN, "notify", "cannot make a socket for the service manager: %s",
               strerror(errno));
        return SG_ERR_IO;
    }
    sg_rc rc = SG_OK;
    size_t n = strlen(state);
    ssize_t sent = sendto(fd, state, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    if (sent < 0 || (size_t)sent != n) {
        sg_log(SG_LOG_WARN, "notify", "cannot tell the service manager (%s): %s", name,
               sent < 0 ? strerror(errno) : "short write");
        rc = SG_ERR_IO;
    }
    close(fd);
    return rc;
}

sg_rc sg_notifyf(const char *fmt, ...)
{
    char text[NOTIFY_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(text)) {
        sg_log(SG_LOG_WARN, "notify", "a state for the service manager is too long; not sent");
        return SG_ERR_TOO_BIG;
    }
    return sg_notify(text);
}
