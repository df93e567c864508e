/*
 * The HTTP server's insides, shared by its three files (nothing else includes this):
 *   http_server.c  libmicrohttpd's callbacks, requests and responses, start and stop
 *   http_limits.c  the connections' record and deadlines (the sweeper), per-client counts,
 *                  the limits' counters and log lines
 *   http_pool.c    the worker pool for handlers that wait
 */
#ifndef SCOPEGATE_HTTP_SERVER_INT_H
#define SCOPEGATE_HTTP_SERVER_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "scopegate/http_server.h"
#include "scopegate/metrics.h"

#define FD_RESERVE     256 /* open files kept for everything but connections */
#define SWEEP_MS       200
#define LOG_EVERY_S    10 /* a limit's log line, at most this often */
#define CLIENT_BUCKETS 1024

/* ---- limits: counted, logged at most once per interval ---- */

enum {
    LIM_CONNECTIONS,
    LIM_PER_CLIENT,
    LIM_REQUEST_TIME,
    LIM_IDLE,
    LIM_URI,
    LIM_PARAMS,
    LIM_BODY,
    LIM_WAITING,
    LIM_WAITING_CLIENT,
    NLIMITS
};

typedef struct {
    sg_counter_t *counter;
    atomic_llong since_log; /* hits since the last log line */
    atomic_llong logged_at; /* monotonic seconds of the last log line */
} limit_t;

/* ---- per-client counts ------------------------------------------------------------------- */

typedef struct client {
    struct client *next;
    unsigned count;
    char ip[64];
} client_t;

/* Counts per address (connections, or parked requests), under the caller's mutex. */
typedef struct {
    client_t *bucket[CLIENT_BUCKETS];
} clients_t;

/* ---- the server's state ------------------------------------------------------------------ */

enum { C_IDLE, C_RECEIVING, C_HANDLING, C_ENDED };

struct req_box;

struct sg_httpd_conn {
    sg_httpd_conn_t *prev, *next;
    struct req_box *box; /* its requests' record, kept from one request to the next */
    int fd;
    atomic_int state;         /* C_*: who may end the connection */
    atomic_llong deadline_ms; /* monotonic; 0: none */
    int counted;              /* counted in per_peer */
    char peer[64];
};

typedef struct job {
    struct job *next;
    sg_req_t *r;
} job_t;

/* What a parked request carries between the event thread and its worker. */
typedef struct {
    job_t job; /* its place in the queue */
    sg_resp_t w;
    int parked;  /* handed to the pool; on_request answers w when it is called again */
    int counted; /* counted in the pool's per-client waiting */
} park_t;

struct sg_httpd {
    struct MHD_Daemon *daemon;
    sg_httpd_opts_t opts;
    unsigned port;
    unsigned pid; /* for request ids */
    char url[96];
    limit_t limits[NLIMITS];
    sg_counter_t *gauge_conns, *gauge_waiting;

    /* Connections, for the deadlines and the per-client cap. */
    pthread_mutex_t mu;
    sg_httpd_conn_t *conns;
    size_t nconns;
    clients_t per_peer;
    pthread_t sweeper;
    int sweeping;

    /* The worker pool. */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    job_t *head, *tail;
    size_t queued, busy;
    clients_t per_client;
    pthread_t *workers;
    size_t nworkers;
    int stopping; /* under qmu */
};

/*
 * The request's own data beside sg_req_t. A connection keeps one from its first request to
 * its close and every request on it reuses it, buffers included (small ones: see
 * http_server.c), so a request on a kept-alive connection allocates nothing of the server's.
 */
typedef struct req_box {
    sg_req_t r;
    park_t park;
    unsigned limit_status; /* a limit the request line hit: answered before the handler runs */
    const char *limit_text;
    int in_use;          /* a request is under way */
    int kept;            /* the connection's own (freed when it closes), not the request's */
    char path_room[256]; /* the path, when it fits */
} req_box_t;

static inline req_box_t *hs_box_of(sg_req_t *r)
{
    return (req_box_t *)(void *)r;
}

/* ---- http_server.c ---- */
/* The connection closed: frees its box, or leaves that to the request still under way. */
void hs_conn_closed(sg_httpd_conn_t *c);

/* ---- http_limits.c ---- */
double hs_monotonic(void);
long long hs_now_ms(void);
int hs_is_trusted(const sg_httpd_t *d, const char *ip);
/* The connection's peer address as text ("" when unknown). */
void hs_peer_text(struct MHD_Connection *conn, char *out, size_t len);
/* Adds one for ip unless it already has limit (0: no limit): 1 when added. */
int hs_clients_take(clients_t *c, const char *ip, unsigned limit);
void hs_clients_give(clients_t *c, const char *ip);
void hs_clients_free(clients_t *c);
/* Counts a hit of limit which and logs, at most once per LOG_EVERY_S, how many there were. */
void hs_limited(sg_httpd_t *d, int which);
/* Writes a short answer (status 0: none) straight to the socket and shuts it down. */
void hs_answer_and_end(int fd, unsigned status, const char *reason);
/* libmicrohttpd's connection notification: records, caps and unlinks connections. */
void hs_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);
void *hs_sweeper_main(void *arg);
/* The connections the open-file limit leaves room for (raising the soft limit first). */
unsigned hs_fd_room(void);
void hs_declare_metrics(sg_httpd_t *d);

/* ---- http_pool.c ---- */
/* Starts opts.workers workers: 0, or -1 when none could start. */
int hs_pool_start(sg_httpd_t *d);
/* Parks the request for a worker (its connection suspended): 0, or the status (503, 429) of
 * a full queue. */
unsigned hs_park(sg_httpd_t *d, req_box_t *b);
/* Stops the workers (after they answer what they hold) and the sweeper. */
void hs_stop_threads(sg_httpd_t *d);

#endif
