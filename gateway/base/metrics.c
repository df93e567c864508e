/* Prometheus metrics: a fixed-size registry of series, atomics for the values. */
#include "scopegate/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/buf.h"

#define MAX_FAMILIES 64
#define MAX_SERIES   512
#define NBUCKETS     10

static const double bucket_le[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30};

struct sg_counter {
    atomic_llong v;
};

struct sg_histogram {
    atomic_llong bucket[NBUCKETS];
    atomic_llong count;
    atomic_llong sum_us;
};

typedef struct {
    char name[96];
    char type[16];
    char help[200];
} family_t;

typedef struct {
    char name[96];
    char labels[160];
    int is_hist;
    struct sg_counter c;
    struct sg_histogram h;
} series_t;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static family_t families[MAX_FAMILIES];
static size_t nfamilies;
static series_t *series[MAX_SERIES];
static size_t nseries;
static struct sg_counter overflow_counter; /* where series past the limit go */
static struct sg_histogram overflow_hist;

void sg_metrics_family(const char *name, const char *type, const char *help)
{
    pthread_mutex_lock(&reg_lock);
    size_t i = 0;
    while (i < nfamilies && strcmp(families[i].name, name) != 0)
        i++;
    if (i == nfamilies && nfamilies < MAX_FAMILIES)
        nfamilies++;
    if (i < nfamilies) {
        snprintf(families[i].name, sizeof(families[i].name), "%s", name);
        snprintf(families[i].type, sizeof(families[i].type), "%s", type);
        snprintf(families[i].help, sizeof(families[i].help), "%s", help);
    }
    pthread_mutex_unlock(&reg_lock);
}

static series_t *find(const char *name, const char *labels, int is_hist)
{
    labels = labels ? labels : "";
    pthread_mutex_lock(&reg_lock);
    series_t *s = NULL;
    for (size_t i = 0; i < nseries && !s; i++)
        if (strcmp(series[i]->name, name) == 0 && strcmp(series[i]->labels, labels) == 0)
            s = series[i];
    if (!s && nseries < MAX_SERIES) {
        s = calloc(1, sizeof(*s));
        if (s) {
            snprintf(s->name, sizeof(s->name), "%s", name);
            snprintf(s->labels, sizeof(s->labels), "%s", labels);
            s->is_hist = is_hist;
            series[nseries++] = s;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return s;
}

sg_counter_t *sg_metrics_counter(const char *name, const char *labels)
{
    series_t *s = find(name, labels, 0);
    return s ? &s->c : &overflow_counter;
}

void sg_counter_add(sg_counter_t *c, long long n)
{
    atomic_fetch_add(&c->v, n);
}

void sg_counter_set(sg_counter_t *c, long long v)
{
    atomic_store(&c->v, v);
}

sg_histogram_t *sg_metrics_histogram(const char *name, const char *labels)
{
    series_t *s = find(name, labels, 1);
    return s ? &s->h : &overflow_hist;
}

void sg_histogram_observe(sg_histogram_t *h, double seconds)
{
    for (int i = 0; i < NBUCKETS; i++)
        if (seconds <= bucket_le[i])
            atomic_fetch_add(&h->bucket[i], 1);
    atomic_fetch_add(&h->count, 1);
    atomic_fetch_add(&h->sum_us, (long long)(seconds * 1e6));
}

void sg_metrics_inc(const char *name, const char *labels)
{
    sg_counter_inc(sg_metrics_counter(name, labels));
}

static void render_series(sg_buf_t *b, const series_t *s)
{
    if (!s->is_hist) {
        sg_buf_printf(b, "%s%s%s%s %lld\n", s->name, *s->labels ? "{" : "", s->labels,
                      *s->labels ? "}" : "", (long long)atomic_load(&s->c.v));
        return;
    }
    const char *sep = *s->labels ? "," : "";
    for (int i = 0; i < NBUCKETS; i++)
        sg_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %lld\n", s->name, s->labels, sep, bucket_le[i],
                      (long long)atomic_load(&s->h.bucket[i]));
    long long count = atomic_load(&s->h.count);
    sg_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %lld\n", s->name, s->labels, sep, count);
    sg_buf_printf(b, "%s_sum%s%s%s %.6f\n", s->name, *s->labels ? "{" : "", s->labels,
                  *s->labels ? "}" : "", (double)atomic_load(&s->h.sum_us) / 1e6);
    sg_buf_printf(b, "%s_count%s%s%s %lld\n", s->name, *s->labels ? "{" : "", s->labels,
                  *s->labels ? "}" : "", count);
}

char *sg_metrics_render(void)
{
    sg_buf_t b;
    sg_buf_init(&b, 4 << 20);
    pthread_mutex_lock(&reg_lock);
    for (size_t f = 0; f < nfamilies; f++) {
        sg_buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
                      families[f].name, families[f].type);
        for (size_t i = 0; i < nseries; i++)
            if (strcmp(series[i]->name, families[f].name) == 0)
                render_series(&b, series[i]);
    }
    pthread_mutex_unlock(&reg_lock);
    return sg_buf_steal(&b);
}

void sg_metrics_reset(void)
{
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nseries; i++)
        free(series[i]);
    nseries = 0;
    nfamilies = 0;
    pthread_mutex_unlock(&reg_lock);
}
