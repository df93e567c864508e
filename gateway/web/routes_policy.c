/*
 * Policy operations: POST /v1/reload on the internal listener (the same as SIGHUP, answering
 * what happened), and the policy page GET /policy for roles the policy marks
 * can_view_policy: the policy in force (hash, file, loaded at), the last reload's result and
 * errors, the roles with their scopes, the live sessions (routes_sessions.c) and the latest
 * audit events.
 */
#include "fleet.h"
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scopegate/duration.h"
#include "scopegate/log.h"

#define AUDIT_TAIL_BYTES (64 * 1024)
#define AUDIT_TAIL_LINES 30

void sg_route_reload(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    sg_reload_result_t res;
    sg_gw_reload(gw, "POST /v1/reload", &res);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "result", res.ok ? "ok" : "error");
    cJSON_AddStringToObject(j, "sha256", res.sha256);
    cJSON *errs = cJSON_AddArrayToObject(j, "errors");
    pthread_mutex_lock(&gw->reload_lock);
    if (!res.ok) {
        char *copy = strdup(gw->last_reload_errors), *save = NULL;
        for (char *l = copy ? strtok_r(copy, "\n", &save) : NULL; l;
             l = strtok_r(NULL, "\n", &save))
            cJSON_AddItemToArray(errs, cJSON_CreateString(l));
        free(copy);
    }
    pthread_mutex_unlock(&gw->reload_lock);
    cJSON_AddNumberToObject(j, "sessions_changed", (double)res.sessions_changed);
    cJSON_AddNumberToObject(j, "sessions_ended", (double)res.sessions_ended);
    /* What changed for them, apart: one session may be in both. */
    cJSON_AddNumberToObject(j, "sessions_role_changed", (double)res.sessions_role_changed);
    cJSON_AddNumberToObject(j, "sessions_lifetime_changed", (double)res.sessions_lifetime_changed);
    /* 422: the file was read but is not a usable policy; the last good one stays. */
    sg_resp_json_body(w, res.ok ? 200 : 422, j);
}

/* One audit event as a table row: when, what, who, and the rest as "key value" pairs. */
static void audit_row(sg_buf_t *b, const char *line)
{
    cJSON *j = cJSON_Parse(line);
    if (!cJSON_IsObject(j)) {
        sg_buf_adds(b, "<tr><td colspan=\"4\"><code>");
        sg_buf_add_html(b, line);
        sg_buf_adds(b, "</code></td></tr>\n");
        cJSON_Delete(j);
        return;
    }
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts");
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "event");
    const cJSON *who = cJSON_GetObjectItemCaseSensitive(j, "username");
    if (!cJSON_IsString(who))
        who = cJSON_GetObjectItemCaseSensitive(j, "user_id");
    char when[32] = "";
    if (cJSON_IsString(ts)) /* "2026-12-07T03:20:01.412Z" -> "2026-12-07 03:20:01" */
        snprintf(when, sizeof(when), "%.10s %.8s", ts->valuestring,
                 strlen(ts->valuestring) > 11 ? ts->valuestring + 11 : "");
    sg_buf_adds(b, "<tr><td data-label=\"When\">");
    sg_buf_add_html(b, when);
    sg_buf_adds(b, "</td><td data-label=\"Event\"><b>");
    sg_buf_add_html(b, cJSON_IsString(ev) ? ev->valuestring : "?");
    sg_buf_adds(b, "</b></td><td data-label=\"Who\">");
    sg_buf_add_html(b, cJSON_IsString(who) ? who->valuestring : "-");
    sg_buf_adds(b, "</td><td data-label=\"Details\">");
    const cJSON *f;
    int first = 1;
    cJSON_ArrayForEach(f, j)
    {
        const char *k = f->string;
        if (!k || f == ts || f == ev || f == who || strcmp(k, "user_id") == 0)
            continue;
        char num[32];
        const char *v = cJSON_IsString(f) ? f->valuestring : NULL;
        if (cJSON_IsNumber(f)) {
            snprintf(num, sizeof(num), "%.0f", f->valuedouble);
            v = num;
        } else if (cJSON_IsBool(f)) {
            v = cJSON_IsTrue(f) ? "true" : "false";
        }
        if (!v)
            continue;
        sg_buf_adds(b, first ? "" : ", ");
        first = 0;
        sg_buf_adds(b, "<span class=\"muted\">");
        sg_buf_add_html(b, k);
        sg_buf_adds(b, "</span> ");
        /* Hashes are long and alike: their start tells them apart. */
        int hash = strcmp(k, "sha256") == 0 || strcmp(k, "policy") == 0;
        if (hash && strlen(v) == 64) {
            sg_buf_adds(b, "<code>");
            sg_buf_add(b, v, 12);
            sg_buf_adds(b, "</code>");
        } else {
            sg_buf_add_html(b, v);
        }
    }
    sg_buf_adds(b, "</td></tr>\n");
    cJSON_Delete(j);
}

/* The last lines of the audit log, newest first, as a table. */
static void audit_tail(sg_gateway_t *gw, sg_buf_t *b)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/audit.log", gw->cfg.state_dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        sg_buf_adds(b, "<p>No audit events yet.</p>\n");
        return;
    }
    char *tail = malloc(AUDIT_TAIL_BYTES + 1);
    size_t n = 0;
    if (tail && fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > AUDIT_TAIL_BYTES ? size - AUDIT_TAIL_BYTES : 0;
        if (fseek(f, from, SEEK_SET) == 0)
            n = fread(tail, 1, AUDIT_TAIL_BYTES, f);
    }
    fclose(f);
    if (!tail) {
        sg_buf_adds(b, "<p>The audit log could not be read.</p>\n");
        return;
    }
    tail[n] = '\0';
    /* Find the start of the last AUDIT_TAIL_LINES complete lines. */
    size_t lines = 0, start = n;
    while (start > 0 && lines <= AUDIT_TAIL_LINES) {
        start--;
        if (tail[start] == '\n' && start + 1 < n)
            lines++;
    }
    char *from = tail + start + (tail[start] == '\n' ? 1 : 0);
    char *lines_at[AUDIT_TAIL_LINES + 2];
    size_t nl = 0;
    char *save = NULL;
    for (char *l = strtok_r(from, "\n", &save); l && nl < sizeof(lines_at) / sizeof(lines_at[0]);
         l = strtok_r(NULL, "\n", &save))
        lines_at[nl++] = l;
    sg_buf_adds(b, "<table id=\"audit\" class=\"stack\"><tr class=\"head\"><th>When (UTC)</th>"
                   "<th>Event</th><th>Who</th><th>Details</th></tr>\n");
    while (nl > 0)
        audit_row(b, lines_at[--nl]);
    sg_buf_adds(b, "</table>\n");
    free(tail);
}

static void scopes_html(sg_buf_t *b, const char *const *scopes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sg_buf_adds(b, i ? " " : "");
        sg_buf_adds(b, "<code>");
        sg_buf_add_html(b, scopes[i]);
        sg_buf_adds(b, "</code>");
    }
}

typedef struct {
    sg_buf_t *b;
    const char *mine; /* this instance's policy digest */
    int differ;       /* some instance enforces another policy */
} instances_t;

static void instance_row(void *ctx, const sg_instance_rec_t *rec, int self)
{
    instances_t *in = ctx;
    int other = !rec->policy_sha256 || strcmp(rec->policy_sha256, in->mine) != 0;
    in->differ |= other;
    char beat[64];
    sg_fmt_time(rec->last_beat, beat, sizeof(beat));
    sg_buf_adds(in->b, "<tr><td data-label=\"Instance\"><code>");
    sg_buf_add_html(in->b, rec->id);
    sg_buf_adds(in->b, self ? "</code> (this one)" : "</code>");
    sg_buf_adds(in->b, "</td><td data-label=\"Host\">");
    sg_buf_add_html(in->b, rec->host ? rec->host : "-");
    sg_buf_adds(in->b, "</td><td data-label=\"Version\">");
    sg_buf_add_html(in->b, rec->version ? rec->version : "-");
    sg_buf_printf(in->b, "</td><td data-label=\"Policy\"><code>%.12s</code>%s</td>",
                  rec->policy_sha256 ? rec->policy_sha256 : "-", other ? " <b>differs</b>" : "");
    sg_buf_printf(in->b, "<td data-label=\"Last seen\">%s</td></tr>\n", beat);
}

/* Several instances on one store: each with its policy; a warning when they differ. */
static void instances_html(sg_gateway_t *gw, const sg_policy_t *pol, sg_buf_t *b)
{
    if (!gw->fleet)
        return;
    sg_buf_t rows;
    sg_buf_init(&rows, 1 << 18);
    instances_t in = {.b = &rows, .mine = sg_policy_hash(pol)};
    size_t n = sg_fleet_instances(gw->fleet, instance_row, &in);
    sg_buf_printf(b, "<h2>Instances</h2>\n<p>%zu gateway instance%s share%s this store.</p>\n", n,
                  n == 1 ? "" : "s", n == 1 ? "s" : "");
    if (in.differ)
        sg_buf_adds(b, "<div class=\"warn\" id=\"policy-differs\"><p>Not every instance enforces "
                       "the policy above: reload each of them (SIGHUP or <code>POST "
                       "/v1/reload</code>) so that people get the same access whichever one "
                       "answers.</p></div>\n");
    sg_buf_adds(b, "<table id=\"instances\" class=\"stack\"><tr class=\"head\"><th>Instance</th>"
                   "<th>Host</th><th>Version</th><th>Policy</th><th>Last seen</th></tr>\n");
    sg_buf_adds(b, rows.ptr ? rows.ptr : "");
    sg_buf_adds(b, "</table>\n");
    sg_buf_free(&rows);
}

void sg_route_policy_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    if (sg_gw_current_session(gw, r, &v)) {
        sg_resp_redirect(w, "/login?rd=%2Fpolicy");
        return;
    }
    sg_policy_t *pol = sg_gw_policy(gw);
    const sg_policy_role_t *me = sg_policy_role(pol, v.role);
    if (!me || !me->can_view_policy) {
        sg_page_error(gw, r, w, 403, "This page is for security staff",
                      "The access policy page shows who may use the application and how; your "
                      "access does not include it.",
                      "If your work needs it, ask your administrators.");
        return;
    }
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    char loaded[64], reloaded[64];
    pthread_mutex_lock(&gw->reload_lock);
    sg_fmt_time(gw->policy_loaded_at, loaded, sizeof(loaded));
    sg_fmt_time(gw->last_reload_at, reloaded, sizeof(reloaded));
    sg_buf_adds(&b, "<table class=\"stack\">\n<tr><th>In force</th><td><code id=\"policy-hash\">");
    sg_buf_add_html(&b, sg_policy_hash(pol));
    sg_buf_adds(&b, "</code></td></tr>\n<tr><th>File</th><td><code>");
    sg_buf_add_html(&b, sg_policy_source(pol));
    sg_buf_printf(&b, "</code></td></tr>\n<tr><th>Loaded at</th><td>%s</td></tr>\n", loaded);
    sg_buf_printf(&b, "<tr><th>Last reload</th><td id=\"last-reload\">%s: <b>%s</b> (", reloaded,
                  gw->last_reload_ok ? "ok" : "rejected");
    sg_buf_add_html(&b, gw->last_reload_trigger);
    sg_buf_adds(&b, ")</td></tr>\n</table>\n");
    if (!gw->last_reload_ok && gw->last_reload_errors[0]) {
        sg_buf_adds(&b, "<div class=\"error\"><p>The last reload was refused; the policy above "
                        "stays in force. What was wrong with the new file:</p>\n"
                        "<pre id=\"reload-errors\">");
        sg_buf_add_html(&b, gw->last_reload_errors);
        sg_buf_adds(&b, "</pre></div>\n");
    }
    pthread_mutex_unlock(&gw->reload_lock);

    const sg_policy_signin_t *si = sg_policy_signin(pol);
    sg_buf_adds(&b, "<h2>Sign-in</h2>\n<p>App <code>");
    sg_buf_add_html(&b, si->app);
    sg_buf_adds(&b, "</code>, scopes ");
    scopes_html(&b, si->scopes, si->nscopes);
    sg_buf_adds(&b, "</p>\n<h2>Roles</h2>\n<table id=\"roles\" class=\"stack\"><tr "
                    "class=\"head\"><th>Role</th><th>Offline app</th><th>Offline scopes</th>"
                    "<th>Session</th></tr>\n");
    size_t nroles = 0;
    const sg_policy_role_t *roles = sg_policy_roles(pol, &nroles);
    for (size_t i = 0; i < nroles; i++) {
        char idle[32], max[32];
        sg_buf_adds(&b, "<tr><td data-label=\"Role\"><b>");
        sg_buf_add_html(&b, roles[i].name);
        sg_buf_adds(&b, "</b></td><td data-label=\"Offline app\">");
        if (roles[i].offline) {
            sg_buf_add_html(&b, roles[i].offline->app);
            sg_buf_adds(&b, "</td><td data-label=\"Offline scopes\">");
            scopes_html(&b, roles[i].offline->scopes, roles[i].offline->nscopes);
        } else {
            sg_buf_adds(&b, "-</td><td data-label=\"Offline scopes\">-");
        }
        sg_buf_printf(&b, "</td><td data-label=\"Session\">idle %s, at most %s</td></tr>\n",
                      sg_duration_format(roles[i].idle, idle, sizeof(idle)),
                      sg_duration_format(roles[i].max, max, sizeof(max)));
    }
    sg_buf_adds(&b, "</table>\n<h2>Rules (first match wins)</h2>\n<ol id=\"rules\">\n");
    size_t nrules = 0;
    const sg_policy_rule_t *rules = sg_policy_rules(pol, &nrules);
    for (size_t i = 0; i < nrules; i++) {
        sg_buf_adds(&b, "<li>");
        sg_buf_add_html(&b, rules[i].text);
        sg_buf_adds(&b, " &rarr; <b>");
        sg_buf_add_html(&b, rules[i].role ? rules[i].role->name : "?");
        sg_buf_printf(&b, "</b> <span class=\"muted\">(line %d)</span></li>\n", rules[i].line);
    }
    sg_buf_adds(&b, "</ol>\n");
    instances_html(gw, pol, &b);
    sg_policy_sessions(gw, &b, me);
    sg_buf_adds(&b, "<h2>Latest audit events</h2>\n");
    audit_tail(gw, &b);
    sg_buf_adds(&b, "<div class=\"actions\"><a class=\"button secondary\" href=\"/\">Your "
                    "account</a></div>");
    sg_page(gw, r, w, 200, "Access policy", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}
