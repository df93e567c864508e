/* A loopback HTTP server of the test's own (harness.h, th_server_*): webhook receivers, fake
 * providers. One thread accepts and serves one connection at a time. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_MAX 16384

int th_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int th_dial(const char *url, const char *src)
{
    const char *colon = url ? strrchr(url, ':') : NULL;
    int fd = colon ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
    if (fd < 0)
        return -1;
    struct sockaddr_in from = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};
    to.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
        inet_pton(AF_INET, "127.0.0.1", &to.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&from, sizeof from) != 0 ||
        connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one request (head, and a body of Content-Length bytes) and hands it to the handler. */
static void serve_one(th_server_t *s, int c)
{
    char req[REQUEST_MAX];
    size_t n = 0, want = 0;
    char *end = NULL;
    while (n + 1 < sizeof req) {
        ssize_t r = recv(c, req + n, sizeof req - 1 - n, 0);
        if (r <= 0)
            return;
        n += (size_t)r;
        req[n] = '\0';
        end = strstr(req, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(req, "\r\nContent-Length:");
            want = cl && cl < end ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
            if (n >= (size_t)(end + 4 - req) + want)
                break;
        }
    }
    if (!end)
        return;
    char *body = end + 4;
    size_t have = n - (size_t)(body - req);
    end[2] = '\0'; /* the head keeps its last line's CRLF */
    s->fn(s->ctx, c, req, body, have < want ? have : want);
}

static void *server_main(void *arg)
{
    th_server_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int running = s->running;
        pthread_mutex_unlock(&s->mu);
        if (!running)
            break;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        serve_one(s, c);
        shutdown(c, SHUT_WR);
        close(c);
    }
    return NULL;
}

int th_server_start(th_server_t *s, th_serve_fn fn, void *ctx)
{
    memset(s, 0, sizeof *s);
    s->fn = fn;
    s->ctx = ctx;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(s->fd, 16) != 0 || getsockname(s->fd, (struct sockaddr *)&sa, &sl) != 0) {
        fprintf(stderr, "harness: cannot listen on loopback: %s\n", strerror(errno));
        if (s->fd >= 0)
            close(s->fd);
        return -1;
    }
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", ntohs(sa.sin_port));
    pthread_mutex_init(&s->mu, NULL);
    s->running = 1;
    if (pthread_create(&s->thread, NULL, server_main, s) != 0) {
        fprintf(stderr, "harness: cannot start the server's thread\n");
        pthread_mutex_destroy(&s->mu);
        close(s->fd);
        return -1;
    }
    return 0;
}

void th_server_stop(th_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->running = 0;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
}
