/*
 * Signing people out everywhere: lists of live sessions and ways to end them, for incident
 * response and for people themselves.
 *
 * Internal listener (the bearer key of internal_key_file; what `scopegate sessions` asks):
 *   GET  /v1/sessions[?user=ID | ?email=E]   {"now","count","sessions":[...]}
 *   POST /v1/sessions/end                    JSON or form: exactly one of user, email,
 *                                            session_id_prefix (8 to 64 hex digits) or
 *                                            all=true, and an optional reason; {"ended":N,...}
 * Public listener:
 *   POST /sessions/end                       the signed-in person ends one of their other
 *                                            sessions (session=ID HASH) or all of them
 *                                            (others=1), from the home page's list
 *   GET  /policy/sessions/end?user=ID        asks "End NAME's sessions?" (can_end_sessions)
 *   POST /policy/sessions/end                ends them (can_end_sessions, CSRF)
 * and the two lists: the home page's "where you are signed in" and the policy page's
 * Sessions section (sg_home_sessions, sg_policy_sessions).
 *
 * A session is named by its id hash (SHA-256 of the cookie; the gateway never keeps the
 * cookie), shown as its first SESSION_REF_LEN hex digits. Every end is audited as
 * sessions_ended with who asked, the filter, how many ended and the reason; sg_sessions_end
 * takes the sessions out of memory at once (so /auth refuses them) and, on a shared store,
 * tells the other instances.
 */
#include "gateway.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/log.h"

#define SESSION_REF_LEN   12  /* hex digits of the id hash shown as a session's id */
#define PREFIX_MIN        8   /* the shortest id hash prefix that may end sessions */
#define REASON_MAX        500 /* bytes of an end's reason */
#define HOME_SESSIONS_MAX 50  /* one person's sessions listed on their home page */
#define PAGE_SESSIONS_MAX 500 /* sessions listed on the policy page */
#define AGENT_SHORT       60  /* bytes of a User-Agent shown where no browser was recognized */
#define ACTOR_OPERATOR    "operator via internal listener"

/* ---- browsers in words -------------------------------------------------------------------- */

/* The major version after token in ua ("Firefox/121.0" -> 121), or -1. */
static long major_after(const char *ua, const char *token)
{
    const char *p = strstr(ua, token);
    if (!p || !isdigit((unsigned char)p[strlen(token)]))
        return -1;
    return strtol(p + strlen(token), NULL, 10);
}

/*
 * A User-Agent as people recognize it: "Firefox 121 on Linux", "Safari 17 on iPhone". Only
 * for telling one's sessions apart (a User-Agent is the browser's own claim). Not one of the
 * browsers below: the text itself, cut to AGENT_SHORT bytes on a character's start.
 */
static void agent_summary(const char *ua, char *out, size_t n)
{
    static const struct {
        const char *token, *name;
    } browsers[] = {
        /* The order matters: Edge and Opera also say Chrome, Chrome also says Safari. */
        {"Edg/", "Edge"},        {"OPR/", "Opera"},
        {"Firefox/", "Firefox"}, {"HeadlessChrome/", "Headless Chrome"},
        {"Chrome/", "Chrome"},   {"CriOS/", "Chrome"},
        {"FxiOS/", "Firefox"},   {"Version/", "Safari"},
        {"curl/", "curl"},
    };
    static const struct {
        const char *token, *name;
    } systems[] = {
        {"Windows", "Windows"}, {"Android", "Android"}, {"iPhone", "iPhone"}, {"iPad", "iPad"},
        {"CrOS", "ChromeOS"},   {"Mac OS X", "macOS"},  {"Linux", "Linux"},
    };
    if (!ua || !*ua) {
        snprintf(out, n, "unknown browser");
        return;
    }
    for (size_t i = 0; i < sizeof(browsers) / sizeof(browsers[0]); i++) {
        long v = major_after(ua, browsers[i].token);
        if (v < 0 || (strcmp(browsers[i].name, "Safari") == 0 && !strstr(ua, "Safari/")))
            continue;
        const char *os = NULL;
        for (size_t k = 0; !os && k < sizeof(systems) / sizeof(systems[0]); k++)
            if (strstr(ua, systems[k].token))
                os = systems[k].name;
        snprintf(out, n, "%s %ld%s%s", browsers[i].name, v, os ? " on " : "", os ? os : "");
        return;
    }
    size_t len = strlen(ua);
    if (len + 1 <= n && len <= AGENT_SHORT) {
        snprintf(out, n, "%s", ua);
        return;
    }
    size_t cut = AGENT_SHORT < n - 4 ? AGENT_SHORT : n - 4;
    while (cut > 0 && ((unsigned char)ua[cut] & 0xC0) == 0x80)
        cut--;
    snprintf(out, n, "%.*s...", (int)cut, ua);
}

/* ---- sessions, copied out of the store's walk --------------------------------------------- */

typedef struct {
    char id_hash[SG_ID_HASH_LEN + 1];
    char *user_id, *org_id, *username, *email, *role, *user_agent;
    long long created, last_seen, expires_at;
} row_t;

typedef struct {
    row_t *rows;
    size_t n, cap, max; /* at most max rows are kept; more counts the others */
    size_t more;
    int nomem;
} rows_t;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void row_free(row_t *r)
{
    free(r->user_id);
    free(r->org_id);
    free(r->username);
    free(r->email);
    free(r->role);
    free(r->user_agent);
}

static void rows_free(rows_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        row_free(&l->rows[i]);
    free(l->rows);
    memset(l, 0, sizeof(*l));
}

static int keep_row(void *ctx, const sg_session_rec_t *rec)
{
    rows_t *l = ctx;
    if (l->n == l->max) {
        l->more++;
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        row_t *p = realloc(l->rows, cap * sizeof(*p));
        if (!p) {
            l->nomem = 1;
            return 1;
        }
        l->rows = p;
        l->cap = cap;
    }
    row_t *r = &l->rows[l->n];
    memset(r, 0, sizeof(*r));
    memcpy(r->id_hash, rec->id_hash, sizeof(r->id_hash));
    r->user_id = dup_or_null(rec->user_id);
    r->org_id = dup_or_null(rec->org_id);
    r->username = dup_or_null(rec->username);
    r->email = dup_or_null(rec->email);
    r->role = dup_or_null(rec->role);
    r->user_agent = dup_or_null(rec->user_agent);
    if ((rec->user_id && !r->user_id) || (rec->org_id && !r->org_id) ||
        (rec->username && !r->username) || (rec->email && !r->email) || (rec->role && !r->role) ||
        (rec->user_agent && !r->user_agent)) {
        row_free(r);
        l->nomem = 1;
        return 1;
    }
    r->created = rec->created;
    r->last_seen = rec->last_seen;
    long long idle = rec->last_seen + rec->idle_timeout, max = rec->created + rec->max_lifetime;
    r->expires_at = idle < max ? idle : max;
    l->n++;
    return 0;
}

/* The live sessions f selects (NULL: every one), oldest first, at most max of them. */
static sg_rc select_rows(sg_gateway_t *gw, const sg_session_filter_t *f, size_t max, rows_t *out)
{
    memset(out, 0, sizeof(*out));
    out->max = max;
    sg_rc rc = sg_sessions_select(gw->sessions, f, sg_gw_now(), keep_row, out);
    if (!rc && out->nomem)
        rc = SG_ERR_NOMEM;
    if (rc)
        rows_free(out);
    return rc;
}

/* What a session's person is called: username, else email, else the user id. */
static const char *person_of(const row_t *r)
{
    if (r->username && *r->username)
        return r->username;
    if (r->email && *r->email)
        return r->email;
    return r->user_id ? r->user_id : "?";
}

/* ---- ending, audited ---------------------------------------------------------------------- */

/* What an end was asked for, as the audit line and the answers name it. */
typedef struct {
    const char *actor;  /* ACTOR_OPERATOR, or the user id of the person who pressed */
    const char *filter; /* "user", "email", "session_id_prefix", "all", "session", "others" */
    const char *user_id, *email, *prefix, *reason;
} end_req_t;

static void audit_end(sg_gateway_t *gw, const sg_req_t *r, const end_req_t *e, size_t n)
{
    char count[32];
    snprintf(count, sizeof(count), "%zu", n);
    sg_audit(gw->audit, "sessions_ended", "actor", e->actor, "filter", e->filter, "user_id",
             e->user_id, "email", e->email, "session_id_prefix", e->prefix, "#count", count,
             "reason", e->reason, NULL);
    sg_log(SG_LOG_INFO, "sessions_ended", "rid=%s %zu session(s) ended by %s (filter %s%s%s)",
           r->request_id, n, e->actor, e->filter, e->user_id ? ", user " : "",
           e->user_id ? e->user_id : "");
}

/* Ends every session of l but skip_hash's (may be NULL); *n gets how many ended. */
static sg_rc end_rows(sg_gateway_t *gw, const rows_t *l, const char *skip_hash, size_t *n)
{
    sg_rc rc = SG_OK;
    *n = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (skip_hash && strcmp(l->rows[i].id_hash, skip_hash) == 0)
            continue;
        sg_rc erc = sg_session_end_hash(gw->sessions, l->rows[i].id_hash);
        if (erc == SG_OK)
            (*n)++;
        else if (erc != SG_ERR_NOTFOUND && !rc)
            rc = erc;
    }
    return rc;
}

/* ---- GET /v1/sessions ----------------------------------------------------------------------- */

static cJSON *row_json(const row_t *r)
{
    char ref[SESSION_REF_LEN + 1], browser[128];
    snprintf(ref, sizeof(ref), "%.*s", SESSION_REF_LEN, r->id_hash);
    agent_summary(r->user_agent, browser, sizeof(browser));
    cJSON *o = cJSON_CreateObject();
    int ok =
        o && sg_json_add_str(o, "session_id", ref) && sg_json_add_str(o, "id_hash", r->id_hash) &&
        sg_json_add_str(o, "user_id", r->user_id) && sg_json_add_str(o, "username", r->username) &&
        sg_json_add_str(o, "email", r->email) && sg_json_add_str(o, "org_id", r->org_id) &&
        sg_json_add_str(o, "role", r->role) && sg_json_add_str(o, "browser", browser) &&
        sg_json_add_str(o, "user_agent", r->user_agent) &&
        sg_json_add_num(o, "created", r->created) &&
        sg_json_add_num(o, "last_seen", r->last_seen) &&
        sg_json_add_num(o, "expires_at", r->expires_at);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* GET /v1/sessions's query: none, or one of user= and email= with a value. 0, or -1 with
 * the 400 answered. */
static int query_ok(sg_req_t *r, sg_resp_t *w)
{
    const sg_form_t *q = &r->query;
    if (r->query_bad || sg_form_first_dup(q)) {
        sg_resp_json_error(w, 400, "invalid_request",
                           "the query string is malformed or repeats a parameter");
        return -1;
    }
    for (size_t i = 0; i < q->n; i++) {
        const char *k = q->item[i].key;
        if (strcmp(k, "user") != 0 && strcmp(k, "email") != 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "unknown parameter '%.60s' (use user=ID or email=E)", k);
            sg_resp_json_error(w, 400, "invalid_request", msg);
            return -1;
        }
        if (!*q->item[i].value) {
            sg_resp_json_error(w, 400, "invalid_request", "user= and email= need a value");
            return -1;
        }
    }
    if (q->n > 1) {
        sg_resp_json_error(w, 400, "invalid_request", "give user= or email=, not both");
        return -1;
    }
    return 0;
}

void sg_route_sessions(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w) || query_ok(r, w))
        return;
    sg_session_filter_t f = {.user_id = sg_form_get(&r->query, "user"),
                             .email = sg_form_get(&r->query, "email")};
    rows_t l;
    if (select_rows(gw, f.user_id || f.email ? &f : NULL, (size_t)-1, &l) != SG_OK) {
        sg_resp_json_error(w, 500, "server_error", "the sessions could not be read");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *list =
        o && sg_json_add_num(o, "now", sg_gw_now()) && sg_json_add_num(o, "count", (long long)l.n)
            ? cJSON_AddArrayToObject(o, "sessions")
            : NULL;
    int ok = list != NULL;
    for (size_t i = 0; ok && i < l.n; i++) {
        cJSON *item = row_json(&l.rows[i]);
        ok = item && cJSON_AddItemToArray(list, item);
        if (!ok)
            cJSON_Delete(item);
    }
    rows_free(&l);
    if (!ok) {
        cJSON_Delete(o);
        sg_resp_json_error(w, 500, "server_error", "out of memory");
        return;
    }
    sg_resp_json_body(w, 200, o);
}

/* ---- POST /v1/sessions/end ------------------------------------------------------------------ */

/* The fields of an end request, from a JSON object or a form (strings owned by the caller's
 * form or JSON). */
typedef struct {
    const char *user, *email, *prefix, *reason;
    int all;
} end_fields_t;

static const char *const end_keys[] = {"user", "email", "session_id_prefix", "all", "reason", NULL};

static int known_key(const char *k)
{
    for (size_t i = 0; end_keys[i]; i++)
        if (strcmp(k, end_keys[i]) == 0)
            return 1;
    return 0;
}

/* Reads the JSON object j into e: NULL, or what is wrong with it. */
static const char *fields_of_json(const cJSON *j, end_fields_t *e)
{
    if (!cJSON_IsObject(j))
        return "the body is not a JSON object";
    const cJSON *v;
    cJSON_ArrayForEach(v, j)
    {
        const char *k = v->string ? v->string : "";
        if (!known_key(k))
            return "unknown field (use user, email, session_id_prefix or all, and reason)";
        if (cJSON_GetObjectItemCaseSensitive(j, k) != v)
            return "a field is repeated";
        if (strcmp(k, "all") == 0) {
            if (!cJSON_IsBool(v))
                return "all must be true or false";
            e->all = cJSON_IsTrue(v);
            continue;
        }
        if (!cJSON_IsString(v))
            return "user, email, session_id_prefix and reason must be strings";
        const char *s = v->valuestring;
        if (strcmp(k, "user") == 0)
            e->user = s;
        else if (strcmp(k, "email") == 0)
            e->email = s;
        else if (strcmp(k, "session_id_prefix") == 0)
            e->prefix = s;
        else
            e->reason = s;
    }
    return NULL;
}

static const char *fields_of_form(const sg_form_t *f, end_fields_t *e)
{
    if (sg_form_first_dup(f))
        return "a field is repeated";
    for (size_t i = 0; i < f->n; i++)
        if (!known_key(f->item[i].key))
            return "unknown field (use user, email, session_id_prefix or all, and reason)";
    e->user = sg_form_get(f, "user");
    e->email = sg_form_get(f, "email");
    e->prefix = sg_form_get(f, "session_id_prefix");
    e->reason = sg_form_get(f, "reason");
    const char *all = sg_form_get(f, "all");
    if (all && strcmp(all, "true") != 0 && strcmp(all, "1") != 0 && strcmp(all, "false") != 0 &&
        strcmp(all, "0") != 0)
        return "all must be true or false";
    e->all = all && (strcmp(all, "true") == 0 || strcmp(all, "1") == 0);
    return NULL;
}

/* Checks the selector and the reason; the prefix is lower-cased into prefix. NULL, or what
 * is wrong. */
static const char *check_fields(const end_fields_t *e, char prefix[SG_ID_HASH_LEN + 1])
{
    int given = (e->user != NULL) + (e->email != NULL) + (e->prefix != NULL) + (e->all != 0);
    if (given != 1)
        return "give exactly one of user, email, session_id_prefix or all=true";
    if ((e->user && !*e->user) || (e->email && !*e->email))
        return "user and email need a value";
    if (e->prefix) {
        size_t n = strlen(e->prefix);
        if (n < PREFIX_MIN || n > SG_ID_HASH_LEN ||
            strspn(e->prefix, "0123456789abcdefABCDEF") != n)
            return "session_id_prefix must be 8 to 64 hex digits of a session's id (see GET "
                   "/v1/sessions)";
        for (size_t i = 0; i <= n; i++)
            prefix[i] = (char)tolower((unsigned char)e->prefix[i]);
    }
    if (e->reason && strlen(e->reason) > REASON_MAX)
        return "reason is longer than 500 bytes";
    return NULL;
}

void sg_route_sessions_end(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    const char *ctype = sg_req_header(r, "Content-Type");
    const char *body = r->body.ptr ? r->body.ptr : "";
    end_fields_t e = {0};
    const char *bad = NULL;
    cJSON *j = NULL;
    sg_form_t form = {0};
    if (sg_content_type_is(ctype, "application/json")) {
        j = cJSON_ParseWithLength(body, r->body.len);
        bad = fields_of_json(j, &e);
    } else if (sg_content_type_is(ctype, "application/x-www-form-urlencoded")) {
        bad = sg_form_parse(body, r->body.len, &form) ? "the form body is malformed"
                                                      : fields_of_form(&form, &e);
    } else {
        bad = "send a JSON object or a form (Content-Type application/json or "
              "application/x-www-form-urlencoded)";
    }
    char prefix[SG_ID_HASH_LEN + 1] = "";
    if (!bad)
        bad = check_fields(&e, prefix);
    if (bad) {
        sg_resp_json_error(w, 400, "invalid_request", bad);
        goto done;
    }
    sg_session_filter_t f = {
        .user_id = e.user, .email = e.email, .id_hash_prefix = e.prefix ? prefix : NULL};
    end_req_t what = {.actor = ACTOR_OPERATOR,
                      .filter = e.user     ? "user"
                                : e.email  ? "email"
                                : e.prefix ? "session_id_prefix"
                                           : "all",
                      .user_id = e.user,
                      .email = e.email,
                      .prefix = e.prefix ? prefix : NULL,
                      .reason = e.reason && *e.reason ? e.reason : NULL};
    size_t n = 0;
    sg_rc rc = sg_sessions_end(gw->sessions, e.all ? NULL : &f, &n);
    audit_end(gw, r, &what, n);
    if (rc) {
        /* Some may have ended before the store failed: the count says how many. */
        char msg[160];
        snprintf(msg, sizeof(msg), "the store failed after %zu session(s) ended: %s", n,
                 sg_rc_str(rc));
        sg_resp_json_error(w, 500, "server_error", msg);
        goto done;
    }
    /* The answer repeats the filter: {"user":"005..."}, {"all":true}. */
    cJSON *o = cJSON_CreateObject();
    cJSON *filt = o ? cJSON_AddObjectToObject(o, "filter") : NULL;
    int ok = filt && sg_json_add_num(o, "ended", (long long)n) &&
             sg_json_add_str(o, "reason", what.reason);
    if (ok && e.all)
        ok = cJSON_AddTrueToObject(filt, "all") != NULL;
    else if (ok)
        ok = sg_json_add_str(filt, what.filter, e.user ? e.user : e.email ? e.email : prefix);
    if (!ok) {
        cJSON_Delete(o);
        sg_resp_json_error(w, 500, "server_error", "out of memory");
        goto done;
    }
    sg_resp_json_body(w, 200, o);
done:
    cJSON_Delete(j);
    sg_form_free(&form);
}

/* ---- the home page: the person's own sessions ---------------------------------------------- */

/* A session's browser for pages: the summary, and the whole User-Agent in small print. */
static void browser_html(sg_buf_t *b, const char *ua)
{
    char summary[128];
    agent_summary(ua, summary, sizeof(summary));
    sg_buf_adds(b, "<span class=\"browser\">");
    sg_buf_add_html(b, summary);
    sg_buf_adds(b, "</span>");
    if (ua && *ua && strcmp(summary, ua) != 0) {
        sg_buf_adds(b, "<br><small class=\"agent\">");
        sg_buf_add_html(b, ua);
        sg_buf_adds(b, "</small>");
    }
}

void sg_home_sessions(sg_gateway_t *gw, sg_buf_t *b, const sg_session_view_t *v)
{
    sg_session_filter_t f = {.user_id = v->user_id};
    rows_t l;
    sg_buf_adds(b, "<h2 id=\"sessions-title\">Where you are signed in</h2>\n");
    if (select_rows(gw, &f, HOME_SESSIONS_MAX, &l) != SG_OK) {
        sg_buf_adds(b, "<p class=\"warn\">Your sessions could not be listed just now.</p>\n");
        return;
    }
    char csrf[64];
    sg_csrf_token(gw, v->id_hash, csrf, sizeof(csrf));
    size_t others = 0;
    sg_buf_adds(b, "<table id=\"sessions\" class=\"stack\"><tr class=\"head\"><th>Browser</th>"
                   "<th>Signed in</th><th>Last seen</th><th></th></tr>\n");
    for (size_t i = 0; i < l.n; i++) {
        const row_t *s = &l.rows[i];
        int mine = strcmp(s->id_hash, v->id_hash) == 0;
        char started[64], seen[64];
        sg_fmt_time(s->created, started, sizeof(started));
        sg_fmt_time(s->last_seen, seen, sizeof(seen));
        sg_buf_printf(b, "<tr class=\"session%s\"><td data-label=\"Browser\">",
                      mine ? " this" : "");
        browser_html(b, s->user_agent);
        sg_buf_printf(b,
                      "</td><td data-label=\"Signed in\">%s</td><td data-label=\"Last seen\">"
                      "%s</td><td>",
                      started, seen);
        if (mine) {
            sg_buf_adds(b, "<b class=\"this-browser\">This browser</b>");
        } else {
            others++;
            sg_buf_printf(b,
                          "<form method=\"post\" action=\"/sessions/end\"><input type=\"hidden\" "
                          "name=\"csrf\" value=\"%s\"><input type=\"hidden\" name=\"session\" "
                          "value=\"%s\"><button type=\"submit\" class=\"secondary end-session\">"
                          "Sign out there</button></form>",
                          csrf, s->id_hash);
        }
        sg_buf_adds(b, "</td></tr>\n");
    }
    sg_buf_adds(b, "</table>\n");
    if (l.more)
        sg_buf_printf(b, "<p class=\"muted\">And %zu more, not listed.</p>\n", l.more);
    if (others || l.more)
        sg_buf_printf(b,
                      "<div class=\"actions\"><form method=\"post\" action=\"/sessions/end\">"
                      "<input type=\"hidden\" name=\"csrf\" value=\"%s\"><input type=\"hidden\" "
                      "name=\"others\" value=\"1\"><button type=\"submit\" class=\"danger\" "
                      "id=\"end-others\">Sign out everywhere else</button></form></div>\n",
                      csrf);
    else
        sg_buf_adds(b, "<p class=\"muted\" id=\"only-here\">You are signed in here only.</p>\n");
    rows_free(&l);
}

/* Is s an id hash: 64 lower-case hex digits? */
static int is_id_hash(const char *s)
{
    return s && strlen(s) == SG_ID_HASH_LEN && strspn(s, "0123456789abcdef") == SG_ID_HASH_LEN;
}

/* Is id_hash one of the person's live sessions (and not this one)? */
static int own_other_session(sg_gateway_t *gw, const sg_session_view_t *v, const char *id_hash)
{
    if (!is_id_hash(id_hash) || strcmp(id_hash, v->id_hash) == 0)
        return 0;
    sg_session_filter_t f = {.user_id = v->user_id, .id_hash_prefix = id_hash};
    rows_t l;
    if (select_rows(gw, &f, 1, &l) != SG_OK)
        return 0;
    int found = l.n == 1;
    rows_free(&l);
    return found;
}

void sg_route_own_sessions_end(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    sg_form_t f;
    if (sg_gw_signed_in_form(gw, r, w, "/login?rd=%2F", &v, &f))
        return;
    const char *one = sg_form_get(&f, "session"), *others = sg_form_get(&f, "others");
    char ref[SESSION_REF_LEN + 1] = "";
    end_req_t what = {.actor = v.user_id, .user_id = v.user_id};
    size_t n = 0;
    sg_rc rc = SG_OK;
    if (others && strcmp(others, "1") == 0 && !one) {
        sg_session_filter_t sel = {.user_id = v.user_id};
        rows_t l;
        rc = select_rows(gw, &sel, (size_t)-1, &l);
        if (!rc) {
            rc = end_rows(gw, &l, v.id_hash, &n);
            rows_free(&l);
        }
        what.filter = "others";
    } else if (one && !others) {
        if (own_other_session(gw, &v, one)) {
            rc = sg_session_end_hash(gw->sessions, one);
            n = rc == SG_OK ? 1 : 0;
            if (rc == SG_ERR_NOTFOUND)
                rc = SG_OK;
        }
        /* Only an id hash is named in the audit log: the field takes whatever is posted. */
        if (is_id_hash(one)) {
            snprintf(ref, sizeof(ref), "%.*s", SESSION_REF_LEN, one);
            what.prefix = ref;
        }
        what.filter = "session";
    } else {
        sg_form_free(&f);
        sg_page_error(gw, r, w, 400, "This form could not be used",
                      "The form did not say which sessions to end.",
                      "Go back to your account page and use its buttons.");
        return;
    }
    sg_form_free(&f);
    audit_end(gw, r, &what, n);
    if (rc) {
        sg_page_error(gw, r, w, 500, "Not every session could be ended",
                      "The gateway could not reach its store to end them all.",
                      "Try again in a moment; if it persists, tell the operators.");
        return;
    }
    /* To the top of the page, where the notice says what happened; the list is below. */
    sg_resp_redirect(w, n == 0                               ? "/?notice=nothing_ended"
                        : strcmp(what.filter, "others") == 0 ? "/?notice=others_ended"
                                                             : "/?notice=session_ended");
}

/* ---- the policy page: everyone's sessions -------------------------------------------------- */

static int by_person(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    int c = strcmp(x->user_id ? x->user_id : "", y->user_id ? y->user_id : "");
    if (c)
        return c;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return strcmp(x->id_hash, y->id_hash);
}

static int same_person(const row_t *a, const row_t *b)
{
    return strcmp(a->user_id ? a->user_id : "", b->user_id ? b->user_id : "") == 0;
}

/* One line of a person's session list: browser, started, last seen. */
static void session_item(sg_buf_t *b, const row_t *s)
{
    char started[64], seen[64];
    sg_fmt_time(s->created, started, sizeof(started));
    sg_fmt_time(s->last_seen, seen, sizeof(seen));
    sg_buf_adds(b, "<li>");
    browser_html(b, s->user_agent);
    sg_buf_printf(b, "<br><small>signed in %s, last seen %s</small></li>\n", started, seen);
}

void sg_policy_sessions(sg_gateway_t *gw, sg_buf_t *b, const sg_policy_role_t *me)
{
    rows_t l;
    sg_buf_adds(b, "<h2 id=\"sessions-title\">Sessions</h2>\n");
    if (select_rows(gw, NULL, PAGE_SESSIONS_MAX, &l) != SG_OK) {
        sg_buf_adds(b, "<p class=\"warn\">The sessions could not be listed just now.</p>\n");
        return;
    }
    size_t people = 0;
    if (l.n)
        qsort(l.rows, l.n, sizeof(l.rows[0]), by_person);
    for (size_t i = 0; i < l.n; i++)
        people += i == 0 || !same_person(&l.rows[i - 1], &l.rows[i]);
    if (l.n == 0) {
        sg_buf_adds(b, "<p id=\"sessions-summary\">Nobody is signed in.</p>\n");
        rows_free(&l);
        return;
    }
    if (l.more)
        sg_buf_printf(b,
                      "<p id=\"sessions-summary\">%zu live sessions; the %zu oldest, of %zu "
                      "%s, are listed below (<code>scopegate sessions list</code> shows them "
                      "all).",
                      l.n + l.more, l.n, people, people == 1 ? "person" : "people");
    else
        sg_buf_printf(b, "<p id=\"sessions-summary\">%zu live session%s of %zu %s.", l.n,
                      l.n == 1 ? "" : "s", people, people == 1 ? "person" : "people");
    if (me->can_end_sessions)
        sg_buf_adds(b, " Ending a person's sessions signs them out of the application in every "
                       "browser at once; it does not disconnect their API grants.</p>\n");
    else
        sg_buf_adds(b, " Ending them needs a role with <code>can_end_sessions</code>; operators "
                       "can also run <code>scopegate sessions end</code>.</p>\n");
    sg_buf_adds(b, "<table id=\"sessions\" class=\"stack\"><tr class=\"head\"><th>Person</th>"
                   "<th>Role</th><th>Sessions</th><th></th></tr>\n");
    for (size_t i = 0; i < l.n;) {
        size_t end = i + 1;
        while (end < l.n && same_person(&l.rows[i], &l.rows[end]))
            end++;
        const row_t *p = &l.rows[i];
        sg_buf_adds(b, "<tr class=\"person\"><td data-label=\"Person\"><b>");
        sg_buf_add_html(b, person_of(p));
        sg_buf_adds(b, "</b><br><small><code class=\"user-id\">");
        sg_buf_add_html(b, p->user_id ? p->user_id : "?");
        sg_buf_adds(b, "</code></small></td><td data-label=\"Role\">");
        sg_buf_add_html(b, p->role ? p->role : "?");
        sg_buf_adds(b, "</td><td data-label=\"Sessions\"><ul class=\"sessions\">\n");
        for (size_t k = i; k < end; k++)
            session_item(b, &l.rows[k]);
        sg_buf_adds(b, "</ul></td><td>");
        if (me->can_end_sessions && p->user_id) {
            char *enc = sg_url_encode(p->user_id);
            if (enc) {
                sg_buf_adds(b, "<a class=\"button danger end-person\" "
                               "href=\"/policy/sessions/end?user=");
                sg_buf_add_html(b, enc);
                sg_buf_adds(b, "\">End this person's sessions</a>");
            }
            free(enc);
        }
        sg_buf_adds(b, "</td></tr>\n");
        i = end;
    }
    sg_buf_adds(b, "</table>\n");
    rows_free(&l);
}

/* Signed in with a role that may end sessions: 0 with *v and *me; else an answer and -1. */
static int may_end_sessions(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, sg_session_view_t *v,
                            const sg_policy_role_t **me)
{
    if (sg_gw_current_session(gw, r, v)) {
        sg_resp_redirect(w, "/login?rd=%2Fpolicy");
        return -1;
    }
    *me = sg_policy_role(sg_gw_policy(gw), v->role);
    if (!*me || !(*me)->can_end_sessions) {
        sg_log(SG_LOG_WARN, "sessions_end_denied",
               "rid=%s user %s (role %s) asked to end someone's sessions", r->request_id,
               v->user_id, v->role);
        sg_page_error(gw, r, w, 403, "Not for your role",
                      "Ending other people's sessions is for security staff, and your access "
                      "does not include it.",
                      "If your work needs it, ask your administrators.");
        return -1;
    }
    return 0;
}

/* A person's user id from a query or form: present, not empty, of a sane length. */
static const char *user_param(const sg_form_t *f)
{
    const char *u = sg_form_get(f, "user");
    return u && *u && strlen(u) < sizeof(((sg_session_view_t *)0)->user_id) ? u : NULL;
}

void sg_route_person_sessions_end_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_role_t *me;
    if (may_end_sessions(gw, r, w, &v, &me))
        return;
    const char *user = r->query_bad || sg_form_first_dup(&r->query) ? NULL : user_param(&r->query);
    if (!user) {
        sg_page_error(gw, r, w, 400, "Whose sessions?", "This link does not name a person.",
                      "Go back to the policy page and use a person's button.");
        return;
    }
    sg_session_filter_t f = {.user_id = user};
    rows_t l;
    if (select_rows(gw, &f, PAGE_SESSIONS_MAX, &l) != SG_OK) {
        sg_page_error(gw, r, w, 500, "Sessions could not be read",
                      "The gateway could not read the sessions from its store.",
                      "Try again in a moment; if it persists, tell the operators.");
        return;
    }
    if (l.n == 0) {
        rows_free(&l);
        sg_page_error(gw, r, w, 404, "No sessions to end",
                      "This person has no live session now: they are signed out everywhere.",
                      "Go back to the policy page.");
        return;
    }
    char csrf[64];
    sg_csrf_token(gw, v.id_hash, csrf, sizeof(csrf));
    size_t n = l.n + l.more;
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    sg_buf_adds(&b, "<p>This signs <b id=\"person\">");
    sg_buf_add_html(&b, person_of(&l.rows[0]));
    sg_buf_adds(&b, "</b> (<code>");
    sg_buf_add_html(&b, user);
    sg_buf_adds(&b, "</code>, role ");
    sg_buf_add_html(&b, l.rows[0].role ? l.rows[0].role : "?");
    sg_buf_printf(&b,
                  ") out of the application in every browser at once: <b id=\"count\">%zu</b> "
                  "session%s. Their next request goes to sign-in. It does not disconnect their "
                  "API grants, and they can sign in again unless the provider or the policy "
                  "stops them.</p>\n",
                  n, n == 1 ? "" : "s");
    if (strcmp(user, v.user_id) == 0)
        sg_buf_adds(&b, "<p class=\"warn\" id=\"includes-you\">These are your own sessions: "
                        "this browser is signed out too.</p>\n");
    sg_buf_adds(&b, "<ul class=\"sessions\">\n");
    for (size_t i = 0; i < l.n; i++)
        session_item(&b, &l.rows[i]);
    sg_buf_adds(&b, "</ul>\n<form method=\"post\" action=\"/policy/sessions/end\">"
                    "<input type=\"hidden\" name=\"csrf\" value=\"");
    sg_buf_add_html(&b, csrf);
    sg_buf_adds(&b, "\"><input type=\"hidden\" name=\"user\" value=\"");
    sg_buf_add_html(&b, user);
    sg_buf_printf(&b,
                  "\"><label for=\"reason\">Reason, for the audit log (optional)</label>"
                  "<input type=\"text\" id=\"reason\" name=\"reason\" maxlength=\"%d\" "
                  "placeholder=\"laptop stolen\"><div class=\"actions\"><button type=\"submit\" "
                  "class=\"danger\" id=\"confirm-end\">End %zu session%s</button>"
                  "<a class=\"button secondary\" id=\"cancel\" href=\"/policy#sessions-title\">"
                  "Keep them</a></div></form>",
                  REASON_MAX, n, n == 1 ? "" : "s");
    sg_page(gw, r, w, 200, "End this person's sessions?", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
    rows_free(&l);
}

void sg_route_person_sessions_end(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_role_t *me;
    sg_form_t f;
    /* The CSRF token first: a forged request learns nothing of the role, then the role. */
    if (sg_gw_signed_in_form(gw, r, w, "/login?rd=%2Fpolicy", &v, &f))
        return;
    if (may_end_sessions(gw, r, w, &v, &me)) {
        sg_form_free(&f);
        return;
    }
    const char *user = user_param(&f), *reason = sg_form_get(&f, "reason");
    if (!user || (reason && strlen(reason) > REASON_MAX)) {
        sg_form_free(&f);
        sg_page_error(gw, r, w, 400, "This form could not be used",
                      user ? "The reason is longer than 500 characters."
                           : "The form did not name a person.",
                      "Go back to the policy page and use a person's button.");
        return;
    }
    end_req_t what = {.actor = v.user_id,
                      .filter = "user",
                      .user_id = user,
                      .reason = reason && *reason ? reason : NULL};
    sg_session_filter_t sel = {.user_id = user};
    size_t n = 0;
    sg_rc rc = sg_sessions_end(gw->sessions, &sel, &n);
    audit_end(gw, r, &what, n);
    sg_form_free(&f);
    if (rc) {
        sg_page_error(gw, r, w, 500, "Not every session could be ended",
                      "The gateway could not reach its store to end them all.",
                      "Try again in a moment; if it persists, tell the operators.");
        return;
    }
    sg_resp_redirect(w, n ? "/policy?notice=sessions_ended" : "/policy?notice=nothing_ended");
}
