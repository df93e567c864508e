/*
 * Loading a policy: read the file (bounded), let libconfig parse it, then walk its settings
 * into an sg_policy_t, reporting every problem with its line instead of stopping at the
 * first. Checks that need the whole model (rules against roles, scope names) are in lint.c.
 */
#include "policy_int.h"

#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/duration.h"

#include <errno.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR  SG_DIAG_ERROR
#define WARN SG_DIAG_WARNING

static const char *const root_keys[] = {"version", "signin", "roles", "assign", NULL};
static const char *const signin_keys[] = {"app", "scopes", "signout_provider", NULL};
static const char *const role_keys[] = {"offline", "session", "can_view_policy", "can_end_sessions",
                                        NULL};
static const char *const offline_keys[] = {"app",        "scopes",      "grant_limit",
                                           "token_ttl",  "fallback",    "provider",
                                           "keep_alive", "warn_before", NULL};
static const char *const provider_keys[] = {"refresh_token_policy",
                                            "refresh_token_validity",
                                            "idle_ttl_limit",
                                            "rotation",
                                            "app_name",
                                            NULL};
static const char *const keep_alive_keys[] = {"enabled", "at", "jitter", NULL};
static const char *const rt_policies[] = {
    SG_POLICY_RT_VALID_UNTIL_REVOKED, SG_POLICY_RT_IMMEDIATELY_EXPIRE,
    SG_POLICY_RT_EXPIRE_IF_UNUSED, SG_POLICY_RT_EXPIRE_AFTER, NULL};
static const char *const fallback_keys[] = {"same_org", "integration", NULL};
static const char *const session_keys[] = {"idle", "max", NULL};
static const char *const rule_keys[] = {"role", "claim", "in", "contains", NULL};

static int line_of(const config_setting_t *s)
{
    int line = (int)config_setting_source_line(s);
    return line > 0 ? line : 1; /* the root group has no line of its own */
}

const char *sg_policy_type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a number";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    }
    return "something else";
}

static int is_int(const config_setting_t *s)
{
    int t = config_setting_type(s);
    return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
}

/* Unknown keys are errors: a misspelt key would otherwise silently take its default. */
void sg_policy_check_keys(sg_policy_ctx_t *c, const config_setting_t *group,
                          const char *const *known, const char *where)
{
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        size_t k = 0;
        while (known[k] && strcmp(known[k], name) != 0)
            k++;
        if (known[k])
            continue;
        sg_suggest_t sug;
        sg_suggest_init(&sug, name);
        for (k = 0; known[k]; k++)
            sg_suggest_try(&sug, known[k]);
        char hint[96];
        sg_policy_diag(c, line_of(s), ERR, "unknown key '%s' in %s%s", name, where,
                       sg_suggest_hint(&sug, hint, sizeof(hint)));
    }
}

/* A group member that must be a group; NULL (reported) when it is something else. */
static const config_setting_t *get_group(sg_policy_ctx_t *c, const config_setting_t *parent,
                                         const char *key, const char *example)
{
    const config_setting_t *s = config_setting_get_member(parent, key);
    if (s && !config_setting_is_group(s)) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' must be a group: %s", key, example);
        return NULL;
    }
    return s;
}

/* A non-empty string member, copied into the policy; NULL when absent or wrong (reported). */
static const char *get_string(sg_policy_ctx_t *c, const config_setting_t *group, const char *key,
                              const char *where, int required)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s) {
        if (required)
            sg_policy_diag(c, line_of(group), ERR, "%s has no '%s'", where, key);
        return NULL;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' must be a string, not %s", key,
                       sg_policy_type_name(s));
        return NULL;
    }
    const char *v = config_setting_get_string(s);
    if (!*v) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' is empty", key);
        return NULL;
    }
    char *copy = sg_policy_strdup(c->p, v);
    if (!copy)
        c->nomem = 1;
    return copy;
}

/* An array or list of strings, copied into the policy. -1 when wrong (reported). */
static int get_strings(sg_policy_ctx_t *c, const config_setting_t *s, const char *key,
                       const char *const **out, size_t *n)
{
    int type = config_setting_type(s);
    if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'%s' must be a list of strings such as [\"a\", \"b\"], not %s", key,
                       sg_policy_type_name(s));
        return -1;
    }
    int len = config_setting_length(s);
    if (len == 0) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' is empty", key);
        return -1;
    }
    /* Joined literals are not what was meant: said once as a missing comma, not as the odd
     * values they make (an unknown scope, a rule value nobody has). */
    if (sg_policy_check_commas(c, s, key) > 0)
        return -1;
    const char **v = sg_policy_alloc(c->p, (size_t)len * sizeof(*v));
    if (!v) {
        c->nomem = 1;
        return -1;
    }
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            sg_policy_diag(c, line_of(e), ERR, "'%s' must hold only strings, not %s", key,
                           sg_policy_type_name(e));
            return -1;
        }
        v[i] = sg_policy_strdup(c->p, config_setting_get_string(e));
        if (!v[i]) {
            c->nomem = 1;
            return -1;
        }
    }
    *out = v;
    *n = (size_t)len;
    return 0;
}

static int get_scopes(sg_policy_ctx_t *c, const config_setting_t *group, const char *where,
                      sg_scopes_kind kind, const char *const **out, size_t *n)
{
    const config_setting_t *s = config_setting_get_member(group, "scopes");
    if (!s) {
        sg_policy_diag(c, line_of(group), ERR, "%s has no 'scopes'", where);
        return -1;
    }
    if (get_strings(c, s, "scopes", out, n) != 0)
        return -1;
    for (size_t i = 0; i < *n; i++)
        sg_policy_lint_scope(c, kind, *out, i, line_of(config_setting_get_elem(s, (unsigned)i)));
    sg_policy_lint_scope_list(c, kind, *out, *n, line_of(s));
    return 0;
}

static void check_app(sg_policy_ctx_t *c, const config_setting_t *group, const char *app)
{
    if (!app || !c->opts || !c->opts->known_apps)
        return;
    sg_suggest_t sug;
    sg_suggest_init(&sug, app);
    sg_names_t names;
    sg_names_init(&names);
    for (const char *const *k = c->opts->known_apps; *k; k++) {
        if (strcmp(*k, app) == 0)
            return;
        sg_suggest_try(&sug, *k);
        sg_names_add(&names, *k);
    }
    char hint[96];
    sg_policy_diag(c, line_of(config_setting_get_member(group, "app")), ERR,
                   "unknown app '%s'%s: the deployment config defines %s%s", app,
                   sg_suggest_hint(&sug, hint, sizeof(hint)),
                   names.text[0] ? "the apps " : "no apps", names.text);
}

static void parse_version(sg_policy_ctx_t *c, const config_setting_t *root)
{
    const config_setting_t *s = config_setting_get_member(root, "version");
    if (!s) {
        sg_policy_diag(c, 1, ERR, "missing 'version = %d;'", SG_POLICY_VERSION);
        return;
    }
    if (!is_int(s)) {
        sg_policy_diag(c, line_of(s), ERR, "'version' must be an integer (version = %d;), not %s",
                       SG_POLICY_VERSION, sg_policy_type_name(s));
        return;
    }
    long long v = config_setting_get_int64(s);
    if (v != SG_POLICY_VERSION)
        sg_policy_diag(c, line_of(s), ERR,
                       "unsupported policy version %lld: this scopegate reads version %d", v,
                       SG_POLICY_VERSION);
}

static void parse_signin(sg_policy_ctx_t *c, const config_setting_t *root)
{
    c->p->signin.signout_provider = -1;
    const config_setting_t *s =
        get_group(c, root, "signin", "signin = { app = \"signin\"; scopes = [\"openid\"]; };");
    if (!s) {
        if (!config_setting_get_member(root, "signin"))
            sg_policy_diag(c, 1, ERR,
                           "missing 'signin' (the app and scopes everyone signs in with)");
        return;
    }
    sg_policy_check_keys(c, s, signin_keys, "signin");
    sg_policy_signin_t *si = &c->p->signin;
    si->app = get_string(c, s, "app", "signin", 1);
    check_app(c, s, si->app);
    get_scopes(c, s, "signin", SG_SCOPES_SIGNIN, &si->scopes, &si->nscopes);
    /* Unset stays -1, so the deployment's own setting applies. */
    const config_setting_t *so = config_setting_get_member(s, "signout_provider");
    if (so && config_setting_type(so) != CONFIG_TYPE_BOOL)
        sg_policy_diag(c, line_of(so), ERR, "'signout_provider' must be true or false, not %s",
                       sg_policy_type_name(so));
    else if (so)
        si->signout_provider = config_setting_get_bool(so);
}

/* Seconds, dflt when absent, -1 when wrong (reported). A duration is "30m" or whole seconds;
 * zero is an error whose message ends with why_not_zero. */
static long long get_duration_why(sg_policy_ctx_t *c, const config_setting_t *session,
                                  const char *key, long long dflt, const char *why_not_zero)
{
    const config_setting_t *s = config_setting_get_member(session, key);
    if (!s)
        return dflt;
    long long v = 0;
    if (is_int(s)) {
        v = config_setting_get_int64(s);
    } else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
        const char *text = config_setting_get_string(s);
        if (text[0] == '-') {
            v = -1;
        } else if (sg_duration_parse(text, &v) != SG_OK) {
            sg_policy_diag(c, line_of(s), ERR,
                           "'%s' is not a duration: \"%s\" (write e.g. \"90s\", \"30m\", \"8h\", "
                           "\"30d\")",
                           key, text);
            return -1;
        }
    } else {
        sg_policy_diag(c, line_of(s), ERR, "'%s' must be a duration such as \"30m\", not %s", key,
                       sg_policy_type_name(s));
        return -1;
    }
    if (v < 0) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' is negative", key);
        return -1;
    }
    if (v == 0) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' is zero: %s", key, why_not_zero);
        return -1;
    }
    return v;
}

static long long get_duration(sg_policy_ctx_t *c, const config_setting_t *session, const char *key,
                              long long dflt)
{
    return get_duration_why(c, session, key, dflt, "every session would end at once");
}

static void parse_session(sg_policy_ctx_t *c, const config_setting_t *s, const char *where,
                          sg_policy_role_t *r)
{
    sg_policy_check_keys(c, s, session_keys, where);
    long long idle = get_duration(c, s, "idle", SG_POLICY_DEFAULT_IDLE);
    long long max = get_duration(c, s, "max", SG_POLICY_DEFAULT_MAX);
    if (idle > 0)
        r->idle = idle;
    if (max > 0)
        r->max = max;
    if (idle > 0 && max > 0 && idle > max) {
        /* One of the two may be the default; report at the one that is written. */
        const config_setting_t *si = config_setting_get_member(s, "idle");
        const config_setting_t *sm = config_setting_get_member(s, "max");
        char a[32], b[32];
        sg_duration_format(idle, a, sizeof(a));
        sg_duration_format(max, b, sizeof(b));
        sg_policy_diag(c, line_of(si ? si : sm), ERR, "idle %s%s is longer than max %s%s", a,
                       si ? "" : " (the default)", b, sm ? "" : " (the default)");
    }
}

/* offline.fallback = { same_org = true; integration = "NAME"; }: who stands in when the
 * person's grant dies. */
static void parse_fallback(sg_policy_ctx_t *c, const config_setting_t *offline, const char *where,
                           sg_policy_offline_t *o)
{
    const config_setting_t *f = config_setting_get_member(offline, "fallback");
    if (!f)
        return;
    if (!config_setting_is_group(f)) {
        sg_policy_diag(c, line_of(f), ERR,
                       "'fallback' must be a group such as fallback = { same_org = true; "
                       "integration = \"ops\"; }, not %s",
                       sg_policy_type_name(f));
        return;
    }
    char fwhere[200];
    snprintf(fwhere, sizeof(fwhere), "%s.fallback", where);
    sg_policy_check_keys(c, f, fallback_keys, fwhere);
    const config_setting_t *so = config_setting_get_member(f, "same_org");
    if (so && config_setting_type(so) != CONFIG_TYPE_BOOL)
        sg_policy_diag(c, line_of(so), ERR, "'same_org' must be true or false, not %s",
                       sg_policy_type_name(so));
    else if (so)
        o->fallback_same_org = config_setting_get_bool(so);
    o->fallback_integration = get_string(c, f, "integration", fwhere, 0);
}

/* A boolean member: 1/0, dflt when absent, dflt too when wrong (reported). */
static int get_bool(sg_policy_ctx_t *c, const config_setting_t *group, const char *key, int dflt)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return dflt;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' must be true or false, not %s", key,
                       sg_policy_type_name(s));
        return dflt;
    }
    return config_setting_get_bool(s);
}

/* A fraction strictly between 0 and 1: dflt when absent or wrong (reported). */
static double get_fraction(sg_policy_ctx_t *c, const config_setting_t *group, const char *key,
                           double dflt)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return dflt;
    double v;
    if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else if (is_int(s))
        v = (double)config_setting_get_int64(s);
    else {
        sg_policy_diag(c, line_of(s), ERR, "'%s' must be a number between 0 and 1, not %s", key,
                       sg_policy_type_name(s));
        return dflt;
    }
    if (!(v > 0 && v < 1)) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'%s' must be a fraction between 0 and 1 (exclusive), such as %g, not %g",
                       key, dflt, v);
        return dflt;
    }
    return v;
}

/*
 * offline.provider = { refresh_token_policy = "..."; refresh_token_validity = "30d";
 * idle_ttl_limit = false; rotation = false; app_name = "..."; }: what the Connected App's
 * OAuth policies do with refresh tokens (docs/salesforce.md 3.1, 3.2), declared
 * because the gateway cannot read them. Derives idle_window and absolute_lifetime.
 */
static void parse_provider(sg_policy_ctx_t *c, const config_setting_t *offline, const char *where,
                           sg_policy_offline_t *o)
{
    const config_setting_t *g = get_group(
        c, offline, "provider",
        "provider = { refresh_token_policy = \"expire_if_unused\"; refresh_token_validity = "
        "\"30d\"; }");
    if (!g)
        return;
    char pwhere[200];
    snprintf(pwhere, sizeof(pwhere), "%s.provider", where);
    sg_policy_check_keys(c, g, provider_keys, pwhere);
    o->refresh_token_policy = SG_POLICY_RT_VALID_UNTIL_REVOKED;
    const config_setting_t *ps = config_setting_get_member(g, "refresh_token_policy");
    const char *pol = get_string(c, g, "refresh_token_policy", pwhere, 0);
    if (pol) {
        size_t k = 0;
        while (rt_policies[k] && strcmp(rt_policies[k], pol) != 0)
            k++;
        if (rt_policies[k]) {
            o->refresh_token_policy = rt_policies[k];
        } else {
            sg_suggest_t sug;
            sg_suggest_init(&sug, pol);
            for (k = 0; rt_policies[k]; k++)
                sg_suggest_try(&sug, rt_policies[k]);
            char hint[96];
            sg_policy_diag(c, line_of(ps), ERR,
                           "unknown refresh_token_policy '%s'%s: write one of "
                           "valid_until_revoked, immediately_expire, expire_if_unused, "
                           "expire_after",
                           pol, sg_suggest_hint(&sug, hint, sizeof(hint)));
            o->refresh_token_policy = NULL; /* unknown: derive nothing */
        }
    }
    const char *rtp = o->refresh_token_policy;
    int expiring = rtp && (strcmp(rtp, SG_POLICY_RT_EXPIRE_IF_UNUSED) == 0 ||
                           strcmp(rtp, SG_POLICY_RT_EXPIRE_AFTER) == 0);
    const config_setting_t *vs = config_setting_get_member(g, "refresh_token_validity");
    long long validity =
        get_duration_why(c, g, "refresh_token_validity", 0,
                         "the refresh token would die at once (refresh_token_policy "
                         "\"immediately_expire\" says that)");
    if (validity < 0)
        validity = 0;
    if (expiring && !vs)
        sg_policy_diag(c, line_of(ps ? ps : g), ERR,
                       "refresh_token_policy '%s' needs refresh_token_validity (the N of "
                       "\"%s N\", such as \"30d\")",
                       rtp,
                       strcmp(rtp, SG_POLICY_RT_EXPIRE_AFTER) == 0 ? "expire refresh token after"
                                                                   : "expire if not used for");
    else if (rtp && !expiring && vs && validity > 0)
        sg_policy_diag(c, line_of(vs), WARN,
                       "refresh_token_validity does nothing with refresh_token_policy '%s' (only "
                       "expire_if_unused and expire_after have one)",
                       rtp);
    o->idle_ttl_limit = get_bool(c, g, "idle_ttl_limit", 0);
    o->rotation = get_bool(c, g, "rotation", 0);
    o->provider_app_name = get_string(c, g, "app_name", pwhere, 0);
    if (!rtp)
        return;
    if (expiring)
        o->refresh_token_validity = validity;
    if (strcmp(rtp, SG_POLICY_RT_EXPIRE_IF_UNUSED) == 0)
        o->idle_window = validity;
    else if (strcmp(rtp, SG_POLICY_RT_EXPIRE_AFTER) == 0)
        o->absolute_lifetime = validity;
    /* The 30-day idle limit: every policy but "immediately expire" also dies after 30 days
     * unused (docs/salesforce.md 3.1). */
    if (o->idle_ttl_limit && strcmp(rtp, SG_POLICY_RT_IMMEDIATELY_EXPIRE) != 0 &&
        (o->idle_window == 0 || o->idle_window > SG_POLICY_IDLE_TTL_LIMIT))
        o->idle_window = SG_POLICY_IDLE_TTL_LIMIT;
    if (strcmp(rtp, SG_POLICY_RT_IMMEDIATELY_EXPIRE) == 0)
        sg_policy_diag(c, line_of(ps ? ps : g), WARN,
                       "refresh_token_policy 'immediately_expire': the provider lets no refresh "
                       "token be used, so grants can never refresh (set the Connected App to "
                       "another refresh token policy)");
}

/* offline.keep_alive = { enabled = true; at = 0.5; jitter = 0.1; } and offline.warn_before. */
static void parse_keep_alive(sg_policy_ctx_t *c, const config_setting_t *offline, const char *where,
                             sg_policy_offline_t *o)
{
    o->keep_alive_at = SG_POLICY_DEFAULT_KEEP_ALIVE_AT;
    o->keep_alive_jitter = SG_POLICY_DEFAULT_KEEP_ALIVE_JITTER;
    o->warn_before = SG_POLICY_DEFAULT_WARN_BEFORE;
    long long wb =
        get_duration_why(c, offline, "warn_before", SG_POLICY_DEFAULT_WARN_BEFORE,
                         "nobody would be warned before a grant expires (leave it out for 7d)");
    if (wb > 0)
        o->warn_before = wb;
    const config_setting_t *g =
        get_group(c, offline, "keep_alive", "keep_alive = { enabled = true; at = 0.5; }");
    if (!g)
        return;
    char kwhere[200];
    snprintf(kwhere, sizeof(kwhere), "%s.keep_alive", where);
    sg_policy_check_keys(c, g, keep_alive_keys, kwhere);
    /* Writing the block means wanting it: enabled defaults to true inside it. */
    o->keep_alive = get_bool(c, g, "enabled", 1);
    o->keep_alive_at = get_fraction(c, g, "at", SG_POLICY_DEFAULT_KEEP_ALIVE_AT);
    o->keep_alive_jitter = get_fraction(c, g, "jitter", SG_POLICY_DEFAULT_KEEP_ALIVE_JITTER);
    if (o->keep_alive && o->keep_alive_at + o->keep_alive_jitter >= 1)
        sg_policy_diag(c, line_of(g), WARN,
                       "keep_alive at %g plus jitter %g reaches the end of the idle window: some "
                       "grants would be refreshed after they died",
                       o->keep_alive_at, o->keep_alive_jitter);
}

/* What the declaration means for the grants, said once both blocks are read. */
static void lint_grant_health(sg_policy_ctx_t *c, const config_setting_t *offline,
                              const sg_policy_offline_t *o)
{
    char a[32], b[32];
    const config_setting_t *prov = config_setting_get_member(offline, "provider");
    const config_setting_t *ka = config_setting_get_member(offline, "keep_alive");
    if (o->idle_window > 0 && !o->keep_alive) {
        sg_duration_format(o->idle_window, a, sizeof(a));
        sg_policy_diag(c, line_of(prov ? prov : offline), WARN,
                       "grants die after %s unused%s; enable keep_alive (keep_alive = { enabled = "
                       "true; }) so the gateway refreshes them before that",
                       a,
                       o->idle_ttl_limit && o->idle_window == SG_POLICY_IDLE_TTL_LIMIT &&
                               o->refresh_token_validity != SG_POLICY_IDLE_TTL_LIMIT
                           ? " (the 30-day idle limit)"
                           : "");
    }
    if (o->keep_alive && o->idle_window == 0 && ka)
        sg_policy_diag(c, line_of(ka), WARN,
                       "keep_alive has nothing to do: no idle window is declared (provider "
                       "refresh_token_policy \"expire_if_unused\" or idle_ttl_limit = true)");
    if (o->absolute_lifetime > 0 && o->warn_before >= o->absolute_lifetime) {
        const config_setting_t *wb = config_setting_get_member(offline, "warn_before");
        sg_duration_format(o->warn_before, a, sizeof(a));
        sg_duration_format(o->absolute_lifetime, b, sizeof(b));
        sg_policy_diag(c, line_of(wb ? wb : prov), WARN,
                       "warn_before %s%s is not shorter than the grants' lifetime %s: every grant "
                       "would be expiring soon from the start",
                       a, wb ? "" : " (the default)", b);
    }
}

static void parse_offline(sg_policy_ctx_t *c, const config_setting_t *s, const char *where,
                          sg_policy_role_t *r)
{
    sg_policy_offline_t *o = sg_policy_alloc(c->p, sizeof(*o));
    if (!o) {
        c->nomem = 1;
        return;
    }
    r->offline = o;
    o->grant_limit = SG_POLICY_DEFAULT_GRANT_LIMIT;
    sg_policy_check_keys(c, s, offline_keys, where);
    o->app = get_string(c, s, "app", where, 1);
    check_app(c, s, o->app);
    const char *signin_app = c->p->signin.app;
    if (o->app && signin_app && strcmp(o->app, signin_app) == 0)
        sg_policy_diag(c, line_of(config_setting_get_member(s, "app")), WARN,
                       "offline app '%s' is also the sign-in app: use a second Connected App so "
                       "offline grants are kept apart from sign-ins",
                       o->app);
    get_scopes(c, s, where, SG_SCOPES_OFFLINE, &o->scopes, &o->nscopes);
    long long ttl = get_duration(c, s, "token_ttl", 0);
    if (ttl > 0)
        o->token_ttl = ttl;
    parse_fallback(c, s, where, o);
    parse_provider(c, s, where, o);
    parse_keep_alive(c, s, where, o);
    lint_grant_health(c, s, o);

    const config_setting_t *gl = config_setting_get_member(s, "grant_limit");
    if (!gl)
        return;
    if (!is_int(gl)) {
        sg_policy_diag(c, line_of(gl), ERR, "'grant_limit' must be an integer, not %s",
                       sg_policy_type_name(gl));
        return;
    }
    long long limit = config_setting_get_int64(gl);
    if (limit < 1 || limit > 1000) {
        sg_policy_diag(c, line_of(gl), ERR, "'grant_limit' must be between 1 and 1000, not %lld",
                       limit);
        return;
    }
    o->grant_limit = (int)limit;
    if (limit > SG_POLICY_DEFAULT_GRANT_LIMIT)
        sg_policy_diag(c, line_of(gl), WARN,
                       "grant_limit %lld is above Salesforce's %d live grants per user and app: "
                       "the provider would evict grants the gateway still counts as live",
                       limit, SG_POLICY_DEFAULT_GRANT_LIMIT);
}

/* A role's true-or-false setting (absent: false). */
static void role_flag(sg_policy_ctx_t *c, const config_setting_t *s, const char *name, int *out)
{
    const config_setting_t *v = config_setting_get_member(s, name);
    if (v && config_setting_type(v) != CONFIG_TYPE_BOOL)
        sg_policy_diag(c, line_of(v), ERR, "'%s' must be true or false, not %s", name,
                       sg_policy_type_name(v));
    else if (v)
        *out = config_setting_get_bool(v);
}

static void parse_role(sg_policy_ctx_t *c, const config_setting_t *s, sg_policy_role_t *r)
{
    r->name = sg_policy_strdup(c->p, config_setting_name(s));
    if (!r->name) {
        c->nomem = 1;
        return;
    }
    r->line = line_of(s);
    r->idle = SG_POLICY_DEFAULT_IDLE;
    r->max = SG_POLICY_DEFAULT_MAX;
    if (!config_setting_is_group(s)) {
        sg_policy_diag(c, r->line, ERR,
                       "role '%s' must be a group such as %s = { session = { idle = \"30m\"; }; }, "
                       "not %s",
                       r->name, r->name, sg_policy_type_name(s));
        return;
    }
    char where[160];
    snprintf(where, sizeof(where), "roles.%s", r->name);
    sg_policy_check_keys(c, s, role_keys, where);

    const config_setting_t *g = get_group(
        c, s, "offline", "offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; };");
    if (g) {
        snprintf(where, sizeof(where), "roles.%s.offline", r->name);
        parse_offline(c, g, where, r);
    }
    g = get_group(c, s, "session", "session = { idle = \"30m\"; max = \"8h\"; };");
    if (g) {
        snprintf(where, sizeof(where), "roles.%s.session", r->name);
        parse_session(c, g, where, r);
    }
    role_flag(c, s, "can_view_policy", &r->can_view_policy);
    role_flag(c, s, "can_end_sessions", &r->can_end_sessions);
    if (r->can_end_sessions && !r->can_view_policy)
        sg_policy_diag(c, line_of(config_setting_get_member(s, "can_end_sessions")), WARN,
                       "role '%s' has 'can_end_sessions' without 'can_view_policy': the list "
                       "of sessions to end is on the policy page, which this role cannot open",
                       r->name);
}

static void parse_roles(sg_policy_ctx_t *c, const config_setting_t *root)
{
    const config_setting_t *s = get_group(
        c, root, "roles", "roles = { user = { session = { idle = \"30m\"; max = \"8h\"; }; }; };");
    if (!s) {
        if (!config_setting_get_member(root, "roles"))
            sg_policy_diag(c, 1, ERR, "missing 'roles'");
        return;
    }
    int n = config_setting_length(s);
    if (n == 0) {
        sg_policy_diag(c, line_of(s), ERR, "'roles' is empty: define at least one role");
        return;
    }
    c->p->roles = sg_policy_alloc(c->p, (size_t)n * sizeof(*c->p->roles));
    if (!c->p->roles) {
        c->nomem = 1;
        return;
    }
    c->p->nroles = (size_t)n;
    for (int i = 0; i < n && !c->nomem; i++)
        parse_role(c, config_setting_get_elem(s, (unsigned)i), &c->p->roles[i]);
}

static const char *rule_text(sg_policy_ctx_t *c, const sg_policy_rule_t *r)
{
    if (r->kind == SG_RULE_DEFAULT)
        return "default";
    sg_buf_t b;
    sg_buf_init(&b, SG_POLICY_MAX_BYTES);
    sg_rc rc = sg_buf_printf(&b, "%s %s [", r->claim, r->kind == SG_RULE_IN ? "in" : "contains");
    for (size_t i = 0; i < r->nvalues && !rc; i++)
        rc = sg_buf_printf(&b, "%s%s", i ? ", " : "", r->values[i]);
    if (!rc)
        rc = sg_buf_adds(&b, "]");
    char *text = rc ? NULL : sg_policy_strdup(c->p, b.ptr);
    sg_buf_free(&b);
    if (!text)
        c->nomem = 1;
    return text;
}

static void parse_rule_role(sg_policy_ctx_t *c, const config_setting_t *s, sg_policy_rule_t *r)
{
    const char *name = get_string(c, s, "role", "this rule", 1);
    if (!name || !c->p->roles)
        return; /* without roles, every name would be "unknown": one error is enough */
    r->role = sg_policy_role(c->p, name);
    if (r->role)
        return;
    sg_suggest_t sug;
    sg_suggest_init(&sug, name);
    sg_names_t names;
    sg_names_init(&names);
    for (size_t i = 0; i < c->p->nroles; i++) {
        sg_suggest_try(&sug, c->p->roles[i].name);
        if (c->p->roles[i].name)
            sg_names_add(&names, c->p->roles[i].name);
    }
    char hint[96];
    sg_policy_diag(c, line_of(config_setting_get_member(s, "role")), ERR,
                   "unknown role '%s'%s: the policy's roles are %s", name,
                   sg_suggest_hint(&sug, hint, sizeof(hint)), names.text);
}

/*
 * A rule is the default when it has none of claim, in, contains. Any other shape is a test
 * of a claim, even a broken one, so a typo never turns a rule into a catch-all. A broken
 * rule keeps text NULL, which tells lint.c to leave it out of its comparisons.
 */
static void parse_rule(sg_policy_ctx_t *c, const config_setting_t *s, sg_policy_rule_t *r)
{
    r->line = line_of(s);
    r->kind = SG_RULE_IN;
    if (!config_setting_is_group(s)) {
        sg_policy_diag(c, r->line, ERR,
                       "each rule must be a group such as { role = \"user\"; }, not %s",
                       sg_policy_type_name(s));
        return;
    }
    sg_policy_check_keys(c, s, rule_keys, "an assign rule");
    parse_rule_role(c, s, r);

    const config_setting_t *claim = config_setting_get_member(s, "claim");
    const config_setting_t *in = config_setting_get_member(s, "in");
    const config_setting_t *contains = config_setting_get_member(s, "contains");
    if (!claim && !in && !contains) {
        r->kind = SG_RULE_DEFAULT;
        r->text = "default";
        return;
    }
    int ok = 1;
    if (in && contains) {
        sg_policy_diag(c, line_of(contains), ERR,
                       "a rule has either 'in' or 'contains', not both (write two rules)");
        ok = 0;
    }
    const config_setting_t *list = in ? in : contains;
    r->kind = in ? SG_RULE_IN : SG_RULE_CONTAINS;
    if (!claim) {
        sg_policy_diag(c, line_of(list), ERR, "'%s' needs a 'claim' to compare with",
                       in ? "in" : "contains");
        ok = 0;
    } else {
        r->claim = get_string(c, s, "claim", "this rule", 1);
        if (!r->claim)
            ok = 0;
        else if (!list) {
            sg_policy_diag(c, line_of(claim), ERR,
                           "claim '%s' needs 'in' (one value) or 'contains' (a list of values)",
                           r->claim);
            ok = 0;
        }
    }
    if (list && get_strings(c, list, in ? "in" : "contains", &r->values, &r->nvalues) != 0)
        ok = 0;
    if (ok)
        r->text = rule_text(c, r);
}

static void parse_assign(sg_policy_ctx_t *c, const config_setting_t *root)
{
    const config_setting_t *s = config_setting_get_member(root, "assign");
    if (!s) {
        sg_policy_diag(c, 1, ERR, "missing 'assign' (the rules that give people their roles)");
        return;
    }
    int type = config_setting_type(s);
    int n = config_setting_length(s);
    if (type != CONFIG_TYPE_LIST && !(type == CONFIG_TYPE_ARRAY && n == 0)) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'assign' must be a list of rules: assign = ( { ... }, { ... } ); not %s",
                       sg_policy_type_name(s));
        return;
    }
    if (n == 0) {
        sg_policy_diag(c, line_of(s), ERR, "'assign' is empty: nobody would get a role");
        return;
    }
    c->p->rules = sg_policy_alloc(c->p, (size_t)n * sizeof(*c->p->rules));
    if (!c->p->rules) {
        c->nomem = 1;
        return;
    }
    c->p->nrules = (size_t)n;
    for (int i = 0; i < n && !c->nomem; i++)
        parse_rule(c, config_setting_get_elem(s, (unsigned)i), &c->p->rules[i]);
    if (!c->nomem)
        sg_policy_lint_rules(c, line_of(s));
}

/*
 * What libconfig would accept but a policy must not contain: a NUL byte (libconfig would
 * silently stop reading there) and @include (the policy's hash must cover all of it).
 */
static int prescan(sg_policy_ctx_t *c, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    for (int line = 1; p < end; line++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if (memchr(p, '\0', (size_t)(eol - p))) {
            sg_policy_diag(c, line, ERR, "the file contains a NUL byte");
            return -1;
        }
        const char *q = p;
        while (q < eol && (*q == ' ' || *q == '\t'))
            q++;
        if (eol - q >= 8 && memcmp(q, "@include", 8) == 0) {
            sg_policy_diag(c, line, ERR,
                           "a policy cannot @include other files: its hash must cover all of it");
            return -1;
        }
        p = eol + 1;
    }
    return 0;
}

/*
 * libconfig before 1.7.3 leaks the string token it drops while recovering from some syntax
 * errors (hyperrealm/libconfig#142, fixed by #155); Debian 12 ships 1.5. It costs tens of
 * bytes per rejected file. Sanitizer builds call this hook at start-up: this known leak must
 * not hide, or be mistaken for, one of ours.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:strbuf_append\n"    /* a dropped string token */
           "leak:libconfig_yylex\n"; /* a dropped empty string token ("") */
}

static void parse_text(sg_policy_ctx_t *c, const char *text, size_t len)
{
    if (prescan(c, text, len) != 0)
        return;
    char *copy = malloc(len + 1); /* libconfig wants a NUL-terminated string */
    if (!copy) {
        c->nomem = 1;
        return;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    c->text = copy;
    c->len = len;
    config_t cf;
    config_init(&cf);
    if (!config_read_string(&cf, copy)) {
        sg_policy_diag(c, config_error_line(&cf), ERR, "%s", config_error_text(&cf));
    } else {
        const config_setting_t *root = config_root_setting(&cf);
        sg_policy_check_keys(c, root, root_keys, "the policy");
        parse_version(c, root);
        parse_signin(c, root);
        parse_roles(c, root);
        if (!c->nomem)
            parse_assign(c, root);
    }
    config_destroy(&cf);
    c->text = NULL;
    free(copy);
}

sg_rc sg_policy_parse(const char *text, size_t len, const char *name, const sg_policy_opts_t *opts,
                      sg_policy_t **out, sg_diags_t *diags)
{
    if (out)
        *out = NULL;
    sg_diags_t local;
    sg_diags_init(&local);
    sg_diags_t *d = diags ? diags : &local;
    size_t errors_before = d->errors;

    sg_policy_t *p = calloc(1, sizeof(*p));
    if (!p)
        return SG_ERR_NOMEM;
    if (!name)
        name = "policy";
    sg_policy_ctx_t c = {.p = p, .d = d, .file = name, .opts = opts};
    char *hash = sg_sha256_hex(text, len);
    p->source = sg_policy_strdup(p, name);
    p->hash = hash ? sg_policy_strdup(p, hash) : NULL;
    free(hash);
    if (!p->source || !p->hash)
        c.nomem = 1;
    else if (len > SG_POLICY_MAX_BYTES)
        sg_policy_diag(&c, 0, ERR, "the file is larger than %d bytes", SG_POLICY_MAX_BYTES);
    else
        parse_text(&c, text, len);

    sg_diags_sort(d);
    sg_rc rc = SG_OK;
    if (c.nomem)
        rc = SG_ERR_NOMEM;
    else if (d->errors > errors_before)
        rc = SG_ERR_CONFIG;
    if (rc == SG_OK && out)
        *out = p;
    else
        sg_policy_free(p);
    sg_diags_free(&local);
    return rc;
}

sg_rc sg_policy_load(const char *path, const sg_policy_opts_t *opts, sg_policy_t **out,
                     sg_diags_t *diags)
{
    if (out)
        *out = NULL;
    sg_diags_t local;
    sg_diags_init(&local);
    sg_policy_ctx_t c = {.d = diags ? diags : &local, .file = path, .opts = opts};
    sg_buf_t b;
    sg_buf_init(&b, SG_POLICY_MAX_BYTES);
    sg_rc rc = SG_OK;

    FILE *f = fopen(path, "rb");
    if (!f) {
        sg_policy_diag(&c, 0, ERR, "cannot open: %s", strerror(errno));
        rc = SG_ERR_IO;
        goto done;
    }
    rc = sg_buf_add_file(&b, f);
    if (rc == SG_ERR_TOO_BIG) {
        sg_policy_diag(&c, 0, ERR, "the file is larger than %d bytes", SG_POLICY_MAX_BYTES);
        rc = SG_ERR_CONFIG;
    } else if (rc == SG_ERR_IO) {
        sg_policy_diag(&c, 0, ERR, "cannot read: %s", strerror(errno));
    }
    fclose(f);
    if (!rc)
        rc = sg_policy_parse(b.ptr ? b.ptr : "", b.len, path, opts, out, c.d);
done:
    if (c.nomem && !rc)
        rc = SG_ERR_NOMEM;
    sg_buf_free(&b);
    sg_diags_free(&local);
    return rc;
}
