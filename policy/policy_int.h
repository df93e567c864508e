/*
 * Inside the policy engine: the sg_policy_t layout and what the files of policy/ share.
 * Nothing here leaves policy/.
 *
 * All of a policy's memory comes from one arena owned by the policy, so the loaded object
 * is a single unit: built once by parse.c, read by everyone, released by sg_policy_free.
 */
#ifndef SCOPEGATE_POLICY_INT_H
#define SCOPEGATE_POLICY_INT_H

#include <libconfig.h>
#include <stddef.h>
#include "scopegate/policy.h"

struct sg_policy_block;

struct sg_policy {
    struct sg_policy_block *arena;
    const char *source;
    const char *hash;
    sg_policy_signin_t signin;
    sg_policy_role_t *roles;
    size_t nroles;
    sg_policy_rule_t *rules;
    size_t nrules;
};

/* Zeroed memory from p's arena; NULL when out of memory. */
void *sg_policy_alloc(sg_policy_t *p, size_t n);
char *sg_policy_strdup(sg_policy_t *p, const char *s);

/* One load in progress: where problems go, and the first allocation failure. */
typedef struct {
    sg_policy_t *p;
    sg_diags_t *d;
    const char *file;
    const sg_policy_opts_t *opts;
    const char *text; /* the file's bytes, NUL-terminated: for what libconfig cannot tell */
    size_t len;
    int nomem;
} sg_policy_ctx_t;

void sg_policy_diag(sg_policy_ctx_t *c, int line, sg_diag_severity sev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Names for a message that lists what exists ("the policy's roles are user, admin"): added one
 * at a time, joined with ", ", cut with ", ..." when the text would get too long to read.
 */
typedef struct {
    char text[400];
    int cut;
} sg_names_t;

void sg_names_init(sg_names_t *n);
void sg_names_add(sg_names_t *n, const char *name);


/* parse.c, for every file read with libconfig: what a setting is called in messages ("a
 * string"), and unknown keys of a group reported as errors with "did you mean" (known:
 * NULL-terminated). */
const char *sg_policy_type_name(const config_setting_t *s);
void sg_policy_check_keys(sg_policy_ctx_t *c, const config_setting_t *group,
                          const char *const *known, const char *where);

/*
 * source.c: libconfig joins adjacent string literals into one ("openid" "profile" is
 * "openidprofile"), so a forgotten comma in a list silently makes one odd value. This looks at
 * the text of the list's setting (named key, its value starting on the setting's line) and
 * reports each pair of literals separated only by blanks and comments as an error. Returns
 * how many.
 */
int sg_policy_check_commas(sg_policy_ctx_t *c, const config_setting_t *list, const char *key);

/* lint.c: scope names (scopes[i] at line, then the whole list at line), and the rules. */
typedef enum { SG_SCOPES_SIGNIN, SG_SCOPES_OFFLINE } sg_scopes_kind;

void sg_policy_lint_scope(sg_policy_ctx_t *c, sg_scopes_kind kind, const char *const *scopes,
                          size_t i, int line);
void sg_policy_lint_scope_list(sg_policy_ctx_t *c, sg_scopes_kind kind, const char *const *scopes,
                               size_t n, int line);
/* Rules and roles together: default rule, dead rules, duplicates, unreachable roles. */
void sg_policy_lint_rules(sg_policy_ctx_t *c, int assign_line);

#endif
