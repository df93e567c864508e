#include "scopegate/log.h"
#include "scopegate/buf.h"
#include "scopegate/crypto.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static sg_log_level min_level = SG_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_name[] = {"debug", "info", "warn", "error"};

void sg_log_set_level(sg_log_level min)
{
    min_level = min;
}

int sg_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, level_name[i]) == 0)
            return i;
    return -1;
}

static void add_json_string(sg_buf_t *b, const char *s)
{
    sg_buf_adds(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sg_buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            sg_buf_printf(b, "\\u%04x", c);
        else
            sg_buf_add(b, s, 1);
    }
    sg_buf_adds(b, "\"");
}

void sg_log(sg_log_level level, const char *event, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

    sg_buf_t b;
    sg_buf_init(&b, 4096);
    sg_buf_printf(&b, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"event\":", when,
                  ts.tv_nsec / 1000000, level_name[level]);
    add_json_string(&b, event);
    sg_buf_adds(&b, ",\"msg\":");
    add_json_string(&b, msg);
    sg_buf_adds(&b, "}\n");
    if (b.ptr) {
        pthread_mutex_lock(&log_lock);
        fputs(b.ptr, stderr);
        fflush(stderr);
        pthread_mutex_unlock(&log_lock);
    }
    sg_buf_free(&b);
}

void sg_log_mask(const char *secret, char *out, size_t outlen)
{
    if (!secret || outlen < 17) {
        if (outlen)
            out[0] = '\0';
        return;
    }
    char *hex = sg_sha256_hex(secret, strlen(secret));
    snprintf(out, outlen, "sha256:%.8s", hex ? hex : "????????");
    free(hex);
}
