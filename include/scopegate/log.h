/*
 * Structured logging: one JSON object per line on stderr, e.g.
 * {"ts":"2026-11-27T08:00:00.123Z","level":"info","event":"listening","msg":"..."}.
 * Callers never pass secrets; sg_log_mask() gives a safe stand-in for a token when a log
 * line must refer to one.
 */
#ifndef SCOPEGATE_LOG_H
#define SCOPEGATE_LOG_H

#include <stddef.h>

typedef enum { SG_LOG_DEBUG, SG_LOG_INFO, SG_LOG_WARN, SG_LOG_ERROR } sg_log_level;

void sg_log_set_level(sg_log_level min);
/* Parses "debug", "info", "warn", "error"; -1 when unknown. */
int sg_log_level_parse(const char *s);
void sg_log(sg_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* First 8 hex chars of SHA-256(secret) as "sha256:xxxxxxxx", into out (>= 17 bytes). */
void sg_log_mask(const char *secret, char *out, size_t outlen);

#endif
