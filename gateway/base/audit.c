/* The audit log: see audit.h. */
#include "scopegate/audit.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "scopegate/log.h"

struct sg_audit {
    pthread_mutex_t lock;
    char *path;
    int fd;
    char instance[96]; /* "": one instance, no field */
};

static int open_append(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        fchmod(fd, 0600);
    return fd;
}

sg_rc sg_audit_open(const char *path, sg_audit_t **out)
{
    *out = NULL;
    sg_audit_t *a = calloc(1, sizeof(*a));
    if (!a)
        return SG_ERR_NOMEM;
    a->path = strdup(path);
    a->fd = open_append(path);
    if (!a->path || a->fd < 0) {
        free(a->path);
        free(a);
        return SG_ERR_IO;
    }
    pthread_mutex_init(&a->lock, NULL);
    *out = a;
    return SG_OK;
}

void sg_audit_close(sg_audit_t *a)
{
    if (!a)
        return;
    close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a->path);
    free(a);
}

sg_rc sg_audit_reopen(sg_audit_t *a)
{
    if (!a)
        return SG_OK;
    int fd = open_append(a->path);
    if (fd < 0)
        return SG_ERR_IO;
    pthread_mutex_lock(&a->lock);
    int old = a->fd;
    a->fd = fd;
    pthread_mutex_unlock(&a->lock);
    close(old);
    return SG_OK;
}

void sg_audit_set_instance(sg_audit_t *a, const char *id)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    snprintf(a->instance, sizeof(a->instance), "%s", id ? id : "");
    pthread_mutex_unlock(&a->lock);
}

void sg_audit(sg_audit_t *a, const char *event, ...)
{
    if (!a)
        return;
    struct timespec ts;
    struct tm tm;
    char when[48];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);

    cJSON *j = cJSON_CreateObject();
    if (!j)
        return;
    cJSON_AddStringToObject(j, "ts", when);
    cJSON_AddStringToObject(j, "event", event);
    pthread_mutex_lock(&a->lock);
    if (a->instance[0])
        cJSON_AddStringToObject(j, "instance", a->instance);
    pthread_mutex_unlock(&a->lock);
    va_list ap;
    va_start(ap, event);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        int number = k[0] == '#'; /* "#name": the value is written as a JSON number */
        if (number)
            k++;
        char *end = NULL;
        double d = number && v ? strtod(v, &end) : 0;
        if (!v)
            cJSON_AddNullToObject(j, k);
        else if (number && end && end != v && !*end)
            cJSON_AddNumberToObject(j, k, d);
        else
            cJSON_AddStringToObject(j, k, v);
    }
    va_end(ap);
    char *line = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!line)
        return;
    size_t len = strlen(line);
    line[len] = '\n'; /* replaces the NUL: one write, one line */
    pthread_mutex_lock(&a->lock);
    ssize_t w = write(a->fd, line, len + 1);
    pthread_mutex_unlock(&a->lock);
    if (w != (ssize_t)(len + 1))
        sg_log(SG_LOG_ERROR, "audit_write", "could not append to the audit log");
    free(line);
}
