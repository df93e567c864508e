/*
 * Policy diff: what changes, in sentences, between two loaded policies. Roles are matched by
 * name, rules by what they decide (role, claim, test, set of values), so a reordered file
 * reads as moves and an edited list of values as one changed rule, not as a rewrite.
 */
#include "policy_int.h"

#include "scopegate/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The list being built; after the first allocation failure every step is a no-op. */
typedef struct {
    cJSON *list;
    int nomem;
} diff_t;

static const char *nz(const char *s)
{
    return s ? s : "";
}

static int same_str(const char *a, const char *b)
{
    return strcmp(nz(a), nz(b)) == 0;
}

static int in_list(const char *s, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

/* "30m", "8h", "1h30m", "0s": the largest units first, as people write durations. */
static const char *dur(long long s, char *buf, size_t len)
{
    static const struct {
        long long secs;
        char unit;
    } units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    if (s <= 0) {
        snprintf(buf, len, "%llds", s);
        return buf;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < 4 && used < len; i++) {
        long long n = s / units[i].secs;
        s %= units[i].secs;
        if (n == 0)
            continue;
        int w = snprintf(buf + used, len - used, "%lld%c", n, units[i].unit);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return buf;
}

static const char *yes_no(int v)
{
    return v ? "yes" : "no";
}

/* The items of v that are not in except, joined by ", " (NULL when out of memory). */
static char *join_missing(const char *const *v, size_t n, const char *const *except, size_t nexcept,
                          size_t *count)
{
    sg_buf_t b;
    sg_buf_init(&b, SG_POLICY_MAX_BYTES);
    sg_rc rc = sg_buf_adds(&b, "");
    *count = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (in_list(v[i], except, nexcept) || in_list(v[i], v, i))
            continue;
        rc = sg_buf_printf(&b, "%s%s", *count ? ", " : "", v[i]);
        (*count)++;
    }
    return rc ? NULL : sg_buf_steal(&b);
}

static char *join(const char *const *v, size_t n)
{
    size_t count;
    return join_missing(v, n, NULL, 0, &count);
}

/* Appends a change {"kind", "text"} and returns it for its fields, or NULL (nomem set). */
__attribute__((format(printf, 3, 4))) static cJSON *emit(diff_t *d, const char *kind,
                                                         const char *fmt, ...)
{
    if (d->nomem)
        return NULL;
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    cJSON *o = n < 0 ? NULL : cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "kind", kind) ||
        !cJSON_AddStringToObject(o, "text", text) || !cJSON_AddItemToArray(d->list, o)) {
        cJSON_Delete(o);
        o = NULL;
        d->nomem = 1;
    }
    if (n >= 0)
        free(text);
    return o;
}

/* Fields of a change: a NULL change (out of memory already) is left alone. */
static void f_str(diff_t *d, cJSON *o, const char *key, const char *v)
{
    if (o && !(v ? cJSON_AddStringToObject(o, key, v) : cJSON_AddNullToObject(o, key)))
        d->nomem = 1;
}

static void f_num(diff_t *d, cJSON *o, const char *key, double v)
{
    if (o && !cJSON_AddNumberToObject(o, key, v))
        d->nomem = 1;
}

/* A duration in seconds; 0 means "the default" and is written as null. */
static void f_secs_or_null(diff_t *d, cJSON *o, const char *key, long long v)
{
    if (o && !(v ? cJSON_AddNumberToObject(o, key, (double)v) : cJSON_AddNullToObject(o, key)))
        d->nomem = 1;
}

static void f_bool(diff_t *d, cJSON *o, const char *key, int v)
{
    if (o && !cJSON_AddBoolToObject(o, key, v))
        d->nomem = 1;
}

/* The items of v not in except, as a JSON array of strings. */
static void f_missing(diff_t *d, cJSON *o, const char *key, const char *const *v, size_t n,
                      const char *const *except, size_t nexcept)
{
    if (!o)
        return;
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (size_t i = 0; a && i < n; i++) {
        if (in_list(v[i], except, nexcept) || in_list(v[i], v, i))
            continue;
        cJSON *s = cJSON_CreateString(v[i]);
        if (!s || !cJSON_AddItemToArray(a, s)) {
            cJSON_Delete(s);
            a = NULL;
        }
    }
    if (!a)
        d->nomem = 1;
}

/* ---- sign-in and roles -------------------------------------------------------------- */

/* One yes/no setting of a role's offline block. */
static void flag_changed(diff_t *d, const char *kind, const char *role, const char *setting,
                         const char *words, int from, int to)
{
    if (!from == !to)
        return;
    cJSON *o = emit(d, kind, "role '%s': %s %s -> %s", role, words, yes_no(from), yes_no(to));
    f_str(d, o, "role", role);
    f_str(d, o, "setting", setting);
    f_bool(d, o, "from", from);
    f_bool(d, o, "to", to);
}

/* One optional name of a role's offline block ('name', or none). */
static void name_changed(diff_t *d, const char *kind, const char *role, const char *setting,
                         const char *words, const char *from, const char *to)
{
    if (!from == !to && (!from || strcmp(from, to) == 0))
        return;
    cJSON *o =
        emit(d, kind, "role '%s': %s %s%s%s -> %s%s%s", role, words, from ? "'" : "",
             from ? from : "none", from ? "'" : "", to ? "'" : "", to ? to : "none", to ? "'" : "");
    f_str(d, o, "role", role);
    f_str(d, o, "setting", setting);
    f_str(d, o, "from", from);
    f_str(d, o, "to", to);
}

/*
 * Scopes in to that from lacks, as one change: "PREFIX: a, b" (prefix names the role, if
 * any, and what the scopes are for). Nothing when there are none.
 */
static void scopes_added(diff_t *d, const char *kind, const char *role, const char *app,
                         const char *what, const char *const *to, size_t nto,
                         const char *const *from, size_t nfrom)
{
    size_t count = 0;
    char *list = d->nomem ? NULL : join_missing(to, nto, from, nfrom, &count);
    if (!list) {
        d->nomem = 1;
        return;
    }
    if (count) {
        cJSON *o = role ? emit(d, kind, "role '%s': %s: %s", role, what, list)
                        : emit(d, kind, "%s: %s", what, list);
        if (role)
            f_str(d, o, "role", role);
        if (app)
            f_str(d, o, "app", app);
        f_missing(d, o, "scopes", to, nto, from, nfrom);
    }
    free(list);
}

static void diff_signin(diff_t *d, const sg_policy_signin_t *a, const sg_policy_signin_t *b)
{
    if (!same_str(a->app, b->app)) {
        cJSON *o =
            emit(d, "signin_app_changed", "sign-in app '%s' -> '%s'", nz(a->app), nz(b->app));
        f_str(d, o, "from", a->app);
        f_str(d, o, "to", b->app);
    }
    scopes_added(d, "signin_scopes_added", NULL, NULL, "sign-in scopes added", b->scopes,
                 b->nscopes, a->scopes, a->nscopes);
    scopes_added(d, "signin_scopes_removed", NULL, NULL, "sign-in scopes removed", a->scopes,
                 a->nscopes, b->scopes, b->nscopes);
    if (a->signout_provider != b->signout_provider) {
        static const char *const said[] = {"the config decides", "no", "yes"};
        cJSON *o = emit(d, "signout_provider_changed", "sign-out at the provider: %s -> %s",
                        said[a->signout_provider + 1], said[b->signout_provider + 1]);
        /* -1 (not said: the deployment config decides) goes out as null */
        if (a->signout_provider < 0)
            f_str(d, o, "from", NULL);
        else
            f_bool(d, o, "from", a->signout_provider);
        if (b->signout_provider < 0)
            f_str(d, o, "to", NULL);
        else
            f_bool(d, o, "to", b->signout_provider);
    }
}

static void diff_fallback(diff_t *d, const char *role, const sg_policy_offline_t *a,
                          const sg_policy_offline_t *b)
{
    if (!a->fallback_same_org != !b->fallback_same_org) {
        cJSON *o = emit(d, "fallback_changed", "role '%s': same-org fallback %s -> %s", role,
                        yes_no(a->fallback_same_org), yes_no(b->fallback_same_org));
        f_str(d, o, "role", role);
        f_str(d, o, "setting", "same_org");
        f_bool(d, o, "from", a->fallback_same_org);
        f_bool(d, o, "to", b->fallback_same_org);
    }
    name_changed(d, "fallback_changed", role, "integration", "fallback integration",
                 a->fallback_integration, b->fallback_integration);
}

/* "valid until revoked", "expire if not used for 30d", "not declared": a refresh token
 * policy in words. */
static const char *rt_words(const sg_policy_offline_t *o, char *buf, size_t len)
{
    char n[32];
    const char *p = o->refresh_token_policy;
    if (!p)
        snprintf(buf, len, "not declared");
    else if (strcmp(p, SG_POLICY_RT_EXPIRE_IF_UNUSED) == 0)
        snprintf(buf, len, "expire if not used for %s",
                 dur(o->refresh_token_validity, n, sizeof(n)));
    else if (strcmp(p, SG_POLICY_RT_EXPIRE_AFTER) == 0)
        snprintf(buf, len, "expire after %s", dur(o->refresh_token_validity, n, sizeof(n)));
    else if (strcmp(p, SG_POLICY_RT_IMMEDIATELY_EXPIRE) == 0)
        snprintf(buf, len, "immediately expire");
    else
        snprintf(buf, len, "valid until revoked");
    return buf;
}

/* What the provider will do (offline.provider), keep-alive and the expiry warning. */
static void diff_grant_health(diff_t *d, const char *role, const sg_policy_offline_t *a,
                              const sg_policy_offline_t *b)
{
    char x[96], y[96];
    if (!same_str(a->refresh_token_policy, b->refresh_token_policy) ||
        a->refresh_token_validity != b->refresh_token_validity) {
        cJSON *o = emit(d, "provider_changed", "role '%s': refresh token policy %s -> %s", role,
                        rt_words(a, x, sizeof(x)), rt_words(b, y, sizeof(y)));
        f_str(d, o, "role", role);
        f_str(d, o, "setting", "refresh_token_policy");
        f_str(d, o, "from", a->refresh_token_policy);
        f_str(d, o, "to", b->refresh_token_policy);
        f_secs_or_null(d, o, "from_validity", a->refresh_token_validity);
        f_secs_or_null(d, o, "to_validity", b->refresh_token_validity);
    }
    flag_changed(d, "provider_changed", role, "idle_ttl_limit", "30-day idle limit",
                 a->idle_ttl_limit, b->idle_ttl_limit);
    flag_changed(d, "provider_changed", role, "rotation", "refresh token rotation", a->rotation,
                 b->rotation);
    name_changed(d, "provider_changed", role, "app_name", "provider app name", a->provider_app_name,
                 b->provider_app_name);
    if (a->idle_window != b->idle_window) {
        char n1[32], n2[32];
        if (a->idle_window)
            snprintf(x, sizeof(x), "after %s unused", dur(a->idle_window, n1, sizeof(n1)));
        if (b->idle_window)
            snprintf(y, sizeof(y), "after %s unused", dur(b->idle_window, n2, sizeof(n2)));
        cJSON *o = emit(d, "idle_window_changed", "role '%s': idle expiry %s -> %s", role,
                        a->idle_window ? x : "never", b->idle_window ? y : "never");
        f_str(d, o, "role", role);
        f_secs_or_null(d, o, "from", a->idle_window);
        f_secs_or_null(d, o, "to", b->idle_window);
    }
    if (a->absolute_lifetime != b->absolute_lifetime) {
        char n1[32], n2[32];
        if (a->absolute_lifetime)
            snprintf(x, sizeof(x), "%s after connecting",
                     dur(a->absolute_lifetime, n1, sizeof(n1)));
        if (b->absolute_lifetime)
            snprintf(y, sizeof(y), "%s after connecting",
                     dur(b->absolute_lifetime, n2, sizeof(n2)));
        cJSON *o = emit(d, "absolute_lifetime_changed", "role '%s': absolute expiry %s -> %s", role,
                        a->absolute_lifetime ? x : "never", b->absolute_lifetime ? y : "never");
        f_str(d, o, "role", role);
        f_secs_or_null(d, o, "from", a->absolute_lifetime);
        f_secs_or_null(d, o, "to", b->absolute_lifetime);
    }
    flag_changed(d, "keep_alive_changed", role, "enabled", "keep-alive", a->keep_alive,
                 b->keep_alive);
    static const char *const frac_names[] = {"at", "jitter"};
    const double fa2[] = {a->keep_alive_at, a->keep_alive_jitter};
    const double tb2[] = {b->keep_alive_at, b->keep_alive_jitter};
    for (size_t i = 0; i < 2; i++) {
        if (fa2[i] == tb2[i])
            continue;
        cJSON *o = emit(d, "keep_alive_changed", "role '%s': keep-alive %s %g -> %g%s", role,
                        frac_names[i], fa2[i], tb2[i], i == 0 ? " of the idle window" : "");
        f_str(d, o, "role", role);
        f_str(d, o, "setting", frac_names[i]);
        f_num(d, o, "from", fa2[i]);
        f_num(d, o, "to", tb2[i]);
    }
    if (a->warn_before != b->warn_before) {
        cJSON *o = emit(d, "warn_before_changed", "role '%s': warn before a grant expires %s -> %s",
                        role, dur(a->warn_before, x, sizeof(x)), dur(b->warn_before, y, sizeof(y)));
        f_str(d, o, "role", role);
        f_num(d, o, "from", (double)a->warn_before);
        f_num(d, o, "to", (double)b->warn_before);
    }
}

static void diff_offline(diff_t *d, const char *role, const sg_policy_offline_t *a,
                         const sg_policy_offline_t *b)
{
    char x[32], y[32];
    if (!a && !b)
        return;
    if (!a || !b) {
        const sg_policy_offline_t *o = a ? a : b;
        char *list = join(o->scopes, o->nscopes);
        if (!list) {
            d->nomem = 1;
            return;
        }
        cJSON *c = a ? emit(d, "offline_removed", "role '%s': offline access removed (app '%s')",
                            role, nz(o->app))
                     : emit(d, "offline_added", "role '%s': offline access added: app '%s', %s",
                            role, nz(o->app), list);
        free(list);
        f_str(d, c, "role", role);
        f_str(d, c, "app", o->app);
        if (b)
            f_missing(d, c, "scopes", b->scopes, b->nscopes, NULL, 0);
        return;
    }
    if (!same_str(a->app, b->app)) {
        cJSON *o = emit(d, "offline_app_changed", "role '%s': offline app '%s' -> '%s'", role,
                        nz(a->app), nz(b->app));
        f_str(d, o, "role", role);
        f_str(d, o, "from", a->app);
        f_str(d, o, "to", b->app);
    }
    scopes_added(d, "offline_scopes_added", role, b->app, "offline scopes added", b->scopes,
                 b->nscopes, a->scopes, a->nscopes);
    scopes_added(d, "offline_scopes_removed", role, b->app, "offline scopes removed", a->scopes,
                 a->nscopes, b->scopes, b->nscopes);
    if (a->grant_limit != b->grant_limit) {
        cJSON *o = emit(d, "grant_limit_changed", "role '%s': grant limit %d -> %d", role,
                        a->grant_limit, b->grant_limit);
        f_str(d, o, "role", role);
        f_num(d, o, "from", a->grant_limit);
        f_num(d, o, "to", b->grant_limit);
    }
    if (a->token_ttl != b->token_ttl) {
        cJSON *o = emit(d, "token_ttl_changed", "role '%s': token TTL %s -> %s", role,
                        a->token_ttl ? dur(a->token_ttl, x, sizeof(x)) : "default",
                        b->token_ttl ? dur(b->token_ttl, y, sizeof(y)) : "default");
        f_str(d, o, "role", role);
        f_secs_or_null(d, o, "from", a->token_ttl);
        f_secs_or_null(d, o, "to", b->token_ttl);
    }
    diff_fallback(d, role, a, b);
    diff_grant_health(d, role, a, b);
}

static void diff_role(diff_t *d, const sg_policy_role_t *a, const sg_policy_role_t *b)
{
    const char *role = b->name;
    char x[32], y[32];
    diff_offline(d, role, a->offline, b->offline);
    if (a->idle != b->idle) {
        cJSON *o = emit(d, "session_idle_changed", "role '%s': session idle %s -> %s", role,
                        dur(a->idle, x, sizeof(x)), dur(b->idle, y, sizeof(y)));
        f_str(d, o, "role", role);
        f_num(d, o, "from", (double)a->idle);
        f_num(d, o, "to", (double)b->idle);
    }
    if (a->max != b->max) {
        cJSON *o = emit(d, "session_max_changed", "role '%s': session max %s -> %s", role,
                        dur(a->max, x, sizeof(x)), dur(b->max, y, sizeof(y)));
        f_str(d, o, "role", role);
        f_num(d, o, "from", (double)a->max);
        f_num(d, o, "to", (double)b->max);
    }
    if (!a->can_view_policy != !b->can_view_policy) {
        cJSON *o = emit(d, "can_view_policy_changed", "role '%s': can view the policy %s -> %s",
                        role, yes_no(a->can_view_policy), yes_no(b->can_view_policy));
        f_str(d, o, "role", role);
        f_bool(d, o, "from", a->can_view_policy);
        f_bool(d, o, "to", b->can_view_policy);
    }
    if (!a->can_end_sessions != !b->can_end_sessions) {
        cJSON *o = emit(d, "can_end_sessions_changed",
                        "role '%s': can end other people's sessions %s -> %s", role,
                        yes_no(a->can_end_sessions), yes_no(b->can_end_sessions));
        f_str(d, o, "role", role);
        f_bool(d, o, "from", a->can_end_sessions);
        f_bool(d, o, "to", b->can_end_sessions);
    }
}

static void role_added(diff_t *d, const sg_policy_role_t *r)
{
    const sg_policy_offline_t *off = r->offline;
    char *list = off ? join(off->scopes, off->nscopes) : NULL;
    if (off && !list) {
        d->nomem = 1;
        return;
    }
    cJSON *o = off ? emit(d, "role_added", "role '%s' added, with offline access: app '%s', %s",
                          r->name, nz(off->app), list)
                   : emit(d, "role_added", "role '%s' added", r->name);
    free(list);
    f_str(d, o, "role", r->name);
    if (!o)
        return;
    if (!off) {
        f_str(d, o, "offline", NULL);
        return;
    }
    cJSON *oo = cJSON_AddObjectToObject(o, "offline");
    if (!oo)
        d->nomem = 1;
    f_str(d, oo, "app", off->app);
    f_missing(d, oo, "scopes", off->scopes, off->nscopes, NULL, 0);
}

static void diff_roles(diff_t *d, const sg_policy_t *a, const sg_policy_t *b)
{
    for (size_t i = 0; i < a->nroles; i++)
        if (!sg_policy_role(b, a->roles[i].name))
            f_str(d, emit(d, "role_removed", "role '%s' removed", a->roles[i].name), "role",
                  a->roles[i].name);
    for (size_t i = 0; i < b->nroles; i++) {
        const sg_policy_role_t *was = sg_policy_role(a, b->roles[i].name);
        if (was)
            diff_role(d, was, &b->roles[i]);
        else
            role_added(d, &b->roles[i]);
    }
}

/* ---- rules -------------------------------------------------------------------------- */

static const char *role_of(const sg_policy_rule_t *r)
{
    return r->role ? r->role->name : "?";
}

/* Same role, same claim, same test: only the values may differ. */
static int same_test(const sg_policy_rule_t *a, const sg_policy_rule_t *b)
{
    return strcmp(role_of(a), role_of(b)) == 0 && a->kind == b->kind &&
           same_str(a->claim, b->claim);
}

static int same_rule(const sg_policy_rule_t *a, const sg_policy_rule_t *b)
{
    if (!same_test(a, b))
        return 0;
    for (size_t i = 0; i < a->nvalues; i++)
        if (!in_list(a->values[i], b->values, b->nvalues))
            return 0;
    for (size_t i = 0; i < b->nvalues; i++)
        if (!in_list(b->values[i], a->values, a->nvalues))
            return 0;
    return 1;
}

/* "admin if groups contains [gateway-admins]", "user by default": what the rule decides. */
#define RULE_FMT     "%s %s%s"
#define RULE_ARGS(r) role_of(r), (r)->kind == SG_RULE_DEFAULT ? "by " : "if ", nz((r)->text)

static void rule_fields(diff_t *d, cJSON *o, const sg_policy_rule_t *r)
{
    f_str(d, o, "role", role_of(r));
    f_str(d, o, "rule", r->text);
}

/* A Fenwick tree of prefix maxima over positions 1..n (t has n + 1 slots, zeroed). */
static long long fw_max(const long long *t, size_t i)
{
    long long m = 0;
    for (; i > 0; i -= i & -i)
        if (t[i] > m)
            m = t[i];
    return m;
}

static void fw_raise(long long *t, size_t n, size_t i, long long v)
{
    for (; i <= n; i += i & -i)
        if (t[i] < v)
            t[i] = v;
}

/*
 * Marks in keep the matched rules that stay in order; the others are reported as moved. Kept:
 * the longest run of rules whose positions in new increase along old; among runs as long,
 * the one keeping most rules at their very position, then the one keeping earlier rules of
 * old (so in a swap the rule pulled up is the one reported as moved, not every rule it
 * passed). seq[k] is the position in new of the k-th matched rule of old, at[k] its position
 * in old, nb the number of rules in new. -1 when out of memory.
 */
static int keep_order(const size_t *seq, const size_t *at, size_t n, size_t nb, unsigned char *keep)
{
    long long *best = calloc(n ? n : 1, sizeof(*best)), *tree = calloc(nb + 1, sizeof(*tree));
    if (!best || !tree) {
        free(best);
        free(tree);
        return -1;
    }
    /* A kept rule is worth one run length (w) and one more if it did not move at all, so
     * length always counts first. best[k]: the best run starting at k, found from the right,
     * with the tree indexed by nb - position so that a prefix is "later in new". */
    const long long w = (long long)n + 1;
    long long total = 0;
    for (size_t k = n; k-- > 0;) {
        size_t r = nb - seq[k];
        best[k] = w + (seq[k] == at[k]) + fw_max(tree, r - 1);
        fw_raise(tree, nb, r, best[k]);
        if (best[k] > total)
            total = best[k];
    }
    /* Forward, the first rule that can still complete the best run is kept. */
    size_t last = 0;
    int any = 0;
    for (size_t k = 0; k < n && total > 0; k++) {
        if (best[k] != total || (any && seq[k] <= last))
            continue;
        keep[k] = 1;
        total -= w + (seq[k] == at[k]);
        last = seq[k];
        any = 1;
    }
    free(best);
    free(tree);
    return 0;
}

static void rule_changed(diff_t *d, const sg_policy_rule_t *a, size_t ia, const sg_policy_rule_t *b,
                         size_t ib)
{
    size_t nadd = 0, ndel = 0;
    char *add = join_missing(b->values, b->nvalues, a->values, a->nvalues, &nadd);
    char *del = join_missing(a->values, a->nvalues, b->values, b->nvalues, &ndel);
    char where[64] = "";
    if (ia != ib)
        snprintf(where, sizeof(where), ", now rule %zu", ib + 1);
    cJSON *o = NULL;
    if (!add || !del)
        d->nomem = 1;
    else
        o = emit(d, "rule_changed", "rule %zu (" RULE_FMT ")%s: values%s%s%s%s%s", ia + 1,
                 RULE_ARGS(a), where, nadd ? " added: " : "", add, nadd && ndel ? ";" : "",
                 ndel ? " removed: " : "", del);
    free(add);
    free(del);
    f_num(d, o, "from", (double)(ia + 1));
    f_num(d, o, "to", (double)(ib + 1));
    rule_fields(d, o, a);
    f_str(d, o, "new_rule", b->text);
    f_missing(d, o, "values_added", b->values, b->nvalues, a->values, a->nvalues);
    f_missing(d, o, "values_removed", a->values, a->nvalues, b->values, b->nvalues);
}

static size_t first_default(const sg_policy_t *p)
{
    for (size_t i = 0; i < p->nrules; i++)
        if (p->rules[i].kind == SG_RULE_DEFAULT)
            return i;
    return SIZE_MAX;
}

#define NONE SIZE_MAX

/* old_to[i]: the rule of b that rule i of a is (NONE: removed); new_from the other way. */
static void match_rules(const sg_policy_t *a, const sg_policy_t *b, size_t *old_to,
                        size_t *new_from)
{
    for (size_t i = 0; i < a->nrules; i++)
        old_to[i] = NONE;
    for (size_t j = 0; j < b->nrules; j++) {
        new_from[j] = NONE;
        /* The first rule of a not yet taken: duplicates pair up in order. */
        for (size_t i = 0; i < a->nrules; i++) {
            if (old_to[i] == NONE && same_rule(&a->rules[i], &b->rules[j])) {
                old_to[i] = j;
                new_from[j] = i;
                break;
            }
        }
    }
}

static void report_moves(diff_t *d, const sg_policy_t *a, const sg_policy_t *b,
                         const size_t *old_to)
{
    size_t n = 0;
    for (size_t i = 0; i < a->nrules; i++)
        n += old_to[i] != NONE;
    if (n == 0)
        return;
    size_t *seq = calloc(n, sizeof(*seq)), *from = calloc(n, sizeof(*from));
    unsigned char *keep = calloc(n, 1);
    if (!seq || !from || !keep || d->nomem)
        goto done;
    n = 0;
    for (size_t i = 0; i < a->nrules; i++) {
        if (old_to[i] == NONE)
            continue;
        from[n] = i;
        seq[n++] = old_to[i];
    }
    if (keep_order(seq, from, n, b->nrules, keep) != 0)
        goto done;
    for (size_t k = 0; k < n; k++) {
        if (keep[k])
            continue;
        const sg_policy_rule_t *r = &a->rules[from[k]];
        cJSON *o = emit(d, "rule_moved", "rule %zu (" RULE_FMT ") moved to position %zu",
                        from[k] + 1, RULE_ARGS(r), seq[k] + 1);
        f_num(d, o, "from", (double)(from[k] + 1));
        f_num(d, o, "to", (double)(seq[k] + 1));
        rule_fields(d, o, r);
    }
    free(seq);
    free(from);
    free(keep);
    return;
done:
    d->nomem = 1;
    free(seq);
    free(from);
    free(keep);
}

static void diff_rules(diff_t *d, const sg_policy_t *a, const sg_policy_t *b)
{
    size_t *old_to = calloc(a->nrules ? a->nrules : 1, sizeof(*old_to));
    size_t *new_from = calloc(b->nrules ? b->nrules : 1, sizeof(*new_from));
    /* Pairs of unmatched rules reported as one change: changed values, or the default. */
    size_t *changed_to = calloc(a->nrules ? a->nrules : 1, sizeof(*changed_to));
    size_t *changed_from = calloc(b->nrules ? b->nrules : 1, sizeof(*changed_from));
    if (!old_to || !new_from || !changed_to || !changed_from) {
        d->nomem = 1;
        goto done;
    }
    match_rules(a, b, old_to, new_from);
    for (size_t i = 0; i < a->nrules; i++)
        changed_to[i] = NONE;
    for (size_t j = 0; j < b->nrules; j++)
        changed_from[j] = NONE;

    size_t da = first_default(a), db = first_default(b);
    int default_changed = da != NONE && db != NONE && old_to[da] == NONE && new_from[db] == NONE;
    if (default_changed) {
        changed_to[da] = db;
        changed_from[db] = da;
    }
    for (size_t i = 0; i < a->nrules; i++) {
        if (old_to[i] != NONE || changed_to[i] != NONE || a->rules[i].kind == SG_RULE_DEFAULT)
            continue;
        for (size_t j = 0; j < b->nrules; j++) {
            if (new_from[j] == NONE && changed_from[j] == NONE &&
                same_test(&a->rules[i], &b->rules[j])) {
                changed_to[i] = j;
                changed_from[j] = i;
                break;
            }
        }
    }

    for (size_t i = 0; i < a->nrules; i++) {
        if (old_to[i] != NONE || changed_to[i] != NONE)
            continue;
        const sg_policy_rule_t *r = &a->rules[i];
        cJSON *o = emit(d, "rule_removed", "rule %zu (" RULE_FMT ") removed", i + 1, RULE_ARGS(r));
        f_num(d, o, "position", (double)(i + 1));
        rule_fields(d, o, r);
    }
    for (size_t j = 0; j < b->nrules; j++) {
        if (new_from[j] != NONE || changed_from[j] != NONE)
            continue;
        const sg_policy_rule_t *r = &b->rules[j];
        cJSON *o = emit(d, "rule_added", "rule %zu (" RULE_FMT ") added", j + 1, RULE_ARGS(r));
        f_num(d, o, "position", (double)(j + 1));
        rule_fields(d, o, r);
    }
    for (size_t i = 0; i < a->nrules; i++)
        if (changed_to[i] != NONE && i != da)
            rule_changed(d, &a->rules[i], i, &b->rules[changed_to[i]], changed_to[i]);
    report_moves(d, a, b, old_to);
    if (default_changed) {
        cJSON *o = emit(d, "default_rule_changed", "default rule: role '%s' -> '%s'",
                        role_of(&a->rules[da]), role_of(&b->rules[db]));
        f_str(d, o, "from", role_of(&a->rules[da]));
        f_str(d, o, "to", role_of(&b->rules[db]));
    }
done:
    free(old_to);
    free(new_from);
    free(changed_to);
    free(changed_from);
}

sg_rc sg_policy_diff(const sg_policy_t *old, const sg_policy_t *new, cJSON **out)
{
    *out = NULL;
    diff_t d = {.list = cJSON_CreateArray()};
    if (!d.list)
        return SG_ERR_NOMEM;
    diff_signin(&d, &old->signin, &new->signin);
    diff_roles(&d, old, new);
    diff_rules(&d, old, new);
    if (d.nomem) {
        cJSON_Delete(d.list);
        return SG_ERR_NOMEM;
    }
    *out = d.list;
    return SG_OK;
}
