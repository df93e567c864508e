/*
 * Role resolution: the first assign rule that matches a person's claims. The matching path
 * reads the policy and the claims only; it allocates nothing, formats nothing unless asked
 * why a rule failed, and so can run per request on any thread.
 */
#include "policy_int.h"
#include "scopegate/duration.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO_MAX   80 /* characters of a claim value repeated in an explanation */
#define ECHO_ITEMS 8  /* array elements repeated in an explanation */

static const cJSON *child_n(const cJSON *obj, const char *name, size_t len)
{
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string && strncmp(c->string, name, len) == 0 && c->string[len] == '\0')
            return c;
    return NULL;
}

static const cJSON *lookup(const cJSON *obj, const char *path, size_t len)
{
    if (!cJSON_IsObject(obj))
        return NULL;
    const cJSON *found = child_n(obj, path, len);
    for (size_t i = 0; !found && i < len; i++) {
        if (path[i] != '.')
            continue;
        const cJSON *sub = child_n(obj, path, i);
        if (sub)
            found = lookup(sub, path + i + 1, len - i - 1);
    }
    return found;
}

const cJSON *sg_policy_claim(const cJSON *claims, const char *path)
{
    if (!claims || !path)
        return NULL;
    return lookup(claims, path, strlen(path));
}

/* A single claim value as the text rules list: strings as they are, 42, true, false. */
static const char *scalar_text(const cJSON *v, char *buf, size_t len)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsTrue(v))
        return "true";
    if (cJSON_IsFalse(v))
        return "false";
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(long long)d)
            snprintf(buf, len, "%lld", (long long)d);
        else
            snprintf(buf, len, "%.17g", d);
        return buf;
    }
    return NULL;
}

static int listed(const sg_policy_rule_t *r, const char *value)
{
    for (size_t i = 0; value && i < r->nvalues; i++)
        if (strcmp(r->values[i], value) == 0)
            return 1;
    return 0;
}

/* A bounded writer for explanations; a NULL buffer makes every write a no-op. */
typedef struct {
    char *p;
    size_t cap;
    size_t len;
} writer_t;

/* Appends to w; text that does not fit is cut, and the cut marked with "...". */
__attribute__((format(printf, 2, 3))) static void say(writer_t *w, const char *fmt, ...)
{
    if (!w->p)
        return;
    size_t room = w->cap - w->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->p + w->len, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < room) {
        w->len += (size_t)n;
        return;
    }
    w->len = w->cap - 1;
    if (w->cap > 4)
        memcpy(w->p + w->cap - 4, "...", 4);
}

static void say_values(writer_t *w, const sg_policy_rule_t *r)
{
    say(w, "[");
    for (size_t i = 0; i < r->nvalues; i++)
        say(w, "%s%s", i ? ", " : "", r->values[i]);
    say(w, "]");
}

static void say_array(writer_t *w, const cJSON *a)
{
    char num[32];
    int i = 0;
    say(w, "[");
    for (const cJSON *e = a->child; e; e = e->next, i++) {
        if (i == ECHO_ITEMS) {
            say(w, ", ...");
            break;
        }
        const char *s = scalar_text(e, num, sizeof(num));
        say(w, "%s%.*s", i ? ", " : "", ECHO_MAX, s ? s : "?");
    }
    say(w, "]");
}

int sg_policy_rule_why_not(const sg_policy_rule_t *r, const cJSON *claims, char *why, size_t whylen)
{
    writer_t w = {.p = whylen ? why : NULL, .cap = whylen};
    if (w.p)
        w.p[0] = '\0';
    if (r->kind == SG_RULE_DEFAULT)
        return 1;
    const cJSON *v = sg_policy_claim(claims, r->claim);
    if (!v || cJSON_IsNull(v)) {
        say(&w, "claim '%s' %s", r->claim, v ? "is null" : "missing");
        return 0;
    }
    if (cJSON_IsObject(v)) {
        say(&w, "claim '%s' is an object, not a value", r->claim);
        return 0;
    }
    char num[32];
    if (cJSON_IsArray(v)) {
        if (r->kind == SG_RULE_IN) {
            say(&w, "claim '%s' is a list; 'in' compares one value (use 'contains')", r->claim);
            return 0;
        }
        for (const cJSON *e = v->child; e; e = e->next)
            if (listed(r, scalar_text(e, num, sizeof(num))))
                return 1;
        say(&w, "claim '%s' ", r->claim);
        say_array(&w, v);
        say(&w, " holds none of ");
        say_values(&w, r);
        return 0;
    }
    const char *s = scalar_text(v, num, sizeof(num));
    if (listed(r, s))
        return 1;
    say(&w, "'%.*s' not in ", ECHO_MAX, s ? s : "?");
    say_values(&w, r);
    return 0;
}

sg_rc sg_policy_resolve(const sg_policy_t *p, const cJSON *claims, sg_policy_result_t *out)
{
    for (size_t i = 0; i < p->nrules; i++) {
        const sg_policy_rule_t *r = &p->rules[i];
        if (!sg_policy_rule_why_not(r, claims, NULL, 0))
            continue;
        out->role = r->role;
        out->rule = r;
        out->rule_index = i;
        out->signin = &p->signin;
        return SG_OK;
    }
    return SG_ERR_NOTFOUND;
}

/* Adds child under key; on failure deletes child, so the caller only checks the result. */
static int attach(cJSON *parent, const char *key, cJSON *child)
{
    if (!child)
        return -1;
    if (!cJSON_AddItemToObject(parent, key, child)) {
        cJSON_Delete(child);
        return -1;
    }
    return 0;
}

static cJSON *app_json(const char *app, const char *const *scopes, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "app", app) ||
        attach(o, "scopes", cJSON_CreateStringArray(scopes, (int)n)) != 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* A number of seconds, or null for 0 ("not declared", "never"). */
/* A duration as the policy file writes it ("15m"), or null when unset. */
static cJSON *secs_or_null(long long v)
{
    char buf[32];
    return v ? cJSON_CreateString(sg_duration_format(v, buf, sizeof(buf))) : cJSON_CreateNull();
}

static cJSON *add_duration(cJSON *o, const char *key, long long v)
{
    char buf[32];
    return cJSON_AddStringToObject(o, key, sg_duration_format(v, buf, sizeof(buf)));
}

/* offline.provider: the declared refresh-token policy and what it means (null: none). */
static cJSON *provider_json(const sg_policy_offline_t *off)
{
    if (!off->refresh_token_policy)
        return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "refresh_token_policy", off->refresh_token_policy) ||
        attach(o, "refresh_token_validity", secs_or_null(off->refresh_token_validity)) != 0 ||
        !cJSON_AddBoolToObject(o, "idle_ttl_limit", off->idle_ttl_limit) ||
        !cJSON_AddBoolToObject(o, "rotation", off->rotation) ||
        !(off->provider_app_name ? cJSON_AddStringToObject(o, "app_name", off->provider_app_name)
                                 : cJSON_AddNullToObject(o, "app_name")) ||
        attach(o, "idle_window", secs_or_null(off->idle_window)) != 0 ||
        attach(o, "absolute_lifetime", secs_or_null(off->absolute_lifetime)) != 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *keep_alive_json(const sg_policy_offline_t *off)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddBoolToObject(o, "enabled", off->keep_alive) ||
        !cJSON_AddNumberToObject(o, "at", off->keep_alive_at) ||
        !cJSON_AddNumberToObject(o, "jitter", off->keep_alive_jitter)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *offline_json(const sg_policy_offline_t *off)
{
    if (!off)
        return cJSON_CreateNull();
    cJSON *o = app_json(off->app, off->scopes, off->nscopes);
    cJSON *fb = o ? cJSON_CreateObject() : NULL;
    if (!o || !fb || !cJSON_AddNumberToObject(o, "grant_limit", off->grant_limit) ||
        !(off->token_ttl ? add_duration(o, "token_ttl", off->token_ttl)
                         : cJSON_AddNullToObject(o, "token_ttl")) ||
        !cJSON_AddBoolToObject(fb, "same_org", off->fallback_same_org) ||
        !(off->fallback_integration
              ? cJSON_AddStringToObject(fb, "integration", off->fallback_integration)
              : cJSON_AddNullToObject(fb, "integration"))) {
        cJSON_Delete(fb);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToObject(o, "fallback", fb);
    if (attach(o, "provider", provider_json(off)) != 0 ||
        attach(o, "keep_alive", keep_alive_json(off)) != 0 ||
        !add_duration(o, "warn_before", off->warn_before)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *rule_json(const sg_policy_t *p, const sg_policy_rule_t *r, size_t index,
                        const char *why)
{
    cJSON *o = cJSON_CreateObject();
    char *at = NULL;
    if (asprintf(&at, "%s:%d", p->source, r->line) < 0)
        at = NULL;
    /* Rules are numbered from 1, as the policy page and `policy diff` number them. */
    if (!o || !at || !cJSON_AddNumberToObject(o, "number", (double)index + 1) ||
        !cJSON_AddNumberToObject(o, "line", r->line) || !cJSON_AddStringToObject(o, "at", at) ||
        !cJSON_AddStringToObject(o, "text", r->text) ||
        (why && !cJSON_AddStringToObject(o, "why", why))) {
        free(at);
        cJSON_Delete(o);
        return NULL;
    }
    free(at);
    return o;
}

static cJSON *session_json(const sg_policy_role_t *role)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !add_duration(o, "idle", role->idle) || !add_duration(o, "max", role->max)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *skipped_json(const sg_policy_t *p, const cJSON *claims, size_t upto)
{
    cJSON *a = cJSON_CreateArray();
    char why[512];
    for (size_t i = 0; a && i < upto; i++) {
        sg_policy_rule_why_not(&p->rules[i], claims, why, sizeof(why));
        cJSON *r = rule_json(p, &p->rules[i], i, why);
        if (!r || !cJSON_AddItemToArray(a, r)) {
            cJSON_Delete(r);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

sg_rc sg_policy_explain(const sg_policy_t *p, const cJSON *claims, cJSON **out)
{
    *out = NULL;
    sg_policy_result_t res;
    sg_rc rc = sg_policy_resolve(p, claims, &res);
    if (rc)
        return rc;
    const sg_policy_role_t *role = res.role;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "role", role->name) ||
        attach(o, "rule", rule_json(p, res.rule, res.rule_index, NULL)) != 0 ||
        attach(o, "signin", app_json(p->signin.app, p->signin.scopes, p->signin.nscopes)) != 0 ||
        attach(o, "offline", offline_json(role->offline)) != 0 ||
        attach(o, "session", session_json(role)) != 0 ||
        !cJSON_AddBoolToObject(o, "can_view_policy", role->can_view_policy) ||
        !cJSON_AddBoolToObject(o, "can_end_sessions", role->can_end_sessions) ||
        !(p->signin.signout_provider < 0
              ? cJSON_AddNullToObject(o, "signout_provider")
              : cJSON_AddBoolToObject(o, "signout_provider", p->signin.signout_provider)) ||
        attach(o, "skipped", skipped_json(p, claims, res.rule_index)) != 0) {
        cJSON_Delete(o);
        return SG_ERR_NOMEM;
    }
    *out = o;
    return SG_OK;
}
