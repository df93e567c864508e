/*
 * The access review report, on the internal listener only, behind the bearer key of
 * internal_key_file: what `scopegate grants report` asks the running gateway for the periodic
 * review of who may do what (docs/operations.md, "Access review").
 *
 *   GET /v1/access-report   {"generated","policy_sha256","grants":[...],"sessions":[...]}
 *
 * grants: every offline grant in every state, oldest first, with the role its person has under
 * the policy in force, decided from the claims the store keeps of their latest sign-in (null
 * when none are kept). sessions: one item per person and role with a live session in the
 * store, whichever instance holds it. Times are ISO 8601 UTC text (null: never), so that the
 * JSON and the CSV the command makes of it say the same. Nothing secret is in it: no token,
 * no session id or its hash, no claims.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "2026-12-07T12:00:00Z"; null for 0 (never). */
static int add_time(cJSON *o, const char *key, long long t)
{
    char text[32];
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || !gmtime_r(&tt, &tm) ||
        strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return cJSON_AddNullToObject(o, key) != NULL;
    return cJSON_AddStringToObject(o, key, text) != NULL;
}

/* ---- grants ---------------------------------------------------------------------------------- */

/*
 * The role user_id has under pol, from the claims of their latest sign-in: into *role (a
 * name that lives as long as pol), NULL when the store keeps no claims for them, they are not
 * JSON, or no rule matches. SG_OK, or the store's error.
 */
static sg_rc role_now(sg_gateway_t *gw, const sg_policy_t *pol, const char *user_id,
                      const char **role)
{
    *role = NULL;
    char *text = NULL;
    sg_rc rc = gw->store->ops->person_get(gw->store, user_id, &text);
    if (rc == SG_ERR_NOTFOUND)
        return SG_OK;
    if (rc)
        return rc;
    cJSON *claims = cJSON_Parse(text);
    free(text);
    sg_policy_result_t res;
    if (claims && sg_policy_resolve(pol, claims, &res) == SG_OK)
        *role = res.role->name;
    cJSON_Delete(claims);
    return SG_OK;
}

static cJSON *grant_item(const sg_grant_rec_t *g, const char *role)
{
    cJSON *o = cJSON_CreateObject();
    int ok =
        o && sg_json_add_num(o, "grant_id", g->id) && sg_json_add_str(o, "user_id", g->user_id) &&
        sg_json_add_str(o, "username", g->username) && sg_json_add_str(o, "org_id", g->org_id) &&
        sg_json_add_str(o, "app", g->app) && sg_json_add_str(o, "role", role) &&
        sg_json_add_str(o, "scopes", g->scopes) &&
        sg_json_add_str(o, "state", sg_vault_state_name(g->state)) &&
        sg_json_add_str(o, "cause", g->cause) && add_time(o, "created", g->created) &&
        add_time(o, "last_refreshed", g->last_refreshed) &&
        add_time(o, "last_used", g->last_used) && sg_json_add_num(o, "use_count", g->use_count);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Fills list with every grant. SG_OK, or why not. */
static sg_rc add_grants(sg_gateway_t *gw, const sg_policy_t *pol, cJSON *list)
{
    sg_grant_view_t *g = NULL;
    size_t n = 0;
    sg_rc rc = sg_vault_report(gw->vault, &g, &n);
    if (rc)
        return rc;
    const char **roles = calloc(n + 1, sizeof(*roles));
    if (!roles) {
        rc = SG_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        /* A person's earlier grant already asked the store for their role. */
        size_t j = 0;
        while (j < i && strcmp(g[j].rec.user_id, g[i].rec.user_id) != 0)
            j++;
        if (j < i)
            roles[i] = roles[j];
        else if ((rc = role_now(gw, pol, g[i].rec.user_id, &roles[i])) != SG_OK)
            goto fail;
        cJSON *item = grant_item(&g[i].rec, roles[i]);
        if (!item || !cJSON_AddItemToArray(list, item)) {
            cJSON_Delete(item);
            rc = SG_ERR_NOMEM;
            goto fail;
        }
    }
fail:
    free(roles);
    sg_grant_views_free(g, n);
    return rc;
}

/* ---- sessions -------------------------------------------------------------------------------- */

/* A live session as the report needs it (no id hash, no claims). */
typedef struct {
    char *user_id, *username, *email, *org_id, *role;
    long long created, last_seen;
} live_t;

typedef struct {
    live_t *v;
    size_t n, cap;
    long long now;
    int nomem;
} lives_t;

static void lives_free(lives_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].user_id);
        free(l->v[i].username);
        free(l->v[i].email);
        free(l->v[i].org_id);
        free(l->v[i].role);
    }
    free(l->v);
}

static int dup_or_null(char **out, const char *s)
{
    *out = s ? strdup(s) : NULL;
    return !s || *out;
}

/*
 * session_each's visit: copies each session still live at now, by the session module's own
 * rule (idle and absolute lifetime); one past either waits for the store's expiry sweep and
 * counts as ended here.
 */
static int collect_live(void *ctx, const sg_session_rec_t *rec)
{
    lives_t *l = ctx;
    if (l->now - rec->last_seen > rec->idle_timeout || l->now - rec->created > rec->max_lifetime ||
        !rec->user_id)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        live_t *v = realloc(l->v, cap * sizeof(*v));
        if (!v) {
            l->nomem = 1;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    live_t *s = &l->v[l->n++];
    memset(s, 0, sizeof(*s));
    s->created = rec->created;
    s->last_seen = rec->last_seen;
    if (!dup_or_null(&s->user_id, rec->user_id) || !dup_or_null(&s->username, rec->username) ||
        !dup_or_null(&s->email, rec->email) || !dup_or_null(&s->org_id, rec->org_id) ||
        !dup_or_null(&s->role, rec->role)) {
        l->nomem = 1;
        return 1;
    }
    return 0;
}

static int cmp_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "");
}

/* By person, then role, then sign-in (newest last): one run of equal person and role per row. */
static int live_cmp(const void *x, const void *y)
{
    const live_t *a = x, *b = y;
    int c = cmp_str(a->user_id, b->user_id);
    if (!c)
        c = cmp_str(a->role, b->role);
    if (!c)
        c = (a->created > b->created) - (a->created < b->created);
    return c;
}

/*
 * One row per person and role: a person whose sessions hold different roles (signed in
 * before and after their claims changed, and no reload since) is listed once for each, so
 * no access goes unreviewed. Names come from the newest session of the run.
 */
static cJSON *session_item(const live_t *run, size_t k)
{
    const live_t *newest = &run[k - 1];
    long long first = run[0].created, last = 0;
    for (size_t i = 0; i < k; i++)
        if (run[i].last_seen > last)
            last = run[i].last_seen;
    cJSON *o = cJSON_CreateObject();
    int ok = o && sg_json_add_str(o, "user_id", newest->user_id) &&
             sg_json_add_str(o, "username", newest->username) &&
             sg_json_add_str(o, "email", newest->email) &&
             sg_json_add_str(o, "org_id", newest->org_id) &&
             sg_json_add_str(o, "role", newest->role) &&
             sg_json_add_num(o, "sessions", (long long)k) && add_time(o, "first_sign_in", first) &&
             add_time(o, "last_seen", last);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static sg_rc add_sessions(sg_gateway_t *gw, long long now, cJSON *list)
{
    lives_t l = {.now = now};
    sg_rc rc = gw->store->ops->session_each(gw->store, collect_live, &l);
    if (!rc && l.nomem)
        rc = SG_ERR_NOMEM;
    if (rc)
        goto fail;
    if (l.n)
        qsort(l.v, l.n, sizeof(*l.v), live_cmp);
    for (size_t i = 0; i < l.n;) {
        size_t k = 1;
        while (i + k < l.n && cmp_str(l.v[i].user_id, l.v[i + k].user_id) == 0 &&
               cmp_str(l.v[i].role, l.v[i + k].role) == 0)
            k++;
        cJSON *item = session_item(&l.v[i], k);
        if (!item || !cJSON_AddItemToArray(list, item)) {
            cJSON_Delete(item);
            rc = SG_ERR_NOMEM;
            goto fail;
        }
        i += k;
    }
fail:
    lives_free(&l);
    return rc;
}

/* ---- GET /v1/access-report ------------------------------------------------------------------ */

void sg_route_access_report(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    long long now = sg_gw_now();
    /* One policy for the whole report, even if a reload lands meanwhile. */
    const sg_policy_t *pol = sg_gw_policy(gw);
    cJSON *o = cJSON_CreateObject();
    cJSON *grants = NULL, *sessions = NULL;
    sg_rc rc = SG_ERR_NOMEM;
    if (o && add_time(o, "generated", now) &&
        sg_json_add_str(o, "policy_sha256", sg_policy_hash(pol)) &&
        (grants = cJSON_AddArrayToObject(o, "grants")) != NULL &&
        (sessions = cJSON_AddArrayToObject(o, "sessions")) != NULL) {
        rc = add_grants(gw, pol, grants);
        if (!rc)
            rc = add_sessions(gw, now, sessions);
    }
    if (rc) {
        cJSON_Delete(o);
        sg_resp_json_error(w, 500, "server_error",
                           rc == SG_ERR_NOMEM ? "out of memory" : "the store could not be read");
        return;
    }
    sg_resp_json_body(w, 200, o);
}
