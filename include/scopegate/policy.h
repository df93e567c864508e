/*
 * The scope policy: which role a signed-in person gets, and what each role may ask the
 * provider for. Security staff write it as a libconfig file (shape in docs/policy.md):
 *
 *   version = 1;
 *   signin = { app = "signin"; scopes = ["openid", "profile", "email"]; };
 *   roles = {
 *     user  = { session = { idle = "30m"; max = "8h"; }; };
 *     admin = { offline = { app = "api"; scopes = ["api", "refresh_token"]; grant_limit = 5; };
 *               session = { idle = "15m"; max = "4h"; }; can_view_policy = true; };
 *   };
 *   assign = (
 *     { role = "admin"; claim = "preferred_username"; in = ["admin@acme.example"]; },
 *     { role = "admin"; claim = "groups"; contains = ["gateway-admins"]; },
 *     { role = "user"; }
 *   );
 *
 * Loading checks everything it can and reports each problem with its line, as a compiler
 * does: errors make the file unusable, warnings point at things that are allowed but
 * probably wrong (a role nobody can reach, a rule that can never match, an unknown scope).
 *
 * A loaded sg_policy_t is immutable and owns all of its memory, with no global state, so the
 * gateway can swap policies atomically on reload while requests still resolve against the
 * old one; every pointer handed out below lives exactly as long as the policy. Resolution
 * reads only, allocates nothing and may run on any number of threads at once.
 */
#ifndef SCOPEGATE_POLICY_H
#define SCOPEGATE_POLICY_H

#include <stddef.h>
#include <stdio.h>
#include <cjson/cJSON.h>
#include "scopegate/diag.h"
#include "scopegate/rc.h"

#define SG_POLICY_VERSION             1
#define SG_POLICY_MAX_BYTES           (1024 * 1024) /* larger files are refused unread */
#define SG_POLICY_MAX_DIAGS           200           /* reported at most; the last says so */
#define SG_POLICY_DEFAULT_GRANT_LIMIT 5             /* Salesforce's per-user, per-app limit */
#define SG_POLICY_DEFAULT_IDLE        (30 * 60)     /* a role without session = { idle } */
#define SG_POLICY_DEFAULT_MAX         (8 * 3600)    /* a role without session = { max } */

/* ---- diagnostics -------------------------------------------------------------------- */

/* The problems of a load are an sg_diags_t (scopegate/diag.h). */

/* ---- the policy --------------------------------------------------------------------- */

typedef struct sg_policy sg_policy_t;

/* What everyone signs in with: the role is known only after sign-in. */
typedef struct {
    const char *app;
    const char *const *scopes;
    size_t nscopes;
    int signout_provider; /* signout_provider = true/false: 1 or 0; -1 when the policy does not
                             say (the deployment config's signout_provider decides) */
} sg_policy_signin_t;

/* The offline API grant a role asks for, once, through a second app. */
typedef struct {
    const char *app;
    const char *const *scopes;
    size_t nscopes;
    int grant_limit;       /* live grants per person the provider allows for app (default 5) */
    long long token_ttl;   /* seconds to trust an access token the provider says nothing
                              about; 0: the vault's default */
    int fallback_same_org; /* another live grant of the same org may stand in */
    const char *fallback_integration; /* then this JWT-bearer integration; NULL: none */

    /*
     * What the provider will do with the app's refresh tokens, as the policy declares it
     * (offline.provider; the gateway cannot read a Connected App's OAuth policies), and what
     * the gateway does about it (offline.keep_alive, offline.warn_before):
     *
     *   provider = { refresh_token_policy = "expire_if_unused"; refresh_token_validity = "30d";
     *                idle_ttl_limit = false; rotation = false; app_name = "Acme API"; };
     *   keep_alive = { enabled = true; at = 0.5; jitter = 0.1; };
     *   warn_before = "7d";
     *
     * refresh_token_policy is one of SG_POLICY_RT_* ("valid_until_revoked", Salesforce's
     * default, when the provider block does not say; NULL when there is no provider block).
     * idle_window and absolute_lifetime are derived: "expire_if_unused" N gives idle N,
     * "expire_after" N absolute N, and the 30-day idle limit (idle_ttl_limit) caps the idle
     * window at 30 days for every policy but "immediately_expire". 0 means "never".
     */
    const char *refresh_token_policy; /* NULL: not declared */
    long long refresh_token_validity; /* N of the expire_ policies, seconds; 0 otherwise */
    int idle_ttl_limit;               /* the Connected App's 30-day idle limit is on */
    long long idle_window;            /* a refresh token dies after this long unused; 0: never */
    long long absolute_lifetime;      /* ... this long after it was issued; 0: never */
    int rotation;                     /* refresh-token rotation is on */
    const char *provider_app_name;    /* the Connected App's name at the provider (OauthToken
                                         AppName); NULL: not declared */
    int keep_alive;                   /* refresh unused grants before idle_window closes */
    double keep_alive_at;             /* due after this fraction of the window (default 0.5) */
    double keep_alive_jitter;         /* spread of due times, fraction (default 0.1) */
    long long warn_before;            /* warn this long before absolute_lifetime ends (7d) */
} sg_policy_offline_t;

/* offline.provider.refresh_token_policy values (docs/salesforce.md 3.1). */
#define SG_POLICY_RT_VALID_UNTIL_REVOKED    "valid_until_revoked"
#define SG_POLICY_RT_IMMEDIATELY_EXPIRE     "immediately_expire"
#define SG_POLICY_RT_EXPIRE_IF_UNUSED       "expire_if_unused"
#define SG_POLICY_RT_EXPIRE_AFTER           "expire_after"
#define SG_POLICY_IDLE_TTL_LIMIT            (30LL * 86400) /* Salesforce's 30-day idle limit */
#define SG_POLICY_DEFAULT_WARN_BEFORE       (7LL * 86400)
#define SG_POLICY_DEFAULT_KEEP_ALIVE_AT     0.5
#define SG_POLICY_DEFAULT_KEEP_ALIVE_JITTER 0.1

typedef struct {
    const char *name;
    int line;
    const sg_policy_offline_t *offline; /* NULL: the role needs no offline grant */
    long long idle;                     /* session idle lifetime, seconds */
    long long max;                      /* session absolute lifetime, seconds */
    int can_view_policy;
    /* May end other people's sessions from the policy page's Sessions section (which needs
     * can_view_policy to be seen). */
    int can_end_sessions;
} sg_policy_role_t;

typedef enum {
    SG_RULE_DEFAULT,  /* no claim: matches everyone */
    SG_RULE_IN,       /* the claim's single value is one of values */
    SG_RULE_CONTAINS, /* the claim (an array, or one value) holds one of values */
} sg_rule_kind;

typedef struct {
    const sg_policy_role_t *role;
    sg_rule_kind kind;
    const char *claim; /* NULL for SG_RULE_DEFAULT; may be a dotted path */
    const char *const *values;
    size_t nvalues;
    int line;
    const char *text; /* for people and audit lines: "groups contains [gateway-admins]" */
} sg_policy_rule_t;

typedef struct {
    /*
     * Names of apps the deployment config defines, NULL-terminated. When set, a policy
     * naming any other app is an error; when NULL, app names are not checked.
     */
    const char *const *known_apps;
} sg_policy_opts_t;

/*
 * Reads and checks the policy file at path (at most SG_POLICY_MAX_BYTES). Every problem goes
 * to diags (which may be NULL; when not, the caller inits and frees it). out may be NULL to
 * only check. Returns SG_OK when there is no error (warnings allowed) and then *out, if asked
 * for, is the new policy; SG_ERR_IO when the file cannot be read, SG_ERR_CONFIG when it has
 * errors, SG_ERR_NOMEM. On any error *out is NULL.
 */
sg_rc sg_policy_load(const char *path, const sg_policy_opts_t *opts, sg_policy_t **out,
                     sg_diags_t *diags);
/* The same from text in memory; name (NULL: "policy") stands for the file in diagnostics. */
sg_rc sg_policy_parse(const char *text, size_t len, const char *name, const sg_policy_opts_t *opts,
                      sg_policy_t **out, sg_diags_t *diags);
void sg_policy_free(sg_policy_t *p);

/* The path (or name) it was loaded from. */
const char *sg_policy_source(const sg_policy_t *p);
/* Lower-case hex SHA-256 of the file's bytes: names this exact policy in logs and pages. */
const char *sg_policy_hash(const sg_policy_t *p);
const sg_policy_signin_t *sg_policy_signin(const sg_policy_t *p);
/* All roles, in file order. */
const sg_policy_role_t *sg_policy_roles(const sg_policy_t *p, size_t *n);
/* The role called name, or NULL (a session's stored role may be gone after a reload). */
const sg_policy_role_t *sg_policy_role(const sg_policy_t *p, const char *name);
/* The offline block of the first role whose offline app is app, or NULL: the token API's
 * settings (TTL, fallbacks) for grants of that app. */
const sg_policy_offline_t *sg_policy_offline_for_app(const sg_policy_t *p, const char *app);
/* The assign rules in file order (rules after the default are kept: they never match). */
const sg_policy_rule_t *sg_policy_rules(const sg_policy_t *p, size_t *n);

/* ---- role resolution ---------------------------------------------------------------- */

typedef struct {
    const sg_policy_role_t *role;     /* name, offline grant, session lifetimes, ... */
    const sg_policy_rule_t *rule;     /* the rule that matched: line, text */
    size_t rule_index;                /* 0-based position in assign */
    const sg_policy_signin_t *signin; /* the same for every role, here for convenience */
} sg_policy_result_t;

/*
 * The role for a person: the first assign rule that matches claims (a JSON object, the ID
 * token's claims merged with userinfo's). `in` compares a single claim value with the listed
 * strings (numbers and booleans by their JSON text: 42, true); `contains` is true when an
 * array claim holds one of them, or a single value equals one. Comparisons are exact
 * (case-sensitive). SG_ERR_NOTFOUND when no rule matches, which a loaded policy's default
 * rule rules out; claims that are not an object count as an empty object.
 */
sg_rc sg_policy_resolve(const sg_policy_t *p, const cJSON *claims, sg_policy_result_t *out);

/*
 * The claim at path: first the whole path as one key (names such as
 * "https://acme.example/roles" contain dots), then, at each '.', the part before it as an
 * object and the rest looked up inside it ("custom_attributes.role"). NULL when absent.
 */
const cJSON *sg_policy_claim(const cJSON *claims, const char *path);

/*
 * Why rule does not match claims, as a short sentence into why (always NUL-terminated,
 * truncated to whylen): "claim 'groups' missing", "'bob@x' not in [admin@x]".
 * Returns 1 when the rule matches (why is then ""), 0 when it does not.
 */
int sg_policy_rule_why_not(const sg_policy_rule_t *rule, const cJSON *claims, char *why,
                           size_t whylen);

/*
 * What `scopegate policy explain` prints: the resolution as a JSON object
 *   {"role":"admin","rule":{"number":1,"line":12,"at":"policy.cfg:12","text":"..."},
 *    "signin":{"app":"signin","scopes":[...]},
 *    "offline":{"app":"api","scopes":[...],"grant_limit":5,"token_ttl":900 or null,
 *               "fallback":{"same_org":true,"integration":"NAME" or null},
 *               "provider":{"refresh_token_policy":"expire_if_unused",
 *                           "refresh_token_validity":2592000 or null,"idle_ttl_limit":false,
 *                           "rotation":false,"app_name":"NAME" or null,
 *                           "idle_window":2592000 or null,"absolute_lifetime":N or null}
 *                          or null (not declared),
 *               "keep_alive":{"enabled":true,"at":0.5,"jitter":0.1},
 *               "warn_before":604800} or null,
 *    "session":{"idle":900,"max":14400},"can_view_policy":false,"can_end_sessions":false,
 *    "signout_provider":true|false|null (null: the deployment config decides),
 *    "skipped":[{"number":1,"line":10,"at":"policy.cfg:10","text":"...",
 *                "why":"claim 'groups' missing"}, ...]}
 * where skipped lists each rule before the match and why it did not match. Rules are numbered
 * from 1, as the file reads; at is the policy's source and the rule's line. The caller
 * frees *out with cJSON_Delete. SG_ERR_NOTFOUND as for sg_policy_resolve, SG_ERR_NOMEM.
 */
sg_rc sg_policy_explain(const sg_policy_t *p, const cJSON *claims, cJSON **out);

/* ---- test cases --------------------------------------------------------------------- */

/*
 * A file of cases for `scopegate policy test`, libconfig as the policy is:
 *
 *   cases = (
 *     { name = "an admin by username"; claims = { preferred_username = "admin@acme.example"; };
 *       expect = "admin"; scopes = ["api", "refresh_token"];
 *       session = { idle = "15m"; max = "4h"; }; },
 *     { claims = "{\"https://acme.example/roles\": [\"ops\"]}"; expect = "user"; scopes = []; }
 *   );
 *
 * claims is a group turned into a JSON object (strings, numbers, booleans, arrays and lists,
 * groups as objects), or a string holding a JSON object for claim names libconfig cannot
 * write. expect is a role of the policy, or SG_POLICY_DENIED for "no rule matches" (unless
 * the policy has a role of that name). scopes, when given, are the offline grant's scopes the
 * role gets ([] for none; order does not matter); session.idle and session.max its lifetimes.
 */
#define SG_POLICY_DENIED "denied"

typedef struct {
    const char *name; /* NULL: the case has none */
    int line;         /* of the case's "{" in the cases file */
    const cJSON *claims;
    const char *expect; /* a role's name or SG_POLICY_DENIED */
    int check_scopes;   /* scopes were given */
    const char *const *scopes;
    size_t nscopes;
    long long idle, max; /* seconds; 0: not checked */
} sg_policy_case_t;

typedef struct sg_policy_cases sg_policy_cases_t;

/*
 * Reads and checks the cases file at path. Every problem goes to diags (as for
 * sg_policy_load), with its line: unknown keys, wrong types, and an expected role that policy
 * does not have (policy may be NULL: then roles are not checked). SG_OK with *out, or
 * SG_ERR_IO, SG_ERR_CONFIG, SG_ERR_NOMEM with *out NULL.
 */
sg_rc sg_policy_cases_load(const char *path, const sg_policy_t *policy, sg_policy_cases_t **out,
                           sg_diags_t *diags);
void sg_policy_cases_free(sg_policy_cases_t *cases);
const sg_policy_case_t *sg_policy_cases(const sg_policy_cases_t *cases, size_t *n);

/* What one case gave under a policy. */
typedef struct {
    int passed;
    const sg_policy_role_t *role; /* NULL: denied */
    const sg_policy_rule_t *rule; /* the rule that matched; NULL: denied */
    size_t rule_index;            /* 0-based */
    char **failures;              /* one line each, without the case's FILE:LINE */
    size_t nfailures;
} sg_policy_case_result_t;

/*
 * Runs case c against p. A wrong role is the only failure said (its lifetimes and scopes would
 * follow from it): "expected admin, got user (rule 3 at policy.cfg:14 matched first)";
 * otherwise each mismatch of scopes and lifetimes: "admin: expected scopes api, got api
 * refresh_token", "admin: expected session idle 15m, got 30m". Free with
 * sg_policy_case_result_free. SG_ERR_NOMEM (nothing to free then).
 */
sg_rc sg_policy_case_run(const sg_policy_t *p, const sg_policy_case_t *c,
                         sg_policy_case_result_t *out);
void sg_policy_case_result_free(sg_policy_case_result_t *r);

/* ---- what a change of policy does ---------------------------------------------------- */

/*
 * What changes from old to new, for the people who review a policy change before it goes
 * live (`scopegate policy diff`). *out is a JSON array (empty when nothing that matters
 * changed), each item {"kind": "...", "text": "one sentence for people", ...fields}:
 *
 *   signin_app_changed          from, to                    sign-in app 'signin' -> 'sso'
 *   signin_scopes_added|removed scopes                      sign-in scopes added: phone
 *   signout_provider_changed    from, to (booleans, or null: the deployment config decides)
 *   role_removed                role                        role 'auditor' removed
 *   role_added                  role, offline (app, scopes) or null
 *   offline_added               role, app, scopes           the role gains an offline grant
 *   offline_removed             role, app                   the role loses it
 *   offline_app_changed         role, from, to
 *   offline_scopes_added|removed role, app, scopes          role 'admin': offline scopes
 *                                                           added: chatter_api
 *   grant_limit_changed         role, from, to
 *   token_ttl_changed           role, from, to (seconds; null: the vault's default)
 *   fallback_changed            role, setting ("same_org" or "integration"), from, to
 *   provider_changed            role, setting, from, to: "refresh_token_policy" (names or
 *                               null, with from_validity, to_validity: seconds or null),
 *                               "idle_ttl_limit", "rotation" (booleans), "app_name"
 *                               role 'admin': refresh token policy valid until revoked ->
 *                               expire if not used for 30d
 *   idle_window_changed         role, from, to (seconds; null: never)  role 'admin': idle
 *                               expiry never -> after 30d unused
 *   absolute_lifetime_changed   role, from, to (seconds; null: never)
 *   keep_alive_changed          role, setting ("enabled": booleans; "at", "jitter":
 *                               fractions), from, to
 *   warn_before_changed         role, from, to (seconds)
 *   session_idle_changed        role, from, to (seconds)    role 'user': session idle 30m -> 15m
 *   session_max_changed         role, from, to (seconds)
 *   can_view_policy_changed     role, from, to (booleans)
 *   can_end_sessions_changed    role, from, to (booleans)
 *   rule_removed                position (in old), role, rule
 *   rule_added                  position (in new), role, rule
 *   rule_changed                from, to (positions), role, rule, new_rule, values_added,
 *                               values_removed: the same role, claim and test, other values
 *   rule_moved                  from, to (positions), role, rule
 *                               rule 2 (admin if groups contains [gateway-admins]) moved to
 *                               position 1
 *   default_rule_changed        from, to (role names)       default rule: role 'user' -> 'guest'
 *
 * Positions are 1-based, as people count rules; rule is the rule's text ("groups contains
 * [gateway-admins]", "default"). Two rules are the same rule when they give the same role
 * for the same claim, test and set of values (the values' order does not matter, nor does the
 * order of scopes). A rule is reported as moved only when its order relative to the other
 * rules changed: a rule inserted above others does not move them. Changes come in this
 * order: sign-in, roles (removed, then each role of new in file order), rules (removed,
 * added, changed, moved, default). Both policies must stay alive while *out is built; the
 * caller frees *out with cJSON_Delete. SG_ERR_NOMEM (then *out is NULL).
 */
sg_rc sg_policy_diff(const sg_policy_t *old, const sg_policy_t *new, cJSON **out);

#endif
