/* What has happened in the simulated org: grants, tokens, codes, sessions, approvals. */
#include "sim.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "scopegate/crypto.h"
#include "scopegate/salesforce.h"

sim_config_t sim_cfg;
sim_state_t sim_st;
pthread_mutex_t sim_lock = PTHREAD_MUTEX_INITIALIZER;

const char *const sim_endpoint_names[EP_COUNT] = {
    "discovery",  "keys",     "authorize", "token", "revoke",
    "introspect", "userinfo", "identity",  "data",  "logout",
};

const char *const sim_grant_type_names[SIM_GRANT_TYPES] = {
    "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "password",           "unsupported",
};

long long sim_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000 + sim_st.clock_offset * 1000;
}

long long sim_now(void)
{
    return sim_now_ms() / 1000;
}

/* Grows a dynamic array by one zeroed element; NULL at the memory bound. */
static void *push(void **arr, size_t *n, size_t *cap, size_t size)
{
    if (*n >= SIM_MAX_ITEMS)
        return NULL;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        void *p = realloc(*arr, nc * size);
        if (!p)
            return NULL;
        *arr = p;
        *cap = nc;
    }
    char *item = (char *)*arr + (*n)++ * size;
    memset(item, 0, size);
    return item;
}

#define PUSH(arr, n, cap) push((void **)&(arr), &(n), &(cap), sizeof(*(arr)))

void sim_state_clear(void)
{
    for (size_t i = 0; i < sim_st.ngrants; i++) {
        sim_grant_t *g = &sim_st.grants[i];
        free(g->scopes);
        free(g->refresh_token);
        for (size_t j = 0; j < g->nrotated; j++)
            free(g->rotated[j]);
        free(g->rotated);
    }
    free(sim_st.grants);
    for (size_t i = 0; i < sim_st.naccess; i++) {
        free(sim_st.access[i].token);
        free(sim_st.access[i].scopes);
    }
    free(sim_st.access);
    for (size_t i = 0; i < sim_st.ncodes; i++) {
        sim_code_t *c = &sim_st.codes[i];
        free(c->code);
        free(c->redirect_uri);
        free(c->scopes);
        free(c->challenge);
        free(c->nonce);
        free(c->sid);
    }
    free(sim_st.codes);
    for (size_t i = 0; i < sim_st.nsessions; i++) {
        free(sim_st.sessions[i].sid);
        free(sim_st.sessions[i].public_id);
        free(sim_st.sessions[i].approval_token);
        free(sim_st.sessions[i].signed_in);
    }
    free(sim_st.sessions);
    for (size_t i = 0; i < sim_st.napprovals; i++)
        free(sim_st.approvals[i].scopes);
    free(sim_st.approvals);
    memset(&sim_st, 0, sizeof(sim_st));
    sim_st.next_grant_id = 1;
}

/* ---- scopes ---------------------------------------------------------------------------- */

int sim_scope_has(const char *scopes, const char *scope)
{
    size_t n = strlen(scope);
    const char *p = scopes;
    while (p && *p) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, scope, n) == 0)
            return 1;
        p = end;
    }
    return 0;
}

int sim_scope_known(const char *scope)
{
    return sg_salesforce_scope_known(scope);
}

int sim_app_has_scope(const sim_app_t *app, const char *scope)
{
    for (size_t i = 0; i < app->nscopes; i++)
        if (strcmp(app->scopes[i], scope) == 0)
            return 1;
    return 0;
}

/* ---- grants ---------------------------------------------------------------------------- */

static char *token_with_prefix(const char *prefix, size_t nbytes, const char *suffix)
{
    char *rnd = sg_random_token(nbytes);
    if (!rnd)
        return NULL;
    size_t len = strlen(prefix) + strlen(rnd) + strlen(suffix) + 1;
    char *t = malloc(len);
    if (t)
        snprintf(t, len, "%s%s%s", prefix, rnd, suffix);
    free(rnd);
    return t;
}

char *sim_new_refresh_token(void)
{
    /* Real refresh tokens start "5Aep861" (salesforce.md 1.4). */
    return token_with_prefix("5Aep861", 48, "");
}

size_t sim_grant_live_count(size_t user, size_t app)
{
    size_t n = 0;
    for (size_t i = 0; i < sim_st.ngrants; i++) {
        const sim_grant_t *g = &sim_st.grants[i];
        if (g->live && g->user == user && g->app == app)
            n++;
    }
    return n;
}

static void evict_for(size_t user, size_t app)
{
    const sim_app_t *a = &sim_cfg.apps[app];
    while (sim_grant_live_count(user, app) >= (size_t)a->grant_limit) {
        sim_grant_t *victim = NULL;
        for (size_t i = 0; i < sim_st.ngrants; i++) {
            sim_grant_t *g = &sim_st.grants[i];
            if (!g->live || g->user != user || g->app != app)
                continue;
            /* Reference 4: "oldest" or "least recently used" — UNCONFIRMED which; per app. */
            long long key = a->evict_lru ? g->last_used : g->created;
            long long best = victim ? (a->evict_lru ? victim->last_used : victim->created) : 0;
            if (!victim || key < best)
                victim = g;
        }
        if (!victim)
            break;
        sim_grant_kill(victim, "evicted");
    }
}

sim_grant_t *sim_grant_new(size_t user, size_t app, const char *scopes, int with_refresh)
{
    evict_for(user, app);
    sim_grant_t *g = PUSH(sim_st.grants, sim_st.ngrants, sim_st.capgrants);
    if (!g)
        return NULL;
    g->id = sim_st.next_grant_id++;
    g->user = user;
    g->app = app;
    g->scopes = strdup(scopes);
    g->created = g->last_used = g->last_refreshed = sim_now();
    g->live = 1;
    if (with_refresh)
        g->refresh_token = sim_new_refresh_token();
    if (!g->scopes || (with_refresh && !g->refresh_token)) {
        free(g->scopes);
        free(g->refresh_token);
        sim_st.ngrants--;
        return NULL;
    }
    return g;
}

sim_grant_t *sim_grant_by_id(int id)
{
    for (size_t i = 0; i < sim_st.ngrants; i++)
        if (sim_st.grants[i].id == id)
            return &sim_st.grants[i];
    return NULL;
}

sim_grant_t *sim_grant_by_refresh(const char *token, int *rotated)
{
    *rotated = 0;
    if (!token || !*token)
        return NULL;
    for (size_t i = 0; i < sim_st.ngrants; i++) {
        sim_grant_t *g = &sim_st.grants[i];
        if (g->refresh_token && sg_ct_streq(g->refresh_token, token))
            return g;
        for (size_t j = 0; j < g->nrotated; j++) {
            if (sg_ct_streq(g->rotated[j], token)) {
                *rotated = 1;
                return g;
            }
        }
    }
    return NULL;
}

void sim_grant_kill(sim_grant_t *g, const char *reason)
{
    if (!g->live)
        return;
    g->live = 0;
    g->reason = reason;
    /* A dead refresh token takes every access token issued from it along (salesforce.md 1.2). */
    for (size_t i = 0; i < sim_st.naccess; i++)
        if (sim_st.access[i].grant_id == g->id)
            sim_st.access[i].live = 0;
}

const char *sim_grant_policy_failure(const sim_grant_t *g)
{
    const sim_app_t *a = &sim_cfg.apps[g->app];
    long long now = sim_now();
    switch (a->rt_policy) {
    case RT_IMMEDIATELY_EXPIRE:
        return "immediately_expire";
    case RT_EXPIRE_IF_UNUSED:
        if (now - g->last_refreshed > a->rt_validity)
            return "expired_unused";
        break;
    case RT_EXPIRE_AFTER:
        if (now - g->created >= a->rt_validity)
            return "expired_after";
        break;
    case RT_VALID_UNTIL_REVOKED:
        break;
    }
    if (a->idle_ttl_limit && now - g->last_refreshed > 30LL * 86400)
        return "idle_ttl_limit";
    return NULL;
}

/* ---- access tokens --------------------------------------------------------------------- */

long long sim_session_timeout(size_t user, size_t app)
{
    /* Reference 3.3: the app's timeout, else the user's profile, else the org's. */
    if (sim_cfg.apps[app].session_timeout > 0)
        return sim_cfg.apps[app].session_timeout;
    const char *profile = sim_cfg.users[user].profile;
    for (size_t i = 0; i < sim_cfg.nprofiles; i++)
        if (strcmp(sim_cfg.profiles[i].name, profile) == 0 &&
            sim_cfg.profiles[i].session_timeout > 0)
            return sim_cfg.profiles[i].session_timeout;
    return sim_cfg.org_session_timeout;
}

sim_access_t *sim_access_new(size_t user, size_t app, int grant_id, const char *scopes)
{
    sim_access_t *a = PUSH(sim_st.access, sim_st.naccess, sim_st.capaccess);
    if (!a)
        return NULL;
    char prefix[32];
    /* Access tokens are session ids: 15-character org id, '!', opaque (salesforce.md 1.4). */
    snprintf(prefix, sizeof(prefix), "%.15s!AR", sim_cfg.org_id);
    a->token = token_with_prefix(prefix, 72, "");
    a->scopes = strdup(scopes);
    a->user = user;
    a->app = app;
    a->grant_id = grant_id;
    a->created = a->last_active = sim_now();
    a->live = 1;
    if (!a->token || !a->scopes) {
        free(a->token);
        free(a->scopes);
        sim_st.naccess--;
        return NULL;
    }
    return a;
}

sim_access_t *sim_access_find(const char *token)
{
    if (!token || !*token)
        return NULL;
    for (size_t i = 0; i < sim_st.naccess; i++)
        if (sg_ct_streq(sim_st.access[i].token, token))
            return &sim_st.access[i];
    return NULL;
}

long long sim_access_expiry(const sim_access_t *a)
{
    return a->last_active + sim_session_timeout(a->user, a->app);
}

sim_access_t *sim_access_check(const char *token, int touch)
{
    sim_access_t *a = sim_access_find(token);
    if (!a || !a->live)
        return NULL;
    long long now = sim_now(), timeout = sim_session_timeout(a->user, a->app);
    if (now - a->last_active > timeout) {
        a->live = 0;
        return NULL;
    }
    if (sim_cfg.org_locked || !sim_cfg.users[a->user].active || sim_cfg.apps[a->app].blocked)
        return NULL;
    /* Activity is written down only once half the timeout has passed (salesforce.md 3.3). */
    if (touch && now - a->last_active >= timeout / 2)
        a->last_active = now;
    return a;
}

/* ---- codes, sessions, approvals -------------------------------------------------------- */

sim_code_t *sim_code_new(size_t user, size_t app, const char *redirect_uri, const char *scopes,
                         const char *challenge, int challenge_plain, const char *nonce)
{
    sim_code_t *c = PUSH(sim_st.codes, sim_st.ncodes, sim_st.capcodes);
    if (!c)
        return NULL;
    /* Codes look like "aPrx...==" (salesforce.md 1.4). */
    c->code = token_with_prefix("aPrx", 60, "==");
    c->user = user;
    c->app = app;
    c->redirect_uri = strdup(redirect_uri);
    c->scopes = strdup(scopes);
    c->challenge = challenge ? strdup(challenge) : NULL;
    c->challenge_plain = challenge_plain;
    c->nonce = nonce ? strdup(nonce) : NULL;
    c->created = sim_now();
    if (!c->code || !c->redirect_uri || !c->scopes || (challenge && !c->challenge) ||
        (nonce && !c->nonce)) {
        free(c->code);
        free(c->redirect_uri);
        free(c->scopes);
        free(c->challenge);
        free(c->nonce);
        sim_st.ncodes--;
        return NULL;
    }
    return c;
}

sim_code_t *sim_code_find(const char *code)
{
    if (!code || !*code)
        return NULL;
    for (size_t i = 0; i < sim_st.ncodes; i++)
        if (sg_ct_streq(sim_st.codes[i].code, code))
            return &sim_st.codes[i];
    return NULL;
}

sim_session_t *sim_session_new(size_t user)
{
    sim_session_t *s = PUSH(sim_st.sessions, sim_st.nsessions, sim_st.capsessions);
    if (!s)
        return NULL;
    s->sid = sg_random_token(32);
    /* A second random value, not derived from the cookie: it is shown to relying parties. */
    s->public_id = sg_random_token(16);
    s->signed_in = calloc(sim_cfg.napps + 1, 1);
    s->user = user;
    s->created = sim_now();
    if (!s->sid || !s->public_id || !s->signed_in) {
        free(s->sid);
        free(s->public_id);
        free(s->signed_in);
        sim_st.nsessions--;
        return NULL;
    }
    return s;
}

sim_session_t *sim_session_find(const char *sid)
{
    if (!sid || !*sid)
        return NULL;
    for (size_t i = 0; i < sim_st.nsessions; i++) {
        sim_session_t *s = &sim_st.sessions[i];
        if (!sg_ct_streq(s->sid, sid))
            continue;
        if (s->ended || sim_now() - s->created > sim_cfg.org_session_timeout)
            return NULL;
        return s;
    }
    return NULL;
}

const char *sim_approval_get(size_t user, size_t app)
{
    for (size_t i = 0; i < sim_st.napprovals; i++)
        if (sim_st.approvals[i].user == user && sim_st.approvals[i].app == app)
            return sim_st.approvals[i].scopes;
    return NULL;
}

int sim_approval_add(size_t user, size_t app, const char *scopes)
{
    sim_approval_t *ap = NULL;
    for (size_t i = 0; i < sim_st.napprovals && !ap; i++)
        if (sim_st.approvals[i].user == user && sim_st.approvals[i].app == app)
            ap = &sim_st.approvals[i];
    if (!ap) {
        ap = PUSH(sim_st.approvals, sim_st.napprovals, sim_st.capapprovals);
        if (!ap)
            return -1;
        ap->user = user;
        ap->app = app;
        ap->scopes = strdup("");
        if (!ap->scopes) {
            sim_st.napprovals--;
            return -1;
        }
    }
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    if (sg_buf_adds(&b, ap->scopes))
        return -1;
    const char *p = scopes;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char one[128];
        if (len > 0 && len < sizeof(one)) {
            memcpy(one, p, len);
            one[len] = '\0';
            if (!sim_scope_has(b.ptr, one) &&
                ((b.len && sg_buf_adds(&b, " ")) || sg_buf_adds(&b, one)))
                return -1;
        }
        p += len;
    }
    free(ap->scopes);
    ap->scopes = sg_buf_steal(&b);
    return 0;
}
