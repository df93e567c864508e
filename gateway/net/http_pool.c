/* The worker pool: handlers that wait on the network run here, off the event threads. */
#include "http_server_int.h"

#include <microhttpd.h>
#include <stdlib.h>

static void *worker_main(void *arg)
{
    sg_httpd_t *d = arg;
    pthread_mutex_lock(&d->qmu);
    for (;;) {
        while (!d->head && !d->stopping)
            pthread_cond_wait(&d->qcv, &d->qmu);
        if (!d->head)
            break; /* stopping, and nothing left to answer */
        job_t *j = d->head;
        d->head = j->next;
        if (!d->head)
            d->tail = NULL;
        d->queued--;
        d->busy++;
        pthread_mutex_unlock(&d->qmu);

        req_box_t *b = hs_box_of(j->r);
        d->opts.handler(d->opts.app, &b->r, &b->park.w);

        pthread_mutex_lock(&d->qmu);
        d->busy--;
        if (b->park.counted)
            hs_clients_give(&d->per_client, b->r.client_ip);
        sg_counter_set(d->gauge_waiting, (long long)(d->queued + d->busy));
        pthread_mutex_unlock(&d->qmu);
        MHD_resume_connection(b->r.conn);
        pthread_mutex_lock(&d->qmu);
    }
    pthread_mutex_unlock(&d->qmu);
    return NULL;
}

/* Parks r for a worker: 0, or the status (503, 429) of a full queue. */
unsigned hs_park(sg_httpd_t *d, req_box_t *b)
{
    job_t *j = &b->park.job;
    j->next = NULL;
    j->r = &b->r;
    pthread_mutex_lock(&d->qmu);
    unsigned refused = 0;
    if (d->stopping || d->queued + d->busy >= d->opts.max_waiting)
        refused = 503;
    else if (!hs_clients_take(&d->per_client, b->r.client_ip, d->opts.max_waiting_per_client))
        refused = 429;
    if (refused) {
        pthread_mutex_unlock(&d->qmu);
        hs_limited(d, refused == 503 ? LIM_WAITING : LIM_WAITING_CLIENT);
        return refused;
    }
    b->park.counted = 1;
    b->park.parked = 1;
    MHD_suspend_connection(b->r.conn); /* before a worker can resume it */
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    d->queued++;
    sg_counter_set(d->gauge_waiting, (long long)(d->queued + d->busy));
    pthread_cond_signal(&d->qcv);
    pthread_mutex_unlock(&d->qmu);
    return 0;
}

void hs_stop_threads(sg_httpd_t *d)
{
    pthread_mutex_lock(&d->qmu);
    d->stopping = 1;
    pthread_cond_broadcast(&d->qcv);
    pthread_mutex_unlock(&d->qmu);
    for (size_t i = 0; i < d->nworkers; i++)
        pthread_join(d->workers[i], NULL);
    free(d->workers);
    d->workers = NULL;
    d->nworkers = 0;
    pthread_mutex_lock(&d->mu);
    int was = d->sweeping;
    d->sweeping = 0;
    pthread_mutex_unlock(&d->mu);
    if (was)
        pthread_join(d->sweeper, NULL);
}

int hs_pool_start(sg_httpd_t *d)
{
    d->workers = calloc(d->opts.workers, sizeof(*d->workers));
    for (; d->workers && d->nworkers < d->opts.workers; d->nworkers++)
        if (pthread_create(&d->workers[d->nworkers], NULL, worker_main, d) != 0)
            break;
    return d->nworkers ? 0 : -1;
}
