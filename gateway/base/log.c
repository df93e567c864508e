#include "scopegate/log.h"
#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/text.h"

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

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 when none starts there. */
static size_t utf8_seq(const unsigned char *s)
{
    size_t n;
    unsigned cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 1, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 2, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 3, cp = s[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i <= n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* the terminating NUL stops this too */
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n + 1;
}

/*
 * JSON text must be UTF-8: a byte that does not start a valid sequence (request data, or a
 * character cut by the message's truncation) becomes U+FFFD. Each input byte costs at most
 * 6 output bytes.
 */
static sg_rc add_json_string(sg_buf_t *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    sg_rc rc = sg_buf_adds(b, "\"");
    while (!rc && *p) {
        size_t n = utf8_seq(p);
        if (*p == '"' || *p == '\\')
            rc = sg_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            rc = sg_buf_printf(b, "\\u%04x", *p);
        else if (n == 0)
            rc = sg_buf_adds(b, "\\ufffd");
        else
            rc = sg_buf_add(b, p, n);
        p += n ? n : 1;
    }
    return rc ? rc : sg_buf_adds(b, "\"");
}

void sg_log(sg_log_level level, const char *event, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    sg_vtextf(msg, sizeof(msg), fmt, ap); /* a longer message ends in "..." */
    va_end(ap);

    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

    sg_buf_t b;
    /* Room for the worst case (every byte escaped) so a line is never cut; a failed append
     * (out of memory) prints nothing rather than half a line. */
    sg_buf_init(&b, 128 + 6 * (strlen(event) + strlen(msg)));
    sg_rc rc = sg_buf_printf(&b, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"event\":", when,
                             ts.tv_nsec / 1000000, level_name[level]);
    if (!rc)
        rc = add_json_string(&b, event);
    if (!rc)
        rc = sg_buf_adds(&b, ",\"msg\":");
    if (!rc)
        rc = add_json_string(&b, msg);
    if (!rc)
        rc = sg_buf_adds(&b, "}\n");
    if (!rc) {
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
