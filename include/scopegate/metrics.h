/*
 * Prometheus metrics for one process. Series are created once (at start, or the first time
 * a label set is seen) and then updated with atomics, so hot paths take no lock and allocate
 * nothing: keep the pointer sg_metrics_counter() returns. Rendering walks every series.
 */
#ifndef SCOPEGATE_METRICS_H
#define SCOPEGATE_METRICS_H

#include <stdatomic.h>

typedef struct sg_counter sg_counter_t;
typedef struct sg_histogram sg_histogram_t;

/* Declares a metric family: type is "counter", "gauge" or "histogram". */
void sg_metrics_family(const char *name, const char *type, const char *help);
/* The series name{labels} (labels like `result="ok"`, or NULL), created on first use. */
sg_counter_t *sg_metrics_counter(const char *name, const char *labels);
void sg_counter_add(sg_counter_t *c, long long n);
#define sg_counter_inc(c) sg_counter_add((c), 1)
/* A gauge is a counter that may go down or be set. */
void sg_counter_set(sg_counter_t *c, long long v);
/* Latency histogram in seconds with fixed buckets (5 ms .. 30 s). */
sg_histogram_t *sg_metrics_histogram(const char *name, const char *labels);
void sg_histogram_observe(sg_histogram_t *h, double seconds);
/* Shorthand for label sets only known at run time: find or create, then add. */
void sg_metrics_inc(const char *name, const char *labels);

/* The exposition text (heap). */
char *sg_metrics_render(void);
/* Drops every series (tests). */
void sg_metrics_reset(void);

#endif
