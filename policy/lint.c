/*
 * Checks that need more than one setting: scope names against what the provider knows,
 * and the assign rules against each other and against the roles.
 */
#include "policy_int.h"
#include "scopegate/salesforce.h"

#include "scopegate/buf.h"

#include <stdlib.h>
#include <string.h>

#define ERR  SG_DIAG_ERROR
#define WARN SG_DIAG_WARNING

/*
 * The scope names a policy may use without a warning: Salesforce's scopes_supported
 * (sg_salesforce_scopes, docs/salesforce.md 1.3 and 2), plus `groups`, which other
 * OpenID Providers (Keycloak, Okta, Dex) use to release group membership.
 */
static const char *const other_scopes[] = {"groups", NULL};
static const char *const *const scope_lists[] = {sg_salesforce_scopes, other_scopes};

/* Scopes with which the provider issues a refresh token (Salesforce: synonyms). */
static int issues_refresh_token(const char *scope)
{
    return strcmp(scope, "refresh_token") == 0 || strcmp(scope, "offline_access") == 0;
}

static int known_scope(const char *scope)
{
    for (size_t l = 0; l < 2; l++)
        for (size_t i = 0; scope_lists[l][i]; i++)
            if (strcmp(scope_lists[l][i], scope) == 0)
                return 1;
    return 0;
}

static void unknown_scope(sg_policy_ctx_t *c, const char *scope, int line)
{
    sg_suggest_t sug;
    sg_suggest_init(&sug, scope);
    for (size_t l = 0; l < 2; l++)
        for (size_t i = 0; scope_lists[l][i]; i++)
            sg_suggest_try(&sug, scope_lists[l][i]);
    if (sug.best) {
        sg_policy_diag(c, line, WARN, "unknown scope '%s' (did you mean '%s'?)", scope, sug.best);
        return;
    }
    sg_buf_t b;
    sg_buf_init(&b, 4096);
    sg_rc rc = SG_OK;
    for (size_t l = 0; l < 2; l++)
        for (size_t i = 0; scope_lists[l][i] && !rc; i++)
            rc = sg_buf_printf(&b, "%s%s", b.len ? " " : "", scope_lists[l][i]);
    if (rc)
        c->nomem = 1;
    else
        sg_policy_diag(c, line, WARN, "unknown scope '%s'; the known scopes are: %s", scope, b.ptr);
    sg_buf_free(&b);
}

void sg_policy_lint_scope(sg_policy_ctx_t *c, sg_scopes_kind kind, const char *const *scopes,
                          size_t i, int line)
{
    const char *s = scopes[i];
    if (!*s) {
        sg_policy_diag(c, line, ERR, "a scope is an empty string");
        return;
    }
    if (strpbrk(s, " \t\r\n")) {
        sg_policy_diag(c, line, ERR,
                       "scope '%s' contains a space: list each scope as its own string", s);
        return;
    }
    for (size_t j = 0; j < i; j++) {
        if (strcmp(scopes[j], s) == 0) {
            sg_policy_diag(c, line, WARN, "scope '%s' is listed twice", s);
            return;
        }
    }
    if (kind == SG_SCOPES_SIGNIN && issues_refresh_token(s)) {
        sg_policy_diag(c, line, ERR,
                       "sign-in scope '%s' would issue a refresh token: each sign-in would use up "
                       "one of the provider's grants (ask for it in a role's offline scopes)",
                       s);
        return;
    }
    if (!known_scope(s))
        unknown_scope(c, s, line);
}

void sg_policy_lint_scope_list(sg_policy_ctx_t *c, sg_scopes_kind kind, const char *const *scopes,
                               size_t n, int line)
{
    int openid = 0, refresh = 0;
    for (size_t i = 0; i < n; i++) {
        openid |= strcmp(scopes[i], "openid") == 0;
        refresh |= issues_refresh_token(scopes[i]);
    }
    if (kind == SG_SCOPES_SIGNIN && !openid)
        sg_policy_diag(c, line, ERR,
                       "sign-in scopes must include 'openid': the gateway needs an ID token to "
                       "know who signed in");
    if (kind == SG_SCOPES_OFFLINE && !refresh)
        sg_policy_diag(c, line, WARN,
                       "offline scopes have neither 'refresh_token' nor 'offline_access': no "
                       "refresh token, the grant can't be kept");
}

static int listed(const sg_policy_rule_t *r, const char *value)
{
    for (size_t i = 0; i < r->nvalues; i++)
        if (strcmp(r->values[i], value) == 0)
            return 1;
    return 0;
}

/* Every claim value that would match b already matches a, which comes first. */
static int covers(const sg_policy_rule_t *a, const sg_policy_rule_t *b)
{
    if (!a->text || a->kind != b->kind || strcmp(a->claim, b->claim) != 0)
        return 0;
    for (size_t i = 0; i < b->nvalues; i++)
        if (!listed(a, b->values[i]))
            return 0;
    return 1;
}

static int same_values(const sg_policy_rule_t *a, const sg_policy_rule_t *b)
{
    for (size_t i = 0; i < a->nvalues; i++)
        if (!listed(b, a->values[i]))
            return 0;
    return 1;
}

/* Warns when rule i can never match because an earlier rule takes all of its cases. */
static int shadowed(sg_policy_ctx_t *c, size_t i)
{
    const sg_policy_rule_t *rules = c->p->rules, *r = &rules[i];
    if (r->kind == SG_RULE_DEFAULT || !r->text)
        return 0;
    for (size_t j = 0; j < i; j++) {
        const sg_policy_rule_t *e = &rules[j];
        if (!covers(e, r))
            continue;
        if (e->role == r->role && same_values(e, r))
            sg_policy_diag(c, r->line, WARN, "duplicate rule: the same as the rule at line %d",
                           e->line);
        else
            sg_policy_diag(c, r->line, WARN,
                           "rule can never match: the rule at line %d matches first for every "
                           "value listed here",
                           e->line);
        return 1;
    }
    return 0;
}

void sg_policy_lint_rules(sg_policy_ctx_t *c, int assign_line)
{
    const sg_policy_t *p = c->p;
    size_t def = p->nrules;
    for (size_t i = 0; i < p->nrules && def == p->nrules; i++)
        if (p->rules[i].kind == SG_RULE_DEFAULT)
            def = i;
    if (def == p->nrules)
        sg_policy_diag(c, assign_line, ERR,
                       "no default rule: end 'assign' with a rule without a claim, such as "
                       "{ role = \"user\"; }, so that everyone who signs in gets a role");

    unsigned char *dead = calloc(p->nrules, 1);
    if (!dead) {
        c->nomem = 1;
        return;
    }
    for (size_t i = 0; i < p->nrules; i++) {
        if (i > def) {
            sg_policy_diag(c, p->rules[i].line, WARN,
                           "rule can never match: the default rule at line %d comes before it",
                           p->rules[def].line);
            dead[i] = 1;
        } else {
            dead[i] = (unsigned char)shadowed(c, i);
        }
    }
    for (size_t r = 0; r < p->nroles; r++) {
        const sg_policy_role_t *role = &p->roles[r];
        size_t i = 0;
        while (i < p->nrules && (dead[i] || p->rules[i].role != role))
            i++;
        if (i == p->nrules)
            sg_policy_diag(c, role->line, WARN, "role '%s' is never assigned: no rule can reach it",
                           role->name);
    }
    free(dead);
}
