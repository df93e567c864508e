/*
 * Text from elsewhere (a provider's error and error_description, an ID token's claims, a
 * callback's query) formatted into fixed-size buffers for logs, pages and API answers.
 *
 * Nothing is lost silently: text that does not fit is cut at a UTF-8 character boundary and
 * ends with "...", so whoever reads the log line or the page sees that something was cut, and
 * the caller learns it from the return value. Use these instead of snprintf wherever the
 * arguments hold text that someone else chose; the compiler cannot bound that text, and a
 * silent cut of "expired access/refresh token" into "expired acc" misleads the reader.
 */
#ifndef SCOPEGATE_TEXT_H
#define SCOPEGATE_TEXT_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    SG_TEXT_WHOLE = 0, /* everything fit */
    SG_TEXT_CUT = 1,   /* the end was replaced by "..." (or dst is "" after a format error) */
} sg_text_fit;

/* printf into dst (cap bytes, cap >= 1); always NUL-terminated. */
sg_text_fit sg_textf(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
sg_text_fit sg_vtextf(char *dst, size_t cap, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Copies src (NULL copies as "") with control characters replaced by '?', so one log line
 * stays one line and a page shows no stray bytes; cut like sg_textf when it does not fit. */
sg_text_fit sg_text_clean(char *dst, size_t cap, const char *src);

#endif
