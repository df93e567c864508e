/*
 * The vault's webhook (see vault_int.h): one thread, one bounded queue, the HTTP client.
 *
 * Each queued message carries the monotonic time of its next attempt; the thread sends
 * whichever message is due first and sleeps on the condition variable until the earliest one
 * is due (or a new one arrives, or stop is asked). The lock is never held across the POST.
 */
#include "vault_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scopegate/http_client.h"
#include "scopegate/log.h"

typedef struct {
    char *body;
    int tries;      /* POSTs done so far */
    double next_at; /* monotonic seconds */
} msg_t;

struct sg_webhook {
    char *url;
    long timeout_ms;
    pthread_t thread;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    msg_t q[SG_WEBHOOK_QUEUE];
    size_t n;
    int stop;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One POST through the bounded HTTP client; 1 when a 2xx answer came. */
static int post(const sg_webhook_t *w, const char *body)
{
    sg_http_req_t req = {.url = w->url,
                         .body = body,
                         .content_type = "application/json",
                         .timeout_ms = w->timeout_ms};
    sg_http_resp_t resp;
    sg_http_err_t err;
    sg_rc rc = sg_http_call(&req, &resp, &err);
    long status = rc == SG_OK ? resp.status : 0;
    sg_http_resp_free(&resp);
    if (rc != SG_OK)
        sg_log(SG_LOG_WARN, "webhook_failed", "webhook POST failed: %s: %s", err.error,
               err.description);
    else if (status < 200 || status > 299)
        sg_log(SG_LOG_WARN, "webhook_failed", "webhook answered HTTP %ld", status);
    return rc == SG_OK && status >= 200 && status <= 299;
}

/* Index of the message due first; the queue is not empty. */
static size_t earliest(const sg_webhook_t *w)
{
    size_t best = 0;
    for (size_t i = 1; i < w->n; i++)
        if (w->q[i].next_at < w->q[best].next_at)
            best = i;
    return best;
}

static void *run(void *arg)
{
    sg_webhook_t *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (w->n == 0) {
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        size_t i = earliest(w);
        double now = mono_now();
        if (w->q[i].next_at > now) {
            double at = w->q[i].next_at;
            struct timespec ts = {.tv_sec = (time_t)at,
                                  .tv_nsec = (long)((at - (double)(time_t)at) * 1e9)};
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            continue;
        }
        msg_t m = w->q[i];
        memmove(&w->q[i], &w->q[i + 1], (w->n - i - 1) * sizeof *w->q); /* keep FIFO order */
        w->n--;
        pthread_mutex_unlock(&w->mu);
        int ok = post(w, m.body);
        m.tries++;
        pthread_mutex_lock(&w->mu);
        if (ok) {
            free(m.body);
        } else if (m.tries > SG_WEBHOOK_RETRIES || w->n == SG_WEBHOOK_QUEUE) {
            sg_log(SG_LOG_ERROR, "webhook_dropped", "webhook message dropped after %d attempts",
                   m.tries);
            free(m.body);
        } else {
            m.next_at = mono_now() + (double)(1 << (m.tries - 1)); /* 1, 2, 4, 8, 16 s */
            w->q[w->n++] = m;
        }
    }
    if (w->n)
        sg_log(SG_LOG_WARN, "webhook_dropped", "%zu webhook message(s) not sent at shutdown", w->n);
    for (size_t i = 0; i < w->n; i++)
        free(w->q[i].body);
    w->n = 0;
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

sg_rc sg_webhook_start(const char *url, long timeout_ms, sg_webhook_t **out)
{
    *out = NULL;
    sg_webhook_t *w = calloc(1, sizeof *w);
    if (!w)
        return SG_ERR_NOMEM;
    w->url = strdup(url);
    w->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    pthread_condattr_t ca;
    int cond_ok = 0, mutex_ok = 0;
    if (!w->url)
        goto fail;
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto fail;
    mutex_ok = 1;
    if (pthread_condattr_init(&ca) != 0)
        goto fail;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    cond_ok = pthread_cond_init(&w->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cond_ok)
        goto fail;
    if (pthread_create(&w->thread, NULL, run, w) != 0)
        goto fail;
    *out = w;
    return SG_OK;
fail:
    if (cond_ok)
        pthread_cond_destroy(&w->cv);
    if (mutex_ok)
        pthread_mutex_destroy(&w->mu);
    free(w->url);
    free(w);
    return SG_ERR_NOMEM;
}

sg_rc sg_webhook_send(sg_webhook_t *w, const char *body)
{
    char *copy = strdup(body);
    if (!copy)
        return SG_ERR_NOMEM;
    pthread_mutex_lock(&w->mu);
    if (w->n == SG_WEBHOOK_QUEUE || w->stop) {
        pthread_mutex_unlock(&w->mu);
        free(copy);
        sg_log(SG_LOG_ERROR, "webhook_dropped", "webhook queue full (%d): message dropped",
               SG_WEBHOOK_QUEUE);
        return SG_ERR_TOO_BIG;
    }
    w->q[w->n++] = (msg_t){.body = copy, .tries = 0, .next_at = mono_now()};
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return SG_OK;
}

void sg_webhook_stop(sg_webhook_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->url);
    free(w);
}
