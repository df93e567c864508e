/*
 * `scopegate policy check`, `explain`, `diff` (and `test`, in cli_policy_test.c): the policy
 * engine for the people who own the policy. Exit status 0 for success, 1 when the policy or
 * the claims are bad, 2 for a usage error.
 */
#include "cli.h"

#include "scopegate/buf.h"
#include "scopegate/config.h"
#include "scopegate/duration.h"
#include "scopegate/policy.h"
#include "scopegate/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CLAIMS_MAX_BYTES (1024 * 1024)

int sg_cli_policy_usage(FILE *out)
{
    fprintf(out,
            "usage: scopegate policy check FILE [--strict] [--config DEPLOYMENT] [--json]\n"
            "       scopegate policy explain FILE (--claims JSON | --claims-file PATH)\n"
            "                                     [--text | --json]\n"
            "       scopegate policy test POLICY CASES [--config DEPLOYMENT] [--json]\n"
            "       scopegate policy diff OLD NEW [--config FILE] [--json]\n"
            "\n"
            "  check    report each problem of the policy as FILE:LINE: error|warning: ..., then\n"
            "           \"FILE: ok, N roles, N rules\" when it is usable; exit 0 when there is no\n"
            "           error (warnings allowed), 1 otherwise. --strict: warnings count as\n"
            "           errors. --config: app names must be apps of the deployment config\n"
            "  explain  the role these claims get, the rule that matched (rules are numbered\n"
            "           from 1) and why each rule before it did not (--claims-file - reads\n"
            "           standard input); as text on a terminal, JSON otherwise (--text, --json)\n"
            "  test     run every case of the CASES file (claims, and the role, offline scopes\n"
            "           and session lifetimes they must get) against POLICY: each failure as\n"
            "           CASES:LINE: ..., then \"N cases, N passed, N failed\"; exit 0 when all\n"
            "           pass, 1 when one fails or a file is bad\n"
            "  diff     what changes from OLD to NEW, one sentence a line (\"no changes\" when\n"
            "           none); with --config, also which current sessions change role or\n"
            "           lifetimes and which stored grants lose their role's offline access (the\n"
            "           database is only read; the gateway may be running). With --config, OLD\n"
            "           may be left out: the config's policy_file. Exit 0 when compared, 1 when\n"
            "           a file is bad\n");
    return out == stderr ? 2 : 0;
}

static int usage(FILE *out)
{
    return sg_cli_policy_usage(out);
}

#define usage_error(...) sg_cli_usage_error(usage, __VA_ARGS__)

/* ---- the deployment config ------------------------------------------------------------ */

int sg_cli_deployment_load(const char *path, sg_cli_deployment_t *dep)
{
    char err[4096];
    memset(dep, 0, sizeof(*dep));
    if (sg_config_load(path, &dep->cfg, err, sizeof(err)) != SG_OK) {
        size_t len = strlen(err);
        fprintf(stderr, "%s%s", err, len && err[len - 1] == '\n' ? "" : "\n");
        return -1;
    }
    dep->apps = calloc(dep->cfg.napps + 1, sizeof(*dep->apps));
    if (!dep->apps || asprintf(&dep->db, "%s/scopegate.db", dep->cfg.state_dir) < 0) {
        dep->db = NULL;
        fprintf(stderr, "scopegate: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < dep->cfg.napps; i++)
        dep->apps[i] = dep->cfg.apps[i].name;
    return 0;
}

void sg_cli_deployment_free(sg_cli_deployment_t *dep)
{
    free(dep->apps);
    free(dep->db);
    sg_config_free(&dep->cfg);
    dep->apps = NULL;
    dep->db = NULL;
}

/* ---- check -------------------------------------------------------------------------- */

/* With --strict a warning is an error: printed as one, and marked so that whoever reads it
 * without the option knows why. */
static void print_diags(const sg_diags_t *d, int strict)
{
    for (size_t i = 0; i < d->n; i++) {
        const sg_diag_t *g = &d->item[i];
        int promoted = strict && g->severity == SG_DIAG_WARNING;
        const char *sev = sg_diag_severity_str(promoted ? SG_DIAG_ERROR : g->severity);
        if (g->line > 0)
            printf("%s:%d: %s: %s%s\n", g->file, g->line, sev, g->message,
                   promoted ? " [--strict]" : "");
        else
            printf("%s: %s: %s%s\n", g->file, sev, g->message, promoted ? " [--strict]" : "");
    }
}

/*
 * {"file","valid","strict","errors","warnings","roles","rules","diagnostics":[{"line",
 * "severity","message"}]}: roles and rules are counts, null when the file is not a policy.
 */
static int print_check_json(const char *file, int valid, int strict, const sg_diags_t *d,
                            const sg_policy_t *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *list = NULL;
    size_t nroles = 0, nrules = 0;
    if (p) {
        sg_policy_roles(p, &nroles);
        sg_policy_rules(p, &nrules);
    }
    size_t errors = d->errors + (strict ? d->warnings : 0);
    if (!o || !cJSON_AddStringToObject(o, "file", file) ||
        !cJSON_AddBoolToObject(o, "valid", valid) || !cJSON_AddBoolToObject(o, "strict", strict) ||
        !cJSON_AddNumberToObject(o, "errors", (double)errors) ||
        !cJSON_AddNumberToObject(o, "warnings", (double)(d->n - errors)) ||
        !(p ? cJSON_AddNumberToObject(o, "roles", (double)nroles)
            : cJSON_AddNullToObject(o, "roles")) ||
        !(p ? cJSON_AddNumberToObject(o, "rules", (double)nrules)
            : cJSON_AddNullToObject(o, "rules")))
        goto fail;
    list = cJSON_AddArrayToObject(o, "diagnostics");
    if (!list)
        goto fail;
    for (size_t i = 0; i < d->n; i++) {
        sg_diag_severity sev = strict ? SG_DIAG_ERROR : d->item[i].severity;
        cJSON *g = cJSON_CreateObject();
        if (!g || !cJSON_AddItemToArray(list, g)) {
            cJSON_Delete(g);
            goto fail;
        }
        if (!cJSON_AddNumberToObject(g, "line", d->item[i].line) ||
            !cJSON_AddStringToObject(g, "severity", sg_diag_severity_str(sev)) ||
            !cJSON_AddStringToObject(g, "message", d->item[i].message))
            goto fail;
    }
    int rc = sg_cli_print_json(o, 0);
    cJSON_Delete(o);
    return rc;
fail:
    cJSON_Delete(o);
    fprintf(stderr, "scopegate: out of memory\n");
    return -1;
}

static const char *plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* "FILE: ok, 2 roles, 3 rules" (with "ok with 1 warning" when there are some). */
static void print_ok(const char *file, const sg_diags_t *d, const sg_policy_t *p)
{
    size_t nroles = 0, nrules = 0;
    sg_policy_roles(p, &nroles);
    sg_policy_rules(p, &nrules);
    printf("%s: ok", file);
    if (d->warnings)
        printf(" with %zu %s", d->warnings, plural(d->warnings, "warning", "warnings"));
    printf(", %zu %s, %zu %s\n", nroles, plural(nroles, "role", "roles"), nrules,
           plural(nrules, "rule", "rules"));
}

static int check(int argc, char **argv)
{
    const char *file = NULL, *config = NULL;
    int json = 0, strict = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *opt = argv[i];
        if (strcmp(opt, "--json") == 0)
            json = 1;
        else if (strcmp(opt, "--strict") == 0)
            strict = 1;
        else if (strcmp(opt, "--help") == 0)
            return usage(stdout);
        else if (sg_cli_take_option(argc, argv, &i, "--config", &v)) {
            if (!v)
                return usage_error("policy check: %s needs a DEPLOYMENT config file", opt);
            config = v;
        } else if (sg_cli_is_option(opt))
            return usage_error("policy check: unknown option '%s'", opt);
        else if (file)
            return usage_error("policy check: one FILE only ('%s' is a second)", opt);
        else
            file = opt;
    }
    if (!file)
        return usage_error("policy check: which FILE?");

    sg_cli_deployment_t dep;
    if (config && sg_cli_deployment_load(config, &dep) != 0) {
        sg_cli_deployment_free(&dep);
        return 1;
    }
    /* Without a deployment config the apps are not known, and their names are not checked. */
    sg_policy_opts_t opts = {.known_apps = config ? dep.apps : NULL};
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = NULL;
    sg_rc rc = sg_policy_load(file, &opts, &p, &d);
    int valid = rc == SG_OK && !(strict && d.warnings);
    int status = valid ? 0 : 1;
    if (rc == SG_ERR_NOMEM) {
        fprintf(stderr, "scopegate: out of memory\n");
    } else if (json) {
        if (print_check_json(file, valid, strict, &d, p) != 0)
            status = 1;
    } else {
        print_diags(&d, strict);
        if (valid)
            print_ok(file, &d, p);
    }
    sg_diags_free(&d);
    sg_policy_free(p);
    if (config)
        sg_cli_deployment_free(&dep);
    return status;
}

/* The claims object from --claims TEXT or --claims-file PATH ("-": stdin); NULL, said why. */
static cJSON *read_claims(const char *arg, const char *path)
{
    sg_buf_t b;
    sg_buf_init(&b, CLAIMS_MAX_BYTES);
    const char *text = arg, *what = "--claims";
    if (path) {
        what = path;
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "scopegate: %s: %s\n", path, strerror(errno));
            return NULL;
        }
        sg_rc rc = sg_buf_add_file(&b, f);
        int err = errno;
        if (f != stdin)
            fclose(f);
        if (rc) {
            fprintf(stderr, "scopegate: %s: %s\n", path,
                    rc == SG_ERR_TOO_BIG ? "larger than 1 MiB"
                    : rc == SG_ERR_IO    ? strerror(err)
                                         : "out of memory");
            return NULL;
        }
        text = b.ptr ? b.ptr : "";
    }
    size_t len = path ? b.len : strlen(arg);
    const char *end = NULL;
    cJSON *claims = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (claims) {
        while (end < text + len && strchr(" \t\r\n", *end))
            end++;
    }
    if (!claims || end < text + len) {
        fprintf(stderr, "scopegate: %s: not valid JSON (at byte %zu)\n", what,
                end ? (size_t)(end - text) : 0);
        cJSON_Delete(claims);
        claims = NULL;
    } else if (!cJSON_IsObject(claims)) {
        fprintf(stderr,
                "scopegate: %s: the claims must be a JSON object, such as "
                "{\"preferred_username\":\"admin@acme.example\",\"groups\":[\"gateway-admins\"]}\n",
                what);
        cJSON_Delete(claims);
        claims = NULL;
    }
    sg_buf_free(&b);
    return claims;
}

/* ---- explain as text ------------------------------------------------------------------ */

static void print_scopes(const char *const *scopes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? " " : "", scopes[i]);
}

static void print_offline(const sg_policy_offline_t *off)
{
    char d[32];
    if (!off) {
        printf("offline:     none\n");
        return;
    }
    printf("offline:     app %s, scopes ", off->app);
    print_scopes(off->scopes, off->nscopes);
    printf("\n             grant limit %d", off->grant_limit);
    if (off->token_ttl)
        printf(", token ttl %s", sg_duration_format(off->token_ttl, d, sizeof(d)));
    if (off->fallback_same_org)
        printf(", fallback another grant of the same org");
    if (off->fallback_integration)
        printf(", fallback integration %s", off->fallback_integration);
    if (off->refresh_token_policy)
        printf(", refresh token policy %s", off->refresh_token_policy);
    if (off->keep_alive)
        printf(", kept alive");
    printf("\n");
}

/*
 * The explanation for people: the role and what it gets, the rule that gave it, and why each
 * rule before it did not match; for claims no rule matches, why each rule did not. Returns 1
 * when a rule matched, 0 when the person would be denied.
 */
static int print_explain_text(const sg_policy_t *p, const cJSON *claims)
{
    const char *file = sg_policy_source(p);
    size_t nrules = 0;
    const sg_policy_rule_t *rules = sg_policy_rules(p, &nrules);
    sg_policy_result_t res;
    int found = sg_policy_resolve(p, claims, &res) == SG_OK;
    if (found) {
        const sg_policy_role_t *role = res.role;
        const sg_policy_signin_t *si = sg_policy_signin(p);
        char a[32], b[32];
        printf("role:        %s\n", role->name);
        printf("rule:        rule %zu at %s:%d (%s)\n", res.rule_index + 1, file, res.rule->line,
               res.rule->text);
        printf("sign-in:     app %s, scopes ", si->app);
        print_scopes(si->scopes, si->nscopes);
        printf("\n");
        print_offline(role->offline);
        printf("session:     idle %s, max %s\n", sg_duration_format(role->idle, a, sizeof(a)),
               sg_duration_format(role->max, b, sizeof(b)));
        printf("policy page: %s%s\n", role->can_view_policy ? "yes" : "no",
               role->can_end_sessions ? ", may end other people's sessions" : "");
        if (si->signout_provider >= 0)
            printf("sign-out:    %s\n",
                   si->signout_provider ? "also at the provider" : "at the gateway only");
    } else {
        printf("role:        none: denied, no rule matches these claims\n");
    }
    size_t upto = found ? res.rule_index : nrules;
    char why[512];
    for (size_t i = 0; i < upto; i++) {
        sg_policy_rule_why_not(&rules[i], claims, why, sizeof(why));
        printf("%s rule %zu at %s:%d (%s): %s\n", i ? "            " : "not matched:", i + 1, file,
               rules[i].line, rules[i].text, why);
    }
    return found;
}

typedef enum { FORM_AUTO, FORM_TEXT, FORM_JSON } form_t;

static int explain(int argc, char **argv)
{
    const char *file = NULL, *claims_arg = NULL, *claims_path = NULL;
    form_t form = FORM_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *opt = argv[i];
        if (strcmp(opt, "--help") == 0)
            return usage(stdout);
        if (strcmp(opt, "--text") == 0 || strcmp(opt, "--json") == 0) {
            form_t f = opt[2] == 't' ? FORM_TEXT : FORM_JSON;
            if (form != FORM_AUTO && form != f)
                return usage_error("policy explain: --text or --json, not both");
            form = f;
        } else if (sg_cli_take_option(argc, argv, &i, "--claims-file", &v)) {
            if (!v)
                return usage_error("policy explain: %s needs a PATH", opt);
            claims_path = v;
        } else if (sg_cli_take_option(argc, argv, &i, "--claims", &v)) {
            if (!v)
                return usage_error("policy explain: %s needs a JSON object", opt);
            claims_arg = v;
        } else if (sg_cli_is_option(opt)) {
            return usage_error("policy explain: unknown option '%s'", opt);
        } else if (file) {
            return usage_error("policy explain: one FILE only ('%s' is a second)", opt);
        } else {
            file = opt;
        }
    }
    if (!file)
        return usage_error("policy explain: which FILE?");
    if (!claims_arg == !claims_path)
        return usage_error("policy explain: give the claims with one of --claims or --claims-file");
    /* Scripts read the JSON through a pipe or a file; people at a terminal read the text. */
    if (form == FORM_AUTO)
        form = isatty(STDOUT_FILENO) ? FORM_TEXT : FORM_JSON;

    cJSON *claims = read_claims(claims_arg, claims_path);
    if (!claims)
        return 1;
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *policy = NULL;
    sg_rc rc = sg_policy_load(file, NULL, &policy, &d);
    sg_diags_print(&d, stderr); /* warnings too: stdout is only the explanation */
    sg_diags_free(&d);
    cJSON *result = NULL;
    char *text = NULL;
    int status = 1;
    if (rc == SG_ERR_CONFIG) {
        fprintf(stderr, "scopegate: %s: the policy has errors; nothing to explain\n", file);
    } else if (rc == SG_OK && form == FORM_TEXT) {
        status = print_explain_text(policy, claims) ? 0 : 1;
    } else if (rc == SG_OK) {
        rc = sg_policy_explain(policy, claims, &result);
        if (rc == SG_OK)
            text = cJSON_Print(result);
        if (text) {
            printf("%s\n", text);
            status = 0;
        } else if (rc == SG_OK || rc == SG_ERR_NOMEM) {
            fprintf(stderr, "scopegate: out of memory\n");
        } else if (rc == SG_ERR_NOTFOUND) {
            fprintf(stderr, "scopegate: %s: no rule matches these claims\n", file);
        }
    } else if (rc == SG_ERR_NOMEM) {
        fprintf(stderr, "scopegate: out of memory\n");
    }
    cJSON_free(text);
    cJSON_Delete(result);
    sg_policy_free(policy);
    cJSON_Delete(claims);
    return status;
}

/* ---- diff --------------------------------------------------------------------------- */

#define LIST_MAX 20 /* grants named in one line of text; --json lists them all */

/* Loads a policy to compare; every diagnostic goes to stderr. NULL when it is unusable. */
static sg_policy_t *load_quiet(const char *file, const sg_policy_opts_t *opts, int *nomem)
{
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = NULL;
    sg_rc rc = sg_policy_load(file, opts, &p, &d);
    sg_diags_print(&d, stderr);
    size_t said = d.n;
    sg_diags_free(&d);
    if (rc == SG_ERR_NOMEM)
        *nomem = 1;
    else if (rc == SG_ERR_CONFIG)
        fprintf(stderr, "scopegate: %s: the policy has errors; nothing to compare\n", file);
    else if (rc && !said)
        fprintf(stderr, "scopegate: %s: cannot read the file\n", file);
    return p;
}

/* Sessions that change role under the new policy, grouped: from -> to (to NULL: ended). */
typedef struct {
    char *from, *to, *why;
    size_t n;
} shift_t;

/* Sessions that keep going with other lifetimes, grouped by their new role and the change. */
typedef struct {
    char *role;
    long long idle_from, idle_to, max_from, max_to;
    size_t n;
} relife_t;

/* A live grant and what the policies make of its owner. */
typedef struct {
    long long id;
    char *user_id, *username, *app;
    const char *from, *to; /* the owner's role under old and new (policy strings; NULL: none) */
    int known;             /* the store has the owner's claims */
    int was_ok, is_ok;     /* the role has offline access for the grant's app */
} owner_t;

typedef struct {
    const sg_policy_t *old, *new;
    long long now;
    size_t sessions;                              /* current (not expired) sessions looked at */
    size_t role_changed, lifetime_changed, ended; /* of those; one may be in both of the first */
    shift_t *shifts;
    size_t nshifts, shifts_cap;
    relife_t *lifes;
    size_t nlifes, lifes_cap;
    owner_t *grants;
    size_t ngrants, grants_cap;
    int nomem;
} impact_t;

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? 2 * *cap : 8;
    void *p = realloc(*v, ncap * size);
    if (!p)
        return -1;
    *v = p;
    *cap = ncap;
    return 0;
}

static int same_or_null(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

static void add_shift(impact_t *im, const char *from, const char *to, const char *why)
{
    for (size_t i = 0; i < im->nshifts; i++) {
        shift_t *s = &im->shifts[i];
        if (same_or_null(s->from, from) && same_or_null(s->to, to) && same_or_null(s->why, why)) {
            s->n++;
            return;
        }
    }
    if (grow((void **)&im->shifts, &im->shifts_cap, im->nshifts, sizeof(shift_t)) != 0) {
        im->nomem = 1;
        return;
    }
    shift_t *s = &im->shifts[im->nshifts];
    s->from = from ? strdup(from) : NULL;
    s->to = to ? strdup(to) : NULL;
    s->why = why ? strdup(why) : NULL;
    s->n = 1;
    if ((from && !s->from) || (to && !s->to) || (why && !s->why)) {
        free(s->from);
        free(s->to);
        free(s->why);
        im->nomem = 1;
        return;
    }
    im->nshifts++;
}

static void add_lifetimes(impact_t *im, const sg_session_rec_t *rec, const sg_policy_role_t *to)
{
    relife_t want = {.role = (char *)to->name,
                     .idle_from = rec->idle_timeout,
                     .idle_to = to->idle,
                     .max_from = rec->max_lifetime,
                     .max_to = to->max};
    for (size_t i = 0; i < im->nlifes; i++) {
        relife_t *l = &im->lifes[i];
        if (strcmp(l->role, want.role) == 0 && l->idle_from == want.idle_from &&
            l->idle_to == want.idle_to && l->max_from == want.max_from &&
            l->max_to == want.max_to) {
            l->n++;
            return;
        }
    }
    if (grow((void **)&im->lifes, &im->lifes_cap, im->nlifes, sizeof(relife_t)) != 0) {
        im->nomem = 1;
        return;
    }
    want.role = strdup(to->name);
    want.n = 1;
    if (!want.role) {
        im->nomem = 1;
        return;
    }
    im->lifes[im->nlifes++] = want;
}

/*
 * A session's role now (its stored claims under old; its stored role when old gives none)
 * and after a reload, decided as the gateway will decide it (session_role in
 * gateway/web/context.c): the session ends when its stored role is not a role of new, or its
 * stored claims are not JSON, or no rule matches them; otherwise it takes the role they get
 * under new, and that role's lifetimes, which may differ from the ones it was stored with.
 */
static int visit_session(void *ctx, const sg_session_rec_t *rec)
{
    impact_t *im = ctx;
    if (im->now - rec->last_seen > rec->idle_timeout || im->now - rec->created > rec->max_lifetime)
        return 0; /* expired: the gateway drops it anyway */
    im->sessions++;
    cJSON *claims = cJSON_Parse(rec->claims ? rec->claims : "{}");
    sg_policy_result_t a = {0}, b = {0};
    const char *from = rec->role ? rec->role : "no role", *to = NULL, *why = NULL;
    if (claims && sg_policy_resolve(im->old, claims, &a) == SG_OK)
        from = a.role->name;
    if (!rec->role || !sg_policy_role(im->new, rec->role))
        why = "its role is not in the new policy";
    else if (!claims)
        why = "its stored claims are not JSON";
    else if (sg_policy_resolve(im->new, claims, &b) != SG_OK)
        why = "no rule matches";
    else
        to = b.role->name;
    cJSON_Delete(claims);
    if (!to)
        im->ended++;
    else if (strcmp(from, to) != 0)
        im->role_changed++;
    if (!to || strcmp(from, to) != 0)
        add_shift(im, from, to, why);
    if (to && (b.role->idle != rec->idle_timeout || b.role->max != rec->max_lifetime)) {
        im->lifetime_changed++;
        add_lifetimes(im, rec, b.role);
    }
    return im->nomem;
}

static int visit_grant(void *ctx, const sg_grant_rec_t *rec)
{
    impact_t *im = ctx;
    if (grow((void **)&im->grants, &im->grants_cap, im->ngrants, sizeof(owner_t)) != 0) {
        im->nomem = 1;
        return 1;
    }
    owner_t *g = &im->grants[im->ngrants];
    memset(g, 0, sizeof(*g));
    g->id = rec->id;
    g->user_id = strdup(rec->user_id);
    g->username = rec->username ? strdup(rec->username) : NULL;
    g->app = strdup(rec->app);
    im->ngrants++;
    if (!g->user_id || !g->app || (rec->username && !g->username))
        im->nomem = 1;
    return im->nomem;
}

static int offline_for(const sg_policy_result_t *res, int resolved, const char *app)
{
    return resolved && res->role->offline && res->role->offline->app &&
           strcmp(res->role->offline->app, app) == 0;
}

/* The owner's role under both policies, from the claims of their latest sign-in. */
static sg_rc judge_grant(sg_store_t *st, impact_t *im, owner_t *g)
{
    char *text = NULL;
    sg_rc rc = st->ops->person_get ? st->ops->person_get(st, g->user_id, &text) : SG_ERR_NOTFOUND;
    if (rc == SG_ERR_NOTFOUND)
        return SG_OK;
    if (rc)
        return rc;
    g->known = 1;
    cJSON *claims = cJSON_Parse(text);
    free(text);
    sg_policy_result_t a = {0}, b = {0};
    int ra = claims && sg_policy_resolve(im->old, claims, &a) == SG_OK;
    int rb = claims && sg_policy_resolve(im->new, claims, &b) == SG_OK;
    cJSON_Delete(claims);
    g->from = ra ? a.role->name : NULL;
    g->to = rb ? b.role->name : NULL;
    g->was_ok = offline_for(&a, ra, g->app);
    g->is_ok = offline_for(&b, rb, g->app);
    return SG_OK;
}

static int shift_cmp(const void *x, const void *y)
{
    const shift_t *a = x, *b = y;
    int c = strcmp(a->from ? a->from : "", b->from ? b->from : "");
    if (c)
        return c;
    if (!a->to != !b->to)
        return a->to ? -1 : 1; /* changes before ends */
    c = strcmp(a->to ? a->to : "", b->to ? b->to : "");
    return c ? c : strcmp(a->why ? a->why : "", b->why ? b->why : "");
}

static int cmp_ll(long long a, long long b)
{
    return a < b ? -1 : a > b;
}

static int relife_cmp(const void *x, const void *y)
{
    const relife_t *a = x, *b = y;
    int c = strcmp(a->role, b->role);
    if (!c)
        c = cmp_ll(a->idle_from, b->idle_from);
    if (!c)
        c = cmp_ll(a->idle_to, b->idle_to);
    if (!c)
        c = cmp_ll(a->max_from, b->max_from);
    return c ? c : cmp_ll(a->max_to, b->max_to);
}

static void impact_free(impact_t *im)
{
    for (size_t i = 0; i < im->nshifts; i++) {
        free(im->shifts[i].from);
        free(im->shifts[i].to);
        free(im->shifts[i].why);
    }
    free(im->shifts);
    for (size_t i = 0; i < im->nlifes; i++)
        free(im->lifes[i].role);
    free(im->lifes);
    for (size_t i = 0; i < im->ngrants; i++) {
        free(im->grants[i].user_id);
        free(im->grants[i].username);
        free(im->grants[i].app);
    }
    free(im->grants);
}

/*
 * Walks the gateway's database (read-only: the gateway may be running) and fills im. 1 when
 * there is no database yet, 0 when walked, -1 on an error (said).
 */
static int measure(const char *db, impact_t *im)
{
    char err[512];
    sg_store_t *st = NULL;
    sg_rc rc = sg_store_open_sqlite_readonly(db, &st, err, sizeof(err));
    if (rc == SG_ERR_NOTFOUND)
        return 1;
    if (rc) {
        fprintf(stderr, "scopegate: %s\n", err[0] ? err : sg_rc_str(rc));
        return -1;
    }
    im->now = (long long)time(NULL);
    rc = st->ops->session_each(st, visit_session, im);
    if (!rc && !im->nomem)
        rc = st->ops->grant_each(st, visit_grant, im);
    for (size_t i = 0; !rc && !im->nomem && i < im->ngrants; i++)
        rc = judge_grant(st, im, &im->grants[i]);
    st->ops->close(st);
    if (rc || im->nomem) {
        fprintf(stderr, "scopegate: %s: %s\n", db,
                im->nomem || rc == SG_ERR_NOMEM ? "out of memory" : "cannot read the database");
        return -1;
    }
    if (im->nshifts)
        qsort(im->shifts, im->nshifts, sizeof(*im->shifts), shift_cmp);
    if (im->nlifes)
        qsort(im->lifes, im->nlifes, sizeof(*im->lifes), relife_cmp);
    return 0;
}

typedef enum { G_LOSE, G_REGAIN, G_UNKNOWN } grant_class;

static int in_class(const owner_t *g, grant_class c)
{
    switch (c) {
    case G_LOSE:
        return g->known && g->was_ok && !g->is_ok;
    case G_REGAIN:
        return g->known && !g->was_ok && g->is_ok;
    case G_UNKNOWN:
        return !g->known;
    }
    return 0;
}

static void print_grants(const impact_t *im, grant_class c, const char *one, const char *many)
{
    size_t n = 0;
    for (size_t i = 0; i < im->ngrants; i++)
        n += in_class(&im->grants[i], c);
    if (!n)
        return;
    printf("  %zu %s:", n, n == 1 ? one : many);
    size_t shown = 0;
    for (size_t i = 0; i < im->ngrants && shown < LIST_MAX; i++) {
        const owner_t *g = &im->grants[i];
        if (!in_class(g, c))
            continue;
        printf("%s %s (grant %lld", shown++ ? "," : "", g->username ? g->username : g->user_id,
               g->id);
        if (c != G_UNKNOWN && !same_or_null(g->from, g->to))
            printf(", %s -> %s", g->from ? g->from : "no role", g->to ? g->to : "no role");
        printf(")");
    }
    if (n > shown)
        printf(", and %zu more", n - shown);
    printf("\n");
}

static void print_impact(const char *db, int missing, const impact_t *im)
{
    if (missing) {
        printf("\nno database at %s: no sessions or stored grants to check\n", db);
        return;
    }
    printf("\nimpact on %zu current session%s and %zu live grant%s (%s):\n", im->sessions,
           im->sessions == 1 ? "" : "s", im->ngrants, im->ngrants == 1 ? "" : "s", db);
    size_t lose = 0, regain = 0;
    for (size_t i = 0; i < im->ngrants; i++) {
        lose += in_class(&im->grants[i], G_LOSE);
        regain += in_class(&im->grants[i], G_REGAIN);
    }
    if (!im->nshifts && !im->nlifes && !lose && !regain) {
        printf("  no session changes role or lifetimes, and no stored grant changes\n");
    } else {
        /* Role and lifetimes apart: a reload rewrites a session for either (or both). */
        for (size_t i = 0; i < im->nshifts; i++) {
            const shift_t *s = &im->shifts[i];
            if (s->to)
                printf("  %zu session%s: %s -> %s\n", s->n, s->n == 1 ? "" : "s", s->from, s->to);
            else
                printf("  %zu session%s (%s): %s\n", s->n, s->n == 1 ? " ends" : "s end", s->from,
                       s->why);
        }
        if (!im->nshifts)
            printf("  no session changes role or ends\n");
        for (size_t i = 0; i < im->nlifes; i++) {
            const relife_t *l = &im->lifes[i];
            char a[32], b[32];
            printf("  lifetimes change for %zu session%s (%s):", l->n, l->n == 1 ? "" : "s",
                   l->role);
            if (l->idle_from != l->idle_to)
                printf(" idle %s -> %s", sg_duration_format(l->idle_from, a, sizeof(a)),
                       sg_duration_format(l->idle_to, b, sizeof(b)));
            if (l->max_from != l->max_to)
                printf("%s max %s -> %s", l->idle_from != l->idle_to ? "," : "",
                       sg_duration_format(l->max_from, a, sizeof(a)),
                       sg_duration_format(l->max_to, b, sizeof(b)));
            printf("\n");
        }
        if (!im->nlifes)
            printf("  no session's lifetimes change\n");
        print_grants(im, G_LOSE, "stored grant loses its role's offline access",
                     "stored grants lose their role's offline access");
        print_grants(im, G_REGAIN, "stored grant regains its role's offline access",
                     "stored grants regain their role's offline access");
        if (!lose && !regain)
            printf("  no stored grant changes\n");
    }
    print_grants(im, G_UNKNOWN,
                 "stored grant has an owner whose claims are not recorded (not judged; the "
                 "gateway serves it until they sign in again)",
                 "stored grants have owners whose claims are not recorded (not judged; the "
                 "gateway serves them until they sign in again)");
}

/* Adds a JSON array of the grants in class c under key; NULL when out of memory. */
static cJSON *grants_json(cJSON *parent, const char *key, const impact_t *im, grant_class c)
{
    cJSON *a = cJSON_AddArrayToObject(parent, key);
    for (size_t i = 0; a && i < im->ngrants; i++) {
        const owner_t *g = &im->grants[i];
        if (!in_class(g, c))
            continue;
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(a, o)) {
            cJSON_Delete(o);
            return NULL;
        }
        if (!cJSON_AddNumberToObject(o, "id", (double)g->id) ||
            !cJSON_AddStringToObject(o, "user_id", g->user_id) ||
            !(g->username ? cJSON_AddStringToObject(o, "username", g->username)
                          : cJSON_AddNullToObject(o, "username")) ||
            !cJSON_AddStringToObject(o, "app", g->app))
            return NULL;
        if (c != G_UNKNOWN &&
            (!(g->from ? cJSON_AddStringToObject(o, "from", g->from)
                       : cJSON_AddNullToObject(o, "from")) ||
             !(g->to ? cJSON_AddStringToObject(o, "to", g->to) : cJSON_AddNullToObject(o, "to"))))
            return NULL;
    }
    return a;
}

/*
 * {"database":PATH,"exists":true,"sessions":{"current":N,"role_changed":N,
 * "lifetime_changed":N,"ended":N,"changes":[{"from","to","count"} (to null and "reason" when
 * the sessions end)],"lifetimes":[{"role","idle_from","idle_to","max_from","max_to","count"}
 * (seconds)]},"grants":{"live":N,"lose_offline":[...],"regain_offline":[...],"unknown":[...]}},
 * each grant {"id","user_id","username","app","from","to"} (unknown ones without from and to).
 * A session whose role and lifetimes both change counts in role_changed and lifetime_changed.
 */
static cJSON *impact_json(const char *db, int missing, const impact_t *im)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *ss = o ? cJSON_AddObjectToObject(o, "sessions") : NULL;
    cJSON *gs = o ? cJSON_AddObjectToObject(o, "grants") : NULL;
    cJSON *changes = NULL, *lifes = NULL;
    if (!ss || !gs || !cJSON_AddStringToObject(o, "database", db) ||
        !cJSON_AddBoolToObject(o, "exists", !missing) ||
        !cJSON_AddNumberToObject(ss, "current", (double)im->sessions) ||
        !cJSON_AddNumberToObject(ss, "role_changed", (double)im->role_changed) ||
        !cJSON_AddNumberToObject(ss, "lifetime_changed", (double)im->lifetime_changed) ||
        !cJSON_AddNumberToObject(ss, "ended", (double)im->ended) ||
        !cJSON_AddNumberToObject(gs, "live", (double)im->ngrants))
        goto fail;
    changes = cJSON_AddArrayToObject(ss, "changes");
    lifes = cJSON_AddArrayToObject(ss, "lifetimes");
    if (!changes || !lifes)
        goto fail;
    for (size_t i = 0; i < im->nlifes; i++) {
        const relife_t *l = &im->lifes[i];
        cJSON *c = cJSON_CreateObject();
        if (!c || !cJSON_AddItemToArray(lifes, c)) {
            cJSON_Delete(c);
            goto fail;
        }
        if (!cJSON_AddStringToObject(c, "role", l->role) ||
            !cJSON_AddNumberToObject(c, "idle_from", (double)l->idle_from) ||
            !cJSON_AddNumberToObject(c, "idle_to", (double)l->idle_to) ||
            !cJSON_AddNumberToObject(c, "max_from", (double)l->max_from) ||
            !cJSON_AddNumberToObject(c, "max_to", (double)l->max_to) ||
            !cJSON_AddNumberToObject(c, "count", (double)l->n))
            goto fail;
    }
    for (size_t i = 0; i < im->nshifts; i++) {
        const shift_t *s = &im->shifts[i];
        cJSON *c = cJSON_CreateObject();
        if (!c || !cJSON_AddItemToArray(changes, c)) {
            cJSON_Delete(c);
            goto fail;
        }
        if (!cJSON_AddStringToObject(c, "from", s->from) ||
            !(s->to ? cJSON_AddStringToObject(c, "to", s->to) : cJSON_AddNullToObject(c, "to")) ||
            (s->why && !cJSON_AddStringToObject(c, "reason", s->why)) ||
            !cJSON_AddNumberToObject(c, "count", (double)s->n))
            goto fail;
    }
    if (!grants_json(gs, "lose_offline", im, G_LOSE) ||
        !grants_json(gs, "regain_offline", im, G_REGAIN) ||
        !grants_json(gs, "unknown", im, G_UNKNOWN))
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static int print_diff_json(cJSON *changes, cJSON *impact)
{
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (o && cJSON_AddItemToObject(o, "changes", changes)) {
        changes = NULL;
        if (impact ? cJSON_AddItemToObject(o, "impact", impact)
                   : cJSON_AddNullToObject(o, "impact") != NULL) {
            impact = NULL;
            text = cJSON_Print(o);
        }
    }
    cJSON_Delete(changes);
    cJSON_Delete(impact);
    cJSON_Delete(o);
    if (!text) {
        fprintf(stderr, "scopegate: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return 0;
}

static int diff(int argc, char **argv)
{
    const char *files[2] = {NULL, NULL}, *config = NULL;
    int nfiles = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *opt = argv[i];
        if (strcmp(opt, "--help") == 0)
            return usage(stdout);
        if (strcmp(opt, "--json") == 0) {
            json = 1;
        } else if (sg_cli_take_option(argc, argv, &i, "--config", &v)) {
            if (!v)
                return usage_error("policy diff: %s needs a FILE", opt);
            config = v;
        } else if (sg_cli_is_option(opt)) {
            return usage_error("policy diff: unknown option '%s'", opt);
        } else if (nfiles == 2) {
            return usage_error("policy diff: two policies only ('%s' is a third)", opt);
        } else {
            files[nfiles++] = opt;
        }
    }
    if (nfiles == 0 || (nfiles == 1 && !config))
        return usage_error("policy diff: which OLD and NEW policy files? (with --config, OLD may "
                           "be left out: the config's policy_file)");

    sg_cli_deployment_t dep = {.apps = NULL};
    int status = 1, nomem = 0;
    sg_policy_t *old = NULL, *new = NULL;
    cJSON *changes = NULL, *impact = NULL;
    impact_t im = {.old = NULL};
    if (config && sg_cli_deployment_load(config, &dep) != 0)
        goto done;
    const char *old_file = nfiles == 2 ? files[0] : dep.cfg.policy_file;
    const char *new_file = nfiles == 2 ? files[1] : files[0];
    sg_policy_opts_t opts = {.known_apps = config ? dep.apps : NULL};
    old = load_quiet(old_file, &opts, &nomem);
    new = load_quiet(new_file, &opts, &nomem);
    if (!old || !new)
        goto done;
    if (sg_policy_diff(old, new, &changes) != SG_OK) {
        nomem = 1;
        goto done;
    }
    int missing = 0;
    if (config) {
        im.old = old;
        im.new = new;
        missing = measure(dep.db, &im);
        if (missing < 0)
            goto done;
    }
    if (json) {
        if (config && !(impact = impact_json(dep.db, missing, &im))) {
            nomem = 1;
            goto done;
        }
        status = print_diff_json(changes, impact);
        changes = impact = NULL; /* print_diff_json took them */
        goto done;
    }
    int n = cJSON_GetArraySize(changes);
    for (int i = 0; i < n; i++)
        printf("%s\n", cJSON_GetObjectItem(cJSON_GetArrayItem(changes, i), "text")->valuestring);
    if (n == 0)
        printf("no changes\n");
    if (config)
        print_impact(dep.db, missing, &im);
    status = 0;
done:
    if (nomem)
        fprintf(stderr, "scopegate: out of memory\n");
    cJSON_Delete(changes);
    cJSON_Delete(impact);
    impact_free(&im);
    sg_policy_free(old);
    sg_policy_free(new);
    if (config)
        sg_cli_deployment_free(&dep);
    return status;
}

int sg_cli_policy(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "check") == 0)
        return check(argc - 1, argv + 1);
    if (strcmp(argv[1], "explain") == 0)
        return explain(argc - 1, argv + 1);
    if (strcmp(argv[1], "diff") == 0)
        return diff(argc - 1, argv + 1);
    if (strcmp(argv[1], "test") == 0)
        return sg_cli_policy_test(argc - 1, argv + 1);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(stdout);
    return usage_error("unknown policy command '%s'", argv[1]);
}
