/* The test-control API under /_sim/ (loopback only; checked by the server). README.md lists it. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "scopegate/duration.h"

static void bad(sg_resp_t *w, const char *msg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "error", "bad_request");
    cJSON_AddStringToObject(j, "error_description", msg);
    sim_resp_json(w, 400, j);
}

/* "true"/"1" → 1, "false"/"0" → 0, anything else → -1. */
static int parse_bool(const char *v)
{
    if (!v)
        return -1;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        return 1;
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return 0;
    return -1;
}

static int parse_num(const char *v, long long max, long long *out)
{
    if (!v || !*v)
        return -1;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*end || n < 0 || n > max)
        return -1;
    *out = n;
    return 0;
}

/* Seconds, with a sign, within SIM_DATE_SKEW_MAX either way. */
static int parse_skew(const char *v, long long *out)
{
    int neg = v && *v == '-';
    long long n;
    if (parse_num(neg ? v + 1 : v, SIM_DATE_SKEW_MAX, &n))
        return -1;
    *out = neg ? -n : n;
    return 0;
}

static cJSON *grant_json(const sim_grant_t *g)
{
    cJSON *j = cJSON_CreateObject();
    const sim_user_t *u = &sim_cfg.users[g->user];
    const sim_app_t *a = &sim_cfg.apps[g->app];
    cJSON_AddNumberToObject(j, "id", g->id);
    cJSON_AddStringToObject(j, "username", u->username);
    cJSON_AddStringToObject(j, "user_id", u->id);
    cJSON_AddStringToObject(j, "client_id", a->client_id);
    cJSON_AddStringToObject(j, "app", a->name);
    cJSON_AddStringToObject(j, "scopes", g->scopes);
    cJSON_AddNumberToObject(j, "created", (double)g->created);
    cJSON_AddNumberToObject(j, "last_used", (double)g->last_used);
    cJSON_AddNumberToObject(j, "last_refreshed", (double)g->last_refreshed);
    cJSON_AddNumberToObject(j, "use_count", (double)g->use_count);
    cJSON_AddBoolToObject(j, "live", g->live);
    if (g->reason)
        cJSON_AddStringToObject(j, "reason", g->reason);
    else
        cJSON_AddNullToObject(j, "reason");
    return j;
}

static void clock_answer(sg_resp_t *w)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "now", (double)sim_now());
    cJSON_AddNumberToObject(j, "offset", (double)sim_st.clock_offset);
    sim_resp_json(w, 200, j);
}

static void do_clock(const sg_form_t *q, sg_resp_t *w, int post)
{
    if (post) {
        const char *adv = sg_form_get(q, "advance");
        long long secs = 0;
        /* Either plain seconds or a duration like "31d". */
        if (!adv || sg_duration_parse(adv, &secs) || secs > 10LL * 366 * 86400) {
            bad(w, "advance takes a non-negative number of seconds (or 90s, 30m, 2h, 31d), "
                   "at most ten years");
            return;
        }
        sim_st.clock_offset += secs;
    }
    clock_answer(w);
}

static void do_grants(const sg_form_t *q, sg_resp_t *w)
{
    const char *user = sg_form_get(q, "username"), *client = sg_form_get(q, "client_id");
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < sim_st.ngrants; i++) {
        const sim_grant_t *g = &sim_st.grants[i];
        if (!g->refresh_token && g->nrotated == 0 && !sim_cfg.openid_signins_count)
            continue;
        if (user && strcasecmp(sim_cfg.users[g->user].username, user) != 0)
            continue;
        if (client && strcmp(sim_cfg.apps[g->app].client_id, client) != 0)
            continue;
        cJSON_AddItemToArray(arr, grant_json(g));
    }
    sim_resp_json(w, 200, arr);
}

static void do_stats(sg_resp_t *w)
{
    cJSON *j = cJSON_CreateObject();
    for (int i = 0; i < EP_COUNT; i++) {
        if (i == EP_TOKEN) {
            cJSON *t = cJSON_AddObjectToObject(j, "token");
            for (int k = 0; k < SIM_GRANT_TYPES; k++)
                if (sim_st.token_stats[k])
                    cJSON_AddNumberToObject(t, sim_grant_type_names[k],
                                            (double)sim_st.token_stats[k]);
        } else {
            cJSON_AddNumberToObject(j, sim_endpoint_names[i], (double)sim_st.stats[i]);
        }
    }
    cJSON_AddNumberToObject(j, "token_in_flight_max", (double)sim_st.token_in_flight_max);
    sim_resp_json(w, 200, j);
}

static sim_app_t *need_app(const sg_form_t *q, sg_resp_t *w)
{
    sim_app_t *a = sim_app_by_client_id(sg_form_get(q, "client_id"));
    if (!a)
        bad(w, "client_id names no app of this org");
    return a;
}

static int kill_matching(const sim_user_t *u, const sim_app_t *a, const char *reason)
{
    int n = 0;
    for (size_t i = 0; i < sim_st.ngrants; i++) {
        sim_grant_t *g = &sim_st.grants[i];
        if (!g->live || (u && &sim_cfg.users[g->user] != u) || &sim_cfg.apps[g->app] != a)
            continue;
        sim_grant_kill(g, reason);
        n++;
    }
    /* Access tokens outside any grant (openid sign-ins, JWT bearer) die too. */
    for (size_t i = 0; i < sim_st.naccess; i++) {
        sim_access_t *t = &sim_st.access[i];
        if ((!u || &sim_cfg.users[t->user] == u) && &sim_cfg.apps[t->app] == a)
            t->live = 0;
    }
    return n;
}

static void count_answer(sg_resp_t *w, const char *key, int n)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, key, n);
    sim_resp_json(w, 200, j);
}

static void do_revoke(const sg_form_t *q, sg_resp_t *w)
{
    sim_user_t *u = sim_user_by_name(sg_form_get(q, "username"));
    if (!u) {
        bad(w, "username names no user of this org");
        return;
    }
    sim_app_t *a = need_app(q, w);
    if (a)
        count_answer(w, "revoked", kill_matching(u, a, "revoked"));
}

static void do_revoke_all(const sg_form_t *q, sg_resp_t *w)
{
    sim_app_t *a = need_app(q, w);
    if (a)
        count_answer(w, "revoked", kill_matching(NULL, a, "revoked_all"));
}

static void do_block(const sg_form_t *q, sg_resp_t *w)
{
    sim_app_t *a = need_app(q, w);
    if (!a)
        return;
    const char *v = sg_form_get(q, "blocked");
    int b = v ? parse_bool(v) : 1;
    if (b < 0) {
        bad(w, "blocked takes true or false");
        return;
    }
    a->blocked = b;
    if (b) {
        kill_matching(NULL, a, "blocked");
        for (size_t i = 0; i < sim_st.ncodes; i++)
            if (&sim_cfg.apps[sim_st.codes[i].app] == a)
                sim_st.codes[i].used = 1;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "blocked", b);
    sim_resp_json(w, 200, j);
}

static void do_user(const sg_form_t *q, sg_resp_t *w)
{
    sim_user_t *u = sim_user_by_name(sg_form_get(q, "username"));
    if (!u) {
        bad(w, "username names no user of this org");
        return;
    }
    const char *act = sg_form_get(q, "active"), *ranges = sg_form_get(q, "login_ip_ranges");
    int active = act ? parse_bool(act) : u->active;
    if (active < 0) {
        bad(w, "active takes true or false");
        return;
    }
    if (ranges) {
        size_t n = 0;
        sim_cidr_t *list = calloc(strlen(ranges) / 2 + 2, sizeof(sim_cidr_t));
        char *copy = strdup(ranges), *save = NULL;
        if (!list || !copy) {
            free(list);
            free(copy);
            bad(w, "out of memory");
            return;
        }
        for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            if (sim_cidr_parse(t, &list[n])) {
                free(list);
                free(copy);
                bad(w, "login_ip_ranges takes comma-separated CIDR ranges like 10.0.0.0/8");
                return;
            }
            n++;
        }
        free(copy);
        free(u->ranges);
        u->ranges = list;
        u->nranges = n;
    }
    u->active = active;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "username", u->username);
    cJSON_AddBoolToObject(j, "active", u->active);
    cJSON *arr = cJSON_AddArrayToObject(j, "login_ip_ranges");
    for (size_t i = 0; i < u->nranges; i++) {
        char txt[80];
        if (inet_ntop(u->ranges[i].v6 ? AF_INET6 : AF_INET, u->ranges[i].addr, txt, sizeof(txt))) {
            char item[96];
            snprintf(item, sizeof(item), "%s/%d", txt, u->ranges[i].prefix);
            cJSON_AddItemToArray(arr, cJSON_CreateString(item));
        }
    }
    sim_resp_json(w, 200, j);
}

static void do_org(const sg_form_t *q, sg_resp_t *w)
{
    int locked = parse_bool(sg_form_get(q, "locked"));
    if (locked < 0) {
        bad(w, "locked takes true or false");
        return;
    }
    sim_cfg.org_locked = locked;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "locked", locked);
    sim_resp_json(w, 200, j);
}

static void do_client_ip(const sg_form_t *q, sg_resp_t *w)
{
    const char *addr = sg_form_get(q, "address");
    sim_cidr_t c;
    if (!addr || (*addr && (sim_cidr_parse(addr, &c) || strchr(addr, '/')))) {
        bad(w, "address takes an IPv4 or IPv6 address, or nothing for the real peer");
        return;
    }
    snprintf(sim_st.client_ip, sizeof(sim_st.client_ip), "%s", addr);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "address", addr);
    sim_resp_json(w, 200, j);
}

static const char *const policy_names[] = {"valid_until_revoked", "immediately_expire",
                                           "expire_if_unused", "expire_after", NULL};
static const char *const relax_names[] = {"enforce", "enforce_relax_refresh",
                                          "relax_with_second_factor", "relax", NULL};

static int pick(const char *v, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(v, names[i]) == 0)
            return i;
    return -1;
}

static cJSON *app_json(const sim_app_t *a)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "client_id", a->client_id);
    cJSON_AddStringToObject(j, "name", a->name);
    cJSON_AddStringToObject(j, "refresh_token_policy", policy_names[a->rt_policy]);
    cJSON_AddNumberToObject(j, "refresh_token_validity", (double)a->rt_validity);
    cJSON_AddBoolToObject(j, "rotation", a->rotation);
    cJSON_AddBoolToObject(j, "idle_ttl_limit", a->idle_ttl_limit);
    cJSON_AddStringToObject(j, "ip_relaxation", relax_names[a->ip_relax]);
    cJSON_AddNumberToObject(j, "grant_limit", a->grant_limit);
    cJSON_AddStringToObject(j, "eviction", a->evict_lru ? "least_recently_used" : "oldest");
    cJSON_AddNumberToObject(j, "session_timeout", (double)a->session_timeout);
    cJSON_AddBoolToObject(j, "admin_preauthorized", a->admin_preauthorized);
    cJSON_AddBoolToObject(j, "blocked", a->blocked);
    cJSON_AddBoolToObject(j, "always_refresh", a->always_refresh);
    return j;
}

static void do_app(const sg_form_t *q, sg_resp_t *w)
{
    sim_app_t *a = need_app(q, w);
    if (!a)
        return;
    /* Validate everything first so a bad call changes nothing. */
    sim_app_t next = *a;
    for (size_t i = 0; i < q->n; i++) {
        const char *k = q->item[i].key, *v = q->item[i].value;
        long long n = 0;
        int b;
        if (strcmp(k, "client_id") == 0)
            continue;
        if (strcmp(k, "rotation") == 0 && (b = parse_bool(v)) >= 0)
            next.rotation = b;
        else if (strcmp(k, "idle_ttl_limit") == 0 && (b = parse_bool(v)) >= 0)
            next.idle_ttl_limit = b;
        else if (strcmp(k, "admin_preauthorized") == 0 && (b = parse_bool(v)) >= 0)
            next.admin_preauthorized = b;
        else if (strcmp(k, "always_refresh") == 0 && (b = parse_bool(v)) >= 0)
            next.always_refresh = b;
        else if (strcmp(k, "refresh_token_policy") == 0 && (b = pick(v, policy_names)) >= 0)
            next.rt_policy = (sim_rt_policy)b;
        else if (strcmp(k, "ip_relaxation") == 0 && (b = pick(v, relax_names)) >= 0)
            next.ip_relax = (sim_ip_relax)b;
        else if (strcmp(k, "eviction") == 0 && strcmp(v, "oldest") == 0)
            next.evict_lru = 0;
        else if (strcmp(k, "eviction") == 0 && strcmp(v, "least_recently_used") == 0)
            next.evict_lru = 1;
        else if (strcmp(k, "refresh_token_validity") == 0 && !sg_duration_parse(v, &n))
            next.rt_validity = n;
        else if (strcmp(k, "session_timeout") == 0 && !sg_duration_parse(v, &n))
            next.session_timeout = n;
        else if (strcmp(k, "grant_limit") == 0 && !parse_num(v, 1000, &n) && n >= 1)
            next.grant_limit = (int)n;
        else {
            char msg[200];
            snprintf(msg, sizeof(msg), "bad app setting '%.60s' (or its value '%.60s')", k, v);
            bad(w, msg);
            return;
        }
    }
    if ((next.rt_policy == RT_EXPIRE_IF_UNUSED || next.rt_policy == RT_EXPIRE_AFTER) &&
        next.rt_validity <= 0) {
        bad(w, "refresh_token_validity must be set for this refresh_token_policy");
        return;
    }
    *a = next;
    sim_resp_json(w, 200, app_json(a));
}

/* Browser sessions at the org, by their public id (never the cookie's value). */
static void do_sessions(const sg_form_t *q, sg_resp_t *w)
{
    const char *user = sg_form_get(q, "username");
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < sim_st.nsessions; i++) {
        const sim_session_t *s = &sim_st.sessions[i];
        const sim_user_t *u = &sim_cfg.users[s->user];
        if (user && strcasecmp(u->username, user) != 0)
            continue;
        cJSON *j = cJSON_CreateObject();
        cJSON *apps = cJSON_AddArrayToObject(j, "apps");
        for (size_t k = 0; apps && k < sim_cfg.napps; k++)
            if (s->signed_in[k])
                cJSON_AddItemToArray(apps, cJSON_CreateString(sim_cfg.apps[k].client_id));
        cJSON_AddStringToObject(j, "id", s->public_id);
        cJSON_AddStringToObject(j, "username", u->username);
        cJSON_AddNumberToObject(j, "created", (double)s->created);
        cJSON_AddBoolToObject(j, "live",
                              !s->ended && sim_now() - s->created <= sim_cfg.org_session_timeout);
        cJSON_AddBoolToObject(j, "ended", s->ended);
        cJSON_AddItemToArray(arr, j);
    }
    sim_resp_json(w, 200, arr);
}

static cJSON *settings_json(void)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "end_session_endpoint", sim_cfg.end_session_endpoint);
    cJSON_AddBoolToObject(j, "id_token_sid", sim_cfg.id_token_sid);
    cJSON_AddBoolToObject(j, "slo_iss_sid", sim_cfg.slo_iss_sid);
    cJSON_AddBoolToObject(j, "honor_post_logout_redirect_uri",
                          sim_cfg.honor_post_logout_redirect_uri);
    cJSON_AddNumberToObject(j, "logout_redirect_delay", (double)sim_cfg.logout_redirect_delay);
    cJSON_AddNumberToObject(j, "date_skew", (double)sim_cfg.date_skew);
    if (sim_cfg.org_logout_url)
        cJSON_AddStringToObject(j, "logout_url", sim_cfg.org_logout_url);
    else
        cJSON_AddNullToObject(j, "logout_url");
    return j;
}

/* The single-logout switches and the Date skew at run time; /_sim/reset brings back the config's.
 */
static void do_settings(const sg_form_t *q, sg_resp_t *w)
{
    /* Validate everything first so a bad call changes nothing. */
    sim_config_t next = sim_cfg;
    const char *logout_url = NULL;
    for (size_t i = 0; i < q->n; i++) {
        const char *k = q->item[i].key, *v = q->item[i].value;
        long long n = 0;
        int b;
        if (strcmp(k, "end_session_endpoint") == 0 && (b = parse_bool(v)) >= 0)
            next.end_session_endpoint = b;
        else if (strcmp(k, "id_token_sid") == 0 && (b = parse_bool(v)) >= 0)
            next.id_token_sid = b;
        else if (strcmp(k, "slo_iss_sid") == 0 && (b = parse_bool(v)) >= 0)
            next.slo_iss_sid = b;
        else if (strcmp(k, "honor_post_logout_redirect_uri") == 0 && (b = parse_bool(v)) >= 0)
            next.honor_post_logout_redirect_uri = b;
        else if (strcmp(k, "logout_redirect_delay") == 0 && !sg_duration_parse(v, &n) && n <= 60)
            next.logout_redirect_delay = n;
        else if (strcmp(k, "date_skew") == 0 && !parse_skew(v, &n))
            next.date_skew = n;
        else if (strcmp(k, "logout_url") == 0 &&
                 (!*v || strncmp(v, "http://", 7) == 0 || strncmp(v, "https://", 8) == 0) &&
                 !strpbrk(v, " \"'<>\\"))
            logout_url = v;
        else {
            char msg[200];
            snprintf(msg, sizeof(msg), "bad setting '%.60s' (or its value '%.60s')", k, v);
            bad(w, msg);
            return;
        }
    }
    if (logout_url) {
        char *copy = *logout_url ? strdup(logout_url) : NULL;
        if (*logout_url && !copy) {
            bad(w, "out of memory");
            return;
        }
        free(next.org_logout_url);
        next.org_logout_url = copy;
    }
    sim_cfg = next;
    sim_resp_json(w, 200, settings_json());
}

static void do_fault(const sg_form_t *q, sg_resp_t *w)
{
    static const char *const modes[] = {"", "500", "503", "delay", "malformed", "close", NULL};
    const char *ep = sg_form_get(q, "endpoint"), *mode = sg_form_get(q, "mode");
    int e = -1, m = mode ? pick(mode, modes) : -1;
    for (int i = 0; ep && i < EP_COUNT; i++)
        if (strcmp(ep, sim_endpoint_names[i]) == 0)
            e = i;
    long long count = 1, ms = 0;
    const char *c = sg_form_get(q, "count"), *d = sg_form_get(q, "ms");
    if (e < 0 || m <= 0 || (c && parse_num(c, 1000000, &count)) ||
        (d && parse_num(d, 60000, &ms)) || (m == FAULT_DELAY && ms == 0)) {
        bad(w, "fault takes endpoint=discovery|keys|authorize|token|revoke|introspect|userinfo|"
               "identity|data|logout, mode=500|503|delay|malformed|close, count=N and, for "
               "delay, ms=1..60000");
        return;
    }
    sim_st.faults[e].mode = count ? (sim_fault_mode)m : FAULT_NONE;
    sim_st.faults[e].count = (long)count;
    sim_st.faults[e].ms = (long)ms;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "endpoint", ep);
    cJSON_AddStringToObject(j, "mode", mode);
    cJSON_AddNumberToObject(j, "count", (double)count);
    sim_resp_json(w, 200, j);
}

const char *const sim_tamper_names[] = {
    "",          "bad_signature", "alg_none", "hs256",       "unknown_kid",
    "wrong_iss", "wrong_aud",     "expired",  "wrong_nonce", NULL};

static void do_tamper(const sg_form_t *q, sg_resp_t *w)
{
    const char *mode = sg_form_get(q, "id_token"), *c = sg_form_get(q, "count");
    int m = mode ? pick(mode, sim_tamper_names) : -1;
    long long count = 1;
    if (m <= 0 || (c && parse_num(c, 1000000, &count))) {
        bad(w, "tamper takes id_token=bad_signature|alg_none|hs256|unknown_kid|wrong_iss|"
               "wrong_aud|expired|wrong_nonce and count=N");
        return;
    }
    sim_st.tamper_mode = count ? (sim_tamper_mode)m : SIM_TAMPER_NONE;
    sim_st.tamper_count = (long)count;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id_token", mode);
    cJSON_AddNumberToObject(j, "count", (double)count);
    sim_resp_json(w, 200, j);
}

static void do_reset(sg_resp_t *w)
{
    sim_config_t fresh;
    char err[1024];
    if (sim_config_load(sim_config_path, &fresh, err, sizeof(err))) {
        bad(w, err);
        return;
    }
    sim_config_free(&sim_cfg);
    sim_cfg = fresh;
    sim_state_clear();
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "reset", 1);
    sim_resp_json(w, 200, j);
}

void sim_route_control(sim_req_t *r, sg_resp_t *w)
{
    const char *p = r->h->path + 6;
    int post = strcmp(r->h->method, "POST") == 0, get = strcmp(r->h->method, "GET") == 0;
    const sg_form_t *q = &r->h->query;
    if (q->has_dup) {
        bad(w, "a parameter was given twice");
        return;
    }
    if (strcmp(p, "clock") == 0 && (get || post))
        do_clock(q, w, post);
    else if (strcmp(p, "grants") == 0 && get)
        do_grants(q, w);
    else if (strcmp(p, "stats") == 0 && get)
        do_stats(w);
    else if (strcmp(p, "revoke") == 0 && post)
        do_revoke(q, w);
    else if (strcmp(p, "revoke_all") == 0 && post)
        do_revoke_all(q, w);
    else if (strcmp(p, "block") == 0 && post)
        do_block(q, w);
    else if (strcmp(p, "user") == 0 && post)
        do_user(q, w);
    else if (strcmp(p, "org") == 0 && post)
        do_org(q, w);
    else if (strcmp(p, "client_ip") == 0 && post)
        do_client_ip(q, w);
    else if (strcmp(p, "app") == 0 && post)
        do_app(q, w);
    else if (strcmp(p, "fault") == 0 && post)
        do_fault(q, w);
    else if (strcmp(p, "tamper") == 0 && post)
        do_tamper(q, w);
    else if (strcmp(p, "reset") == 0 && post)
        do_reset(w);
    else if (strcmp(p, "sessions") == 0 && get)
        do_sessions(q, w);
    else if (strcmp(p, "settings") == 0 && post)
        do_settings(q, w);
    else if (strcmp(p, "settings") == 0 && get)
        sim_resp_json(w, 200, settings_json());
    else {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "error", "not_found");
        cJSON_AddStringToObject(
            j, "error_description",
            "no such control call (or wrong method); see tests/sfsim/README.md");
        sim_resp_json(w, 404, j);
    }
}
