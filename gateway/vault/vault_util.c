/*
 * The small helpers the vault's files share (see vault_int.h): the clocks, secrets in memory,
 * failed outcomes and the token API's errors, events, and the JSON of the webhook's bodies.
 */
#include "vault_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "scopegate/log.h"
#include "scopegate/text.h"

long long sg_vault_now(void)
{
    return (long long)time(NULL);
}

void sg_vault_secret_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

char *sg_vault_dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void sg_vault_outcome_set(outcome_t *oc, int status, const char *error, const char *fmt, ...)
{
    oc->failed = 1;
    oc->http_status = status;
    sg_text_clean(oc->error, sizeof oc->error, error);
    va_list ap;
    va_start(ap, fmt);
    sg_vtextf(oc->reason, sizeof oc->reason, fmt, ap);
    va_end(ap);
}

void sg_vault_err_from(sg_vault_err_t *err, const outcome_t *oc)
{
    err->http_status = oc->http_status;
    sg_text_clean(err->error, sizeof err->error, oc->error);
    sg_text_clean(err->reason, sizeof err->reason, oc->reason);
}

void sg_vault_err_set(sg_vault_err_t *err, int status, const char *error, const char *reason)
{
    err->http_status = status;
    sg_text_clean(err->error, sizeof err->error, error);
    sg_text_clean(err->reason, sizeof err->reason, reason);
}

sg_rc sg_vault_rc_of_status(int status)
{
    switch (status) {
    case 404:
        return SG_ERR_NOTFOUND;
    case 409:
        return SG_ERR_DENIED;
    case 500:
        return SG_ERR_IO;
    default:
        return SG_ERR_IO; /* 502, 504: the provider or the wait */
    }
}

double sg_vault_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timespec sg_vault_deadline_in(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

void sg_vault_emit_ev(sg_vault_t *v, const sg_vault_event_t *e)
{
    if (v->on_event)
        v->on_event(v->ctx, e);
}

void sg_vault_emit(sg_vault_t *v, const char *kind, long long grant_id, const char *user_id,
                   const char *org_id, const char *app, const char *reason, const char *source,
                   const char *caller)
{
    if (!v->on_event)
        return;
    sg_vault_event_t e = {.kind = kind,
                          .grant_id = grant_id,
                          .user_id = user_id,
                          .org_id = org_id,
                          .app = app,
                          .reason = reason,
                          .source = source,
                          .caller = caller};
    v->on_event(v->ctx, &e);
}

int sg_vault_add_json_text(cJSON *j, const char *name, const char *text)
{
    cJSON *x = text ? cJSON_Parse(text) : NULL;
    if (!x)
        return cJSON_AddNullToObject(j, name) != NULL;
    cJSON_AddItemToObject(j, name, x);
    return 1;
}

int sg_vault_add_str_or_null(cJSON *j, const char *name, const char *s)
{
    return (s ? cJSON_AddStringToObject(j, name, s) : cJSON_AddNullToObject(j, name)) != NULL;
}

void sg_vault_webhook_json(sg_vault_t *v, cJSON *j, int ok, long long grant_id)
{
    char *body = ok && j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!body) {
        sg_log(SG_LOG_ERROR, "webhook_dropped", "grant %lld: out of memory", grant_id);
        return;
    }
    sg_webhook_send(v->hook, body);
    free(body);
}
