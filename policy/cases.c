/*
 * Cases for `scopegate policy test`: a libconfig file of people (their claims) and what the
 * policy must give each of them. It is read as the policy is, every problem with its line,
 * and each case is run through the resolution the gateway uses at sign-in, so a case that
 * passes here is what the gateway will do.
 */
#include "policy_int.h"

#include "scopegate/buf.h"
#include "scopegate/duration.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR SG_DIAG_ERROR

struct sg_policy_cases {
    sg_policy_t *mem; /* only its arena is used: the cases' strings and lists */
    sg_policy_case_t *items;
    cJSON **claims; /* items[i].claims, owned here */
    size_t n;
};

static const char *const root_keys[] = {"cases", NULL};
static const char *const case_keys[] = {"name",   "claims",  "expect", "expected",
                                        "scopes", "session", NULL};
static const char *const session_keys[] = {"idle", "max", NULL};

static int line_of(const config_setting_t *s)
{
    int line = (int)config_setting_source_line(s);
    return line > 0 ? line : 1;
}

/* A string member copied into the cases' memory; NULL when absent or wrong (reported). */
static const char *get_string(sg_policy_ctx_t *c, const config_setting_t *group, const char *key,
                              int required)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s) {
        if (required)
            sg_policy_diag(c, line_of(group), ERR, "the case has no '%s'", key);
        return NULL;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        sg_policy_diag(c, line_of(s), ERR, "'%s' must be a string, not %s", key,
                       sg_policy_type_name(s));
        return NULL;
    }
    char *copy = sg_policy_strdup(c->p, config_setting_get_string(s));
    if (!copy)
        c->nomem = 1;
    return copy;
}

/* A libconfig value as JSON: groups become objects, arrays and lists arrays. NULL when out of
 * memory. */
static cJSON *to_json(sg_policy_ctx_t *c, const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return cJSON_CreateNumber((double)config_setting_get_int64(s));
    case CONFIG_TYPE_FLOAT:
        return cJSON_CreateNumber(config_setting_get_float(s));
    case CONFIG_TYPE_STRING:
        return cJSON_CreateString(config_setting_get_string(s));
    case CONFIG_TYPE_BOOL:
        return cJSON_CreateBool(config_setting_get_bool(s));
    case CONFIG_TYPE_GROUP:
    case CONFIG_TYPE_ARRAY:
    case CONFIG_TYPE_LIST:
        break;
    default:
        return cJSON_CreateNull();
    }
    int group = config_setting_is_group(s);
    cJSON *o = group ? cJSON_CreateObject() : cJSON_CreateArray();
    if (!o)
        return NULL;
    /* A claim's list with a forgotten comma would hold one joined value nobody has. */
    if (!group && config_setting_name(s))
        sg_policy_check_commas(c, s, config_setting_name(s));
    int n = config_setting_length(s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        cJSON *v = to_json(c, e);
        if (!v || !(group ? cJSON_AddItemToObject(o, config_setting_name(e), v)
                          : cJSON_AddItemToArray(o, v))) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

/* claims = { ... } or claims = "{...}" (JSON, for names libconfig cannot write); NULL when
 * missing or wrong (reported) or out of memory (c->nomem). */
static cJSON *get_claims(sg_policy_ctx_t *c, const config_setting_t *kase)
{
    const config_setting_t *s = config_setting_get_member(kase, "claims");
    if (!s) {
        sg_policy_diag(c, line_of(kase), ERR,
                       "the case has no 'claims' (write claims = { preferred_username = "
                       "\"alice@acme.example\"; }; or claims = {}; for none)");
        return NULL;
    }
    cJSON *claims = NULL;
    if (config_setting_is_group(s)) {
        claims = to_json(c, s);
        if (!claims)
            c->nomem = 1;
        return claims;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'claims' must be a group such as { groups = [\"admins\"]; } or a string "
                       "holding a JSON object, not %s",
                       sg_policy_type_name(s));
        return NULL;
    }
    const char *text = config_setting_get_string(s), *end = NULL;
    claims = cJSON_ParseWithOpts(text, &end, 1);
    if (!claims) {
        sg_policy_diag(c, line_of(s), ERR, "'claims' is not valid JSON (at byte %zu)",
                       end ? (size_t)(end - text) : 0);
        return NULL;
    }
    if (!cJSON_IsObject(claims)) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'claims' must hold a JSON object such as {\"groups\": [\"admins\"]}");
        cJSON_Delete(claims);
        return NULL;
    }
    return claims;
}

static const char *roles_text(const sg_policy_t *p, const char *name, char *hint, size_t hintlen,
                              sg_names_t *names)
{
    sg_suggest_t sug;
    sg_suggest_init(&sug, name);
    sg_names_init(names);
    size_t n = 0;
    const sg_policy_role_t *roles = sg_policy_roles(p, &n);
    for (size_t i = 0; i < n; i++) {
        sg_suggest_try(&sug, roles[i].name);
        sg_names_add(names, roles[i].name);
    }
    return sg_suggest_hint(&sug, hint, hintlen);
}

/* Means "no rule matches" rather than a role: the word, unless the policy has such a role. */
static int means_denied(const sg_policy_t *p, const char *expect)
{
    return strcmp(expect, SG_POLICY_DENIED) == 0 && !(p && sg_policy_role(p, expect));
}

static void get_expect(sg_policy_ctx_t *c, const sg_policy_t *policy, const config_setting_t *kase,
                       sg_policy_case_t *k)
{
    /* "expected" reads as naturally as "expect": either, not both. */
    const char *key = config_setting_get_member(kase, "expected") ? "expected" : "expect";
    if (config_setting_get_member(kase, "expect") && config_setting_get_member(kase, "expected")) {
        sg_policy_diag(c, line_of(config_setting_get_member(kase, "expected")), ERR,
                       "a case says 'expect' or 'expected', not both");
        return;
    }
    k->expect = get_string(c, kase, key, 1);
    if (!k->expect || !policy || means_denied(policy, k->expect) ||
        sg_policy_role(policy, k->expect))
        return;
    char hint[96];
    sg_names_t names;
    const char *h = roles_text(policy, k->expect, hint, sizeof(hint), &names);
    sg_policy_diag(c, line_of(config_setting_get_member(kase, key)), ERR,
                   "unknown role '%s'%s: the policy's roles are %s (or \"%s\": no rule matches)",
                   k->expect, h, names.text, SG_POLICY_DENIED);
}

/* scopes = [...]: the offline scopes the role must get; [] for none. */
static void get_scopes(sg_policy_ctx_t *c, const config_setting_t *kase, sg_policy_case_t *k)
{
    const config_setting_t *s = config_setting_get_member(kase, "scopes");
    if (!s)
        return;
    int type = config_setting_type(s);
    if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'scopes' must be a list of strings such as [\"api\", \"refresh_token\"] "
                       "([] for none), not %s",
                       sg_policy_type_name(s));
        return;
    }
    if (sg_policy_check_commas(c, s, "scopes") > 0)
        return;
    int n = config_setting_length(s);
    const char **v = sg_policy_alloc(c->p, (size_t)(n ? n : 1) * sizeof(*v));
    if (!v) {
        c->nomem = 1;
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            sg_policy_diag(c, line_of(e), ERR, "'scopes' must hold only strings, not %s",
                           sg_policy_type_name(e));
            return;
        }
        v[i] = sg_policy_strdup(c->p, config_setting_get_string(e));
        if (!v[i]) {
            c->nomem = 1;
            return;
        }
    }
    k->check_scopes = 1;
    k->scopes = v;
    k->nscopes = (size_t)n;
}

/* A positive duration ("15m" or seconds); 0 when absent or wrong (reported). */
static long long get_duration(sg_policy_ctx_t *c, const config_setting_t *group, const char *key)
{
    const config_setting_t *s = config_setting_get_member(group, key);
    if (!s)
        return 0;
    long long v = -1;
    if (config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64)
        v = config_setting_get_int64(s);
    else if (config_setting_type(s) == CONFIG_TYPE_STRING &&
             sg_duration_parse(config_setting_get_string(s), &v) != SG_OK)
        v = -1;
    if (v <= 0) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'%s' must be a duration such as \"15m\" or \"8h\" (above zero)", key);
        return 0;
    }
    return v;
}

static void get_session(sg_policy_ctx_t *c, const config_setting_t *kase, sg_policy_case_t *k)
{
    const config_setting_t *s = config_setting_get_member(kase, "session");
    if (!s)
        return;
    if (!config_setting_is_group(s)) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'session' must be a group such as session = { idle = \"15m\"; max = "
                       "\"4h\"; }, not %s",
                       sg_policy_type_name(s));
        return;
    }
    sg_policy_check_keys(c, s, session_keys, "a case's session");
    k->idle = get_duration(c, s, "idle");
    k->max = get_duration(c, s, "max");
}

static void parse_case(sg_policy_ctx_t *c, const sg_policy_t *policy, const config_setting_t *s,
                       sg_policy_case_t *k, cJSON **claims)
{
    k->line = line_of(s);
    if (!config_setting_is_group(s)) {
        sg_policy_diag(c, k->line, ERR,
                       "each case must be a group such as { claims = { groups = [\"admins\"]; }; "
                       "expect = \"admin\"; }, not %s",
                       sg_policy_type_name(s));
        return;
    }
    sg_policy_check_keys(c, s, case_keys, "a case");
    k->name = get_string(c, s, "name", 0);
    *claims = get_claims(c, s);
    k->claims = *claims;
    get_expect(c, policy, s, k);
    get_scopes(c, s, k);
    get_session(c, s, k);
    if (k->expect && means_denied(policy, k->expect) &&
        (config_setting_get_member(s, "scopes") || config_setting_get_member(s, "session")))
        sg_policy_diag(c, k->line, ERR,
                       "a case that expects \"%s\" has no role whose scopes or session to check",
                       SG_POLICY_DENIED);
}

static void parse_cases(sg_policy_ctx_t *c, const sg_policy_t *policy, const config_setting_t *root,
                        sg_policy_cases_t *cs)
{
    sg_policy_check_keys(c, root, root_keys, "the cases file");
    const config_setting_t *s = config_setting_get_member(root, "cases");
    if (!s) {
        sg_policy_diag(c, 1, ERR,
                       "missing 'cases = ( { claims = { ... }; expect = \"user\"; } );'");
        return;
    }
    int type = config_setting_type(s);
    int n = config_setting_length(s);
    if (type != CONFIG_TYPE_LIST && !(type == CONFIG_TYPE_ARRAY && n == 0)) {
        sg_policy_diag(c, line_of(s), ERR,
                       "'cases' must be a list of cases: cases = ( { ... }, { ... } ); not %s",
                       sg_policy_type_name(s));
        return;
    }
    if (n == 0) {
        sg_policy_diag(c, line_of(s), ERR, "'cases' is empty: write at least one case");
        return;
    }
    cs->items = sg_policy_alloc(c->p, (size_t)n * sizeof(*cs->items));
    cs->claims = calloc((size_t)n, sizeof(*cs->claims));
    if (!cs->items || !cs->claims) {
        c->nomem = 1;
        return;
    }
    cs->n = (size_t)n;
    for (int i = 0; i < n && !c->nomem; i++)
        parse_case(c, policy, config_setting_get_elem(s, (unsigned)i), &cs->items[i],
                   &cs->claims[i]);
}

/* The file's bytes into b, NUL-terminated; -1 when it cannot be used (reported). */
static int read_file(sg_policy_ctx_t *c, const char *path, sg_buf_t *b)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        sg_policy_diag(c, 0, ERR, "cannot open: %s", strerror(errno));
        return -1;
    }
    sg_rc rc = sg_buf_add_file(b, f);
    int err = errno;
    fclose(f);
    if (rc == SG_ERR_TOO_BIG)
        sg_policy_diag(c, 0, ERR, "the file is larger than %d bytes", SG_POLICY_MAX_BYTES);
    else if (rc == SG_ERR_IO)
        sg_policy_diag(c, 0, ERR, "cannot read: %s", strerror(err));
    else if (rc)
        c->nomem = 1;
    else if (b->ptr && memchr(b->ptr, '\0', b->len))
        /* libconfig would stop reading there and miss every case after it. */
        sg_policy_diag(c, 1, ERR, "the file contains a NUL byte");
    else
        return 0;
    return -1;
}

sg_rc sg_policy_cases_load(const char *path, const sg_policy_t *policy, sg_policy_cases_t **out,
                           sg_diags_t *diags)
{
    *out = NULL;
    sg_diags_t local;
    sg_diags_init(&local);
    sg_diags_t *d = diags ? diags : &local;
    size_t errors_before = d->errors;
    sg_policy_cases_t *cs = calloc(1, sizeof(*cs));
    sg_policy_t *mem = calloc(1, sizeof(*mem));
    if (!cs || !mem) {
        free(cs);
        free(mem);
        return SG_ERR_NOMEM;
    }
    cs->mem = mem;
    sg_policy_ctx_t c = {.p = mem, .d = d, .file = path};
    sg_buf_t b;
    sg_buf_init(&b, SG_POLICY_MAX_BYTES);
    int io = read_file(&c, path, &b);
    if (io == 0) {
        c.text = b.ptr ? b.ptr : ""; /* an empty file has no buffer */
        c.len = b.len;
        config_t cf;
        config_init(&cf);
        if (!config_read_string(&cf, c.text))
            sg_policy_diag(&c, config_error_line(&cf), ERR, "%s", config_error_text(&cf));
        else
            parse_cases(&c, policy, config_root_setting(&cf), cs);
        config_destroy(&cf);
    }
    sg_buf_free(&b);
    sg_diags_sort(d);
    sg_rc rc = SG_OK;
    if (c.nomem)
        rc = SG_ERR_NOMEM;
    else if (d->errors > errors_before)
        rc = io ? SG_ERR_IO : SG_ERR_CONFIG;
    if (rc == SG_OK)
        *out = cs;
    else
        sg_policy_cases_free(cs);
    sg_diags_free(&local);
    return rc;
}

void sg_policy_cases_free(sg_policy_cases_t *cs)
{
    if (!cs)
        return;
    for (size_t i = 0; cs->claims && i < cs->n; i++)
        cJSON_Delete(cs->claims[i]);
    free(cs->claims);
    sg_policy_free(cs->mem);
    free(cs);
}

const sg_policy_case_t *sg_policy_cases(const sg_policy_cases_t *cs, size_t *n)
{
    *n = cs->n;
    return cs->items;
}

/* ---- running a case ----------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static int fail(sg_policy_case_result_t *r, const char *fmt,
                                                      ...)
{
    char **f = realloc(r->failures, (r->nfailures + 1) * sizeof(*f));
    if (!f)
        return -1;
    r->failures = f;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&f[r->nfailures], fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    r->nfailures++;
    return 0;
}

static int holds(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return 1;
    return 0;
}

/* The same scopes, in any order. */
static int same_scopes(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (!holds(b, nb, a[i]) || !holds(a, na, b[i]))
            return 0;
    return 1;
}

/* "api refresh_token", or "none". */
static char *scopes_text(const char *const *scopes, size_t n)
{
    sg_buf_t b;
    sg_buf_init(&b, SG_POLICY_MAX_BYTES);
    sg_rc rc = n ? SG_OK : sg_buf_adds(&b, "none");
    for (size_t i = 0; i < n && !rc; i++)
        rc = sg_buf_printf(&b, "%s%s", i ? " " : "", scopes[i]);
    char *s = rc || !b.ptr ? NULL : strdup(b.ptr);
    sg_buf_free(&b);
    return s;
}

static int check_scopes(const sg_policy_role_t *role, const sg_policy_case_t *k,
                        sg_policy_case_result_t *r)
{
    const sg_policy_offline_t *off = role->offline;
    const char *const *got = off ? off->scopes : NULL;
    size_t ngot = off ? off->nscopes : 0;
    if (!k->check_scopes || same_scopes(k->scopes, k->nscopes, got, ngot))
        return 0;
    char *want_s = scopes_text(k->scopes, k->nscopes), *got_s = scopes_text(got, ngot);
    int rc =
        want_s && got_s ? fail(r, "%s: expected scopes %s, got %s", role->name, want_s, got_s) : -1;
    free(want_s);
    free(got_s);
    return rc;
}

static int check_lifetime(const sg_policy_role_t *role, const char *what, long long want,
                          long long got, sg_policy_case_result_t *r)
{
    if (!want || want == got)
        return 0;
    char a[32], b[32];
    return fail(r, "%s: expected session %s %s, got %s", role->name, what,
                sg_duration_format(want, a, sizeof(a)), sg_duration_format(got, b, sizeof(b)));
}

sg_rc sg_policy_case_run(const sg_policy_t *p, const sg_policy_case_t *k,
                         sg_policy_case_result_t *out)
{
    memset(out, 0, sizeof(*out));
    sg_policy_result_t res;
    int found = sg_policy_resolve(p, k->claims, &res) == SG_OK;
    if (found) {
        out->role = res.role;
        out->rule = res.rule;
        out->rule_index = res.rule_index;
    }
    int rc = 0;
    if (means_denied(p, k->expect)) {
        if (found)
            rc = fail(out, "expected %s, got %s (rule %zu at %s:%d matched first)", k->expect,
                      res.role->name, res.rule_index + 1, p->source, res.rule->line);
    } else if (!found) {
        rc = fail(out, "expected %s, got %s (no rule matches)", k->expect, SG_POLICY_DENIED);
    } else if (strcmp(res.role->name, k->expect) != 0) {
        rc = fail(out, "expected %s, got %s (rule %zu at %s:%d matched first)", k->expect,
                  res.role->name, res.rule_index + 1, p->source, res.rule->line);
    } else {
        rc = check_scopes(res.role, k, out);
        if (!rc)
            rc = check_lifetime(res.role, "idle", k->idle, res.role->idle, out);
        if (!rc)
            rc = check_lifetime(res.role, "max", k->max, res.role->max, out);
    }
    if (rc) {
        sg_policy_case_result_free(out);
        return SG_ERR_NOMEM;
    }
    out->passed = out->nfailures == 0;
    return SG_OK;
}

void sg_policy_case_result_free(sg_policy_case_result_t *r)
{
    for (size_t i = 0; i < r->nfailures; i++)
        free(r->failures[i]);
    free(r->failures);
    r->failures = NULL;
    r->nfailures = 0;
}
