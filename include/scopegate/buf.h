/*
 * Growable byte buffer with a hard maximum, in the spirit of curl's dynbuf.
 * Everything read from the network goes through one, so every read has a bound.
 * When an append fails the buffer is freed and reset: no half-built state escapes.
 * The content is always NUL-terminated (the NUL is not counted in len).
 */
#ifndef SCOPEGATE_BUF_H
#define SCOPEGATE_BUF_H

#include <stddef.h>
#include <stdio.h>
#include "scopegate/rc.h"

typedef struct {
    char *ptr;
    size_t len;
    size_t cap;
    size_t max; /* len may never exceed this */
} sg_buf_t;

void sg_buf_init(sg_buf_t *b, size_t max);
sg_rc sg_buf_add(sg_buf_t *b, const void *data, size_t len);
sg_rc sg_buf_adds(sg_buf_t *b, const char *s);
sg_rc sg_buf_printf(sg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with &, <, >, " and ' replaced by HTML entities. */
sg_rc sg_buf_add_html(sg_buf_t *b, const char *s);
/* Appends everything f has left to read: SG_ERR_TOO_BIG past max, SG_ERR_IO on a read error. */
sg_rc sg_buf_add_file(sg_buf_t *b, FILE *f);
void sg_buf_reset(sg_buf_t *b);
void sg_buf_free(sg_buf_t *b);
/* Hands the content to the caller (never NULL on success: "" for empty) and resets b. */
char *sg_buf_steal(sg_buf_t *b);

#endif
