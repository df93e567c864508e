#include "scopegate/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_buf_init(sg_buf_t *b, size_t max)
{
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void sg_buf_free(sg_buf_t *b)
{
    free(b->ptr);
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
}

void sg_buf_reset(sg_buf_t *b)
{
    b->len = 0;
    if (b->ptr)
        b->ptr[0] = '\0';
}

static sg_rc grow(sg_buf_t *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra) {
        sg_buf_free(b);
        return SG_ERR_TOO_BIG;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return SG_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    /* Written as cap - 1 > max so that max == SIZE_MAX does not wrap max + 1 to 0. */
    if (cap - 1 > b->max)
        cap = b->max + 1;
    char *p = realloc(b->ptr, cap);
    if (!p) {
        sg_buf_free(b);
        return SG_ERR_NOMEM;
    }
    b->ptr = p;
    b->cap = cap;
    return SG_OK;
}

sg_rc sg_buf_add(sg_buf_t *b, const void *data, size_t len)
{
    sg_rc rc = grow(b, len);
    if (rc)
        return rc;
    if (len)
        memcpy(b->ptr + b->len, data, len);
    b->len += len;
    b->ptr[b->len] = '\0';
    return SG_OK;
}

sg_rc sg_buf_adds(sg_buf_t *b, const char *s)
{
    return sg_buf_add(b, s, strlen(s));
}

sg_rc sg_buf_printf(sg_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sg_buf_free(b);
        return SG_ERR_PARSE;
    }
    sg_rc rc = grow(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return SG_OK;
}

sg_rc sg_buf_add_html(sg_buf_t *b, const char *s)
{
    sg_rc rc = SG_OK;
    for (; *s && !rc; s++) {
        switch (*s) {
        case '&':
            rc = sg_buf_adds(b, "&amp;");
            break;
        case '<':
            rc = sg_buf_adds(b, "&lt;");
            break;
        case '>':
            rc = sg_buf_adds(b, "&gt;");
            break;
        case '"':
            rc = sg_buf_adds(b, "&quot;");
            break;
        case '\'':
            rc = sg_buf_adds(b, "&#39;");
            break;
        default:
            rc = sg_buf_add(b, s, 1);
        }
    }
    return rc;
}

sg_rc sg_buf_add_file(sg_buf_t *b, FILE *f)
{
    char chunk[16384];
    for (;;) {
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n > 0) {
            sg_rc rc = sg_buf_add(b, chunk, n);
            if (rc)
                return rc;
        }
        if (n < sizeof(chunk))
            break;
    }
    if (ferror(f)) {
        sg_buf_free(b);
        return SG_ERR_IO;
    }
    return SG_OK;
}

char *sg_buf_steal(sg_buf_t *b)
{
    char *p = b->ptr;
    if (!p)
        p = calloc(1, 1);
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
