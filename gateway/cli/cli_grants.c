/*
 * `scopegate grants list|check|explain|report`: grant health and access review for operators.
 * The commands read the deployment config for where the running gateway's internal listener
 * is and its bearer key, and ask the gateway (GET /v1/grants, POST /v1/grants/check,
 * GET /v1/grants/ID; routes_grants.c; GET /v1/access-report, routes_report.c). They never
 * refresh a grant themselves: two processes refreshing one rotating grant would present a
 * refresh token the other already replaced, and the provider would revoke the grant.
 *
 * Exit status: 0 success (check: every live grant refreshed and none expiring soon), 1 check
 * found a dead grant, one expiring within warn_before or one it could not refresh (explain:
 * no such grant; report: the report could not be written out), 2 usage or config error, 3 the
 * gateway could not be reached.
 */
#include "cli.h"

#include "scopegate/buf.h"
#include "scopegate/config.h"
#include "scopegate/http_client.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#define EXIT_OK          SG_EXIT_OK
#define EXIT_UNHEALTHY   SG_EXIT_FAILED
#define EXIT_USAGE       SG_EXIT_USAGE
#define EXIT_UNREACHABLE SG_EXIT_UNREACHABLE

static int usage(FILE *out)
{
    fprintf(out,
            "usage: scopegate grants list --config FILE [--json] [--url URL]\n"
            "       scopegate grants check --config FILE [--json] [--url URL]\n"
            "       scopegate grants explain ID --config FILE [--json] [--url URL]\n"
            "       scopegate grants report --config FILE [--format csv|json] [--url URL]\n"
            "       scopegate grants disconnect (--user ID | --grant ID) --config FILE\n"
            "                                   [--reason TEXT] [--json] [--url URL]\n"
            "\n"
            "  list     every offline grant: id, person, org, app, state, cause of death, when\n"
            "           it was made, last refreshed and last used, uses, declared expiry\n"
            "  check    ask the gateway to refresh every live grant once (for cron and\n"
            "           monitoring): exit 0 when all are live and none expires within the\n"
            "           policy's warn_before, 1 when one is dead, expiring soon or could not be\n"
            "           refreshed, 2 usage or config error, 3 the gateway could not be reached\n"
            "  explain  why grant ID died (or how it is doing): cause, advice, evidence, figures\n"
            "  report   the access review: every grant (live and dead) with its person's role\n"
            "           under the policy in force, and every person with a live session, as one\n"
            "           CSV table (RFC 4180, a first column kind = grant|session) or, with\n"
            "           --format json (or --json), as JSON\n"
            "  disconnect  revoke, at the provider, every live grant of a person (or one grant)\n"
            "           and record the reason (incident response); exit 1 when none was live\n"
            "\n"
            "The commands talk to the running gateway's internal listener (internal_listen and\n"
            "internal_key_file of the config; with port 0, the address the gateway wrote to\n"
            "state_dir/internal.url); --url URL overrides the address. They never refresh a\n"
            "grant themselves.\n");
    return out == stderr ? EXIT_USAGE : EXIT_OK;
}

#define usage_error(...) sg_cli_usage_error(usage, __VA_ARGS__)

/* ---- formatting for people ------------------------------------------------------------------- */

static long long grant_id_of(const cJSON *g)
{
    return sg_cli_jnum(g, "grant_id");
}

static const char *state_of(const cJSON *g)
{
    const char *s = sg_cli_jstr(g, "state");
    return s ? s : "?";
}

static const char *user_of(const cJSON *g)
{
    const char *u = sg_cli_jstr(g, "username");
    return u && *u ? u : sg_cli_or_dash(sg_cli_jstr(g, "user_id"));
}

static void print_table(const cJSON *grants)
{
    static const char *const head[] = {"ID",        "USER",  "ORG",     "APP",
                                       "STATE",     "CAUSE", "CREATED", "LAST REFRESH",
                                       "LAST USED", "USES",  "EXPIRES"};
    sg_cli_table_t *t = sg_cli_table_new(11, head);
    const cJSON *g;
    cJSON_ArrayForEach(g, grants)
    {
        char id[24], uses[24], tm[4][40], exp[64];
        snprintf(id, sizeof(id), "%lld", grant_id_of(g));
        snprintf(uses, sizeof(uses), "%lld", sg_cli_jnum(g, "use_count"));
        snprintf(exp, sizeof(exp), "%s%s",
                 sg_cli_when(sg_cli_jnum(g, "expires_at"), tm[3], sizeof(tm[3])),
                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "expiring_soon")) ? " (soon)"
                                                                                    : "");
        const char *row[] = {id,
                             user_of(g),
                             sg_cli_or_dash(sg_cli_jstr(g, "org_id")),
                             sg_cli_or_dash(sg_cli_jstr(g, "app")),
                             state_of(g),
                             sg_cli_or_dash(sg_cli_jstr(g, "cause")),
                             sg_cli_when(sg_cli_jnum(g, "created"), tm[0], sizeof(tm[0])),
                             sg_cli_when(sg_cli_jnum(g, "last_refreshed"), tm[1], sizeof(tm[1])),
                             sg_cli_when(sg_cli_jnum(g, "last_used"), tm[2], sizeof(tm[2])),
                             uses,
                             exp};
        sg_cli_table_row(t, row);
    }
    sg_cli_table_print(t);
    sg_cli_table_free(t);
}

/* A figure's key that holds a time (seconds since the epoch). */
static int is_time_key(const char *key)
{
    size_t n = strlen(key);
    return strcmp(key, "created") == 0 || strncmp(key, "last_", 5) == 0 ||
           (n > 3 && strcmp(key + n - 3, "_at") == 0) || strcmp(key, "now") == 0 ||
           strcmp(key, "refresh_started") == 0 || strcmp(key, "CreatedDate") == 0;
}

/* One "  key  value" line: strings as they are, times as dates, the rest as JSON. */
static void print_field(const char *indent, const char *key, const cJSON *v)
{
    char t[40];
    if (cJSON_IsNull(v)) {
        printf("%s%-20s -\n", indent, key);
    } else if (cJSON_IsString(v)) {
        printf("%s%-20s %s\n", indent, key, v->valuestring);
    } else if (cJSON_IsNumber(v) && is_time_key(key) && v->valuedouble >= 0) {
        printf("%s%-20s %s\n", indent, key, sg_cli_when((long long)v->valuedouble, t, sizeof(t)));
    } else if (cJSON_IsObject(v)) {
        printf("%s%s\n", indent, key);
        char deeper[32];
        snprintf(deeper, sizeof(deeper), "%s  ", indent);
        const cJSON *e;
        cJSON_ArrayForEach(e, v) print_field(deeper, e->string ? e->string : "?", e);
    } else {
        char *text = cJSON_PrintUnformatted(v);
        printf("%s%-20s %s\n", indent, key, text ? text : "?");
        cJSON_free(text);
    }
}

static void print_explain(const cJSON *g)
{
    static const char *const order[] = {"state",
                                        "cause",
                                        "advice",
                                        "reason",
                                        "dead_at",
                                        "user_id",
                                        "username",
                                        "org_id",
                                        "app",
                                        "scopes",
                                        "created",
                                        "last_refreshed",
                                        "last_used",
                                        "use_count",
                                        "idle_expires_at",
                                        "absolute_expires_at",
                                        "expires_at",
                                        "expiring_soon",
                                        NULL};
    const char *user = sg_cli_jstr(g, "username");
    printf("grant %lld%s%s: %s\n", grant_id_of(g), user ? " of " : "", user ? user : "",
           state_of(g));
    for (size_t i = 0; order[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(g, order[i]);
        if (v)
            print_field("  ", order[i], v);
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, g)
    {
        if (!e->string || strcmp(e->string, "grant_id") == 0)
            continue;
        size_t i = 0;
        while (order[i] && strcmp(order[i], e->string) != 0)
            i++;
        if (order[i])
            continue;
        print_field("  ", e->string, e);
    }
}

/* ---- the commands ---------------------------------------------------------------------------- */

typedef struct {
    const char *config, *url, *id;
    const char *format;                /* report: --format's value, NULL when not given */
    const char *user, *grant, *reason; /* disconnect */
    int json;
} args_t;

static int parse_args(const char *cmd, int argc, char **argv, args_t *a, int want_id)
{
    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--json") == 0) {
            a->json = 1;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return -1;
        } else if (sg_cli_take_option(argc, argv, &i, "--config", &v)) {
            if (!v)
                return usage_error("grants %s: --config needs a FILE", cmd), 1;
            a->config = v;
        } else if (sg_cli_take_option(argc, argv, &i, "--url", &v)) {
            if (!v)
                return usage_error("grants %s: --url needs a URL", cmd), 1;
            a->url = v;
        } else if (strcmp(cmd, "report") == 0 &&
                   sg_cli_take_option(argc, argv, &i, "--format", &v)) {
            if (!v || (strcmp(v, "csv") != 0 && strcmp(v, "json") != 0))
                return usage_error("grants %s: --format takes csv or json", cmd), 1;
            a->format = v;
        } else if (strcmp(cmd, "disconnect") == 0 &&
                   sg_cli_take_option(argc, argv, &i, "--user", &v)) {
            if (!v || !*v)
                return usage_error("grants disconnect: --user needs a person's ID"), 1;
            a->user = v;
        } else if (strcmp(cmd, "disconnect") == 0 &&
                   sg_cli_take_option(argc, argv, &i, "--grant", &v)) {
            if (!v || !*v)
                return usage_error("grants disconnect: --grant needs a grant ID"), 1;
            a->grant = v;
        } else if (strcmp(cmd, "disconnect") == 0 &&
                   sg_cli_take_option(argc, argv, &i, "--reason", &v)) {
            if (!v)
                return usage_error("grants disconnect: --reason needs a TEXT"), 1;
            a->reason = v;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return usage_error("grants %s: unknown option '%s'", cmd, argv[i]), 1;
        } else if (want_id && !a->id) {
            a->id = argv[i];
        } else {
            return usage_error("grants %s: unexpected argument '%s'", cmd, argv[i]), 1;
        }
    }
    /* Without --config: $SCOPEGATE_CONFIG, then the usual place. */
    if (!a->config)
        a->config = sg_cli_default_config();
    if (!a->config)
        return usage_error("grants %s: which gateway? give --config FILE (or set "
                           "SCOPEGATE_CONFIG)",
                           cmd),
               1;
    if (a->format && a->json && strcmp(a->format, "json") != 0)
        return usage_error("grants %s: --json and --format %s disagree", cmd, a->format), 1;
    if (a->format && strcmp(a->format, "json") == 0)
        a->json = 1;
    if (strcmp(cmd, "disconnect") == 0 && !a->user && !a->grant)
        return usage_error("grants disconnect: whose? give --user ID (every live grant of the "
                           "person) or --grant ID"),
               1;
    if (a->reason && strlen(a->reason) > 256)
        return usage_error("grants disconnect: --reason is at most 256 bytes"), 1;
    if (want_id) {
        char *end = NULL;
        if (!a->id)
            return usage_error("grants %s: which grant? give its ID (see grants list)", cmd), 1;
        errno = 0;
        long long id = strtoll(a->id, &end, 10);
        if (*end || errno || id <= 0 || end == a->id)
            return usage_error("grants %s: '%s' is not a grant ID (a positive number)", cmd, a->id),
                   1;
    }
    return 0;
}

static int cmd_list(const void *args, const sg_cli_gw_t *c)
{
    const args_t *a = args;
    cJSON *j = NULL;
    long status = sg_cli_gw_call(c, "GET", "/v1/grants", NULL, &j);
    int rc = EXIT_OK;
    const cJSON *grants = cJSON_GetObjectItemCaseSensitive(j, "grants");
    if (status != 200 || !cJSON_IsArray(grants)) {
        rc = status == 200 ? EXIT_UNREACHABLE : sg_cli_gw_error(c, status, j, "grants list");
        if (status == 200)
            fprintf(stderr, "scopegate: grants list: the gateway's answer is not a grant list\n");
    } else if (a->json) {
        rc = sg_cli_print_json(j, 1) ? EXIT_UNHEALTHY : EXIT_OK;
    } else if (cJSON_GetArraySize(grants) == 0) {
        printf("no grants: nobody has connected an offline grant yet\n");
    } else {
        print_table(grants);
    }
    cJSON_Delete(j);
    return rc;
}

static int cmd_check(const void *args, const sg_cli_gw_t *c)
{
    const args_t *a = args;
    cJSON *j = NULL;
    long status = sg_cli_gw_call(c, "POST", "/v1/grants/check", NULL, &j);
    int rc;
    const cJSON *grants = cJSON_GetObjectItemCaseSensitive(j, "grants");
    if (status != 200 || !cJSON_IsArray(grants)) {
        rc = status == 200 ? EXIT_UNREACHABLE : sg_cli_gw_error(c, status, j, "grants check");
        if (status == 200)
            fprintf(stderr, "scopegate: grants check: the gateway's answer is not a check\n");
        cJSON_Delete(j);
        return rc;
    }
    int healthy = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "healthy"));
    rc = healthy ? EXIT_OK : EXIT_UNHEALTHY;
    if (a->json) {
        if (sg_cli_print_json(j, 1))
            rc = EXIT_UNHEALTHY;
        cJSON_Delete(j);
        return rc;
    }
    const cJSON *g;
    cJSON_ArrayForEach(g, grants)
    {
        const char *result = sg_cli_or_dash(sg_cli_jstr(g, "result"));
        printf("%-13s grant %lld  %s  (org %s, app %s)", result, grant_id_of(g), user_of(g),
               sg_cli_or_dash(sg_cli_jstr(g, "org_id")), sg_cli_or_dash(sg_cli_jstr(g, "app")));
        char t[40];
        if (strcmp(result, "expiring-soon") == 0)
            printf(": expires %s", sg_cli_when(sg_cli_jnum(g, "expires_at"), t, sizeof(t)));
        else if (strcmp(result, "dead") == 0)
            printf(": %s%s", sg_cli_or_dash(sg_cli_jstr(g, "cause")),
                   cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(g, "checked"))
                       ? " (died earlier; not reconnected)"
                       : "");
        printf("\n");
        const char *reason = sg_cli_jstr(g, "reason");
        if (strcmp(result, "dead") == 0 && reason)
            printf("              the provider said: %s\n", reason);
        else if (strcmp(result, "error") == 0 && reason)
            printf("              not refreshed: %s\n", reason);
        const char *advice = sg_cli_jstr(g, "advice");
        if (strcmp(result, "ok") != 0 && advice)
            printf("              %s\n", advice);
        if (strcmp(result, "dead") == 0)
            printf("              details: scopegate grants explain %lld --config %s\n",
                   grant_id_of(g), c->config);
    }
    printf("%lld grant(s) refreshed: %lld ok, %lld dead, %lld expiring soon, %lld could not be "
           "checked\n",
           sg_cli_jnum(j, "checked"), sg_cli_jnum(j, "ok"), sg_cli_jnum(j, "dead"),
           sg_cli_jnum(j, "expiring_soon"), sg_cli_jnum(j, "errors"));
    cJSON_Delete(j);
    return rc;
}

static int cmd_explain(const void *args, const sg_cli_gw_t *c)
{
    const args_t *a = args;
    cJSON *j = NULL;
    char path[64];
    snprintf(path, sizeof(path), "/v1/grants/%lld", strtoll(a->id, NULL, 10));
    long status = sg_cli_gw_call(c, "GET", path, NULL, &j);
    int rc = EXIT_OK;
    if (status != 200 || !cJSON_IsObject(j)) {
        if (status == 404 && j) {
            fprintf(stderr, "scopegate: grants explain: %s\n",
                    sg_cli_or_dash(sg_cli_jstr(j, "error_description")));
            rc = EXIT_UNHEALTHY;
        } else {
            rc = status == 200 ? EXIT_UNREACHABLE : sg_cli_gw_error(c, status, j, "grants explain");
        }
    } else if (a->json) {
        rc = sg_cli_print_json(j, 1) ? EXIT_UNHEALTHY : EXIT_OK;
    } else {
        print_explain(j);
    }
    cJSON_Delete(j);
    return rc;
}

static int cmd_disconnect(const void *args, const sg_cli_gw_t *c)
{
    const args_t *a = args;
    cJSON *body = cJSON_CreateObject(), *j = NULL;
    if (!body || (a->user && !cJSON_AddStringToObject(body, "user", a->user)) ||
        (a->grant && !cJSON_AddStringToObject(body, "grant", a->grant)) ||
        (a->reason && !cJSON_AddStringToObject(body, "reason", a->reason))) {
        cJSON_Delete(body);
        fprintf(stderr, "scopegate: out of memory\n");
        return EXIT_UNHEALTHY;
    }
    long status = sg_cli_gw_call(c, "POST", "/v1/grants/disconnect", body, &j);
    cJSON_Delete(body);
    int rc = EXIT_OK;
    if (status != 200 || !cJSON_IsObject(j)) {
        rc = status == 200 ? EXIT_UNREACHABLE : sg_cli_gw_error(c, status, j, "grants disconnect");
    } else if (a->json) {
        rc = sg_cli_print_json(j, 1) ? EXIT_UNHEALTHY : EXIT_OK;
    } else {
        long long n = sg_cli_jnum(j, "disconnected");
        printf("%lld grant%s disconnected (revoked at the provider)\n", n, n == 1 ? "" : "s");
    }
    if (rc == EXIT_OK && sg_cli_jnum(j, "disconnected") == 0) {
        fprintf(stderr, "scopegate: grants disconnect: no live grant matched\n");
        rc = EXIT_UNHEALTHY;
    }
    cJSON_Delete(j);
    return rc;
}

/* ---- the access review as CSV ---------------------------------------------------------------- */

/*
 * The columns of `grants report`'s one table, in order: kind (grant or session), then the
 * union of the grant items' and the session items' fields of GET /v1/access-report, each
 * named as in the JSON. A row leaves the columns of the other kind empty.
 */
static const char *const report_cols[] = {
    "kind",      "grant_id", "user_id",       "username",  "email",   "org_id",         "app",
    "role",      "scopes",   "state",         "cause",     "created", "last_refreshed", "last_used",
    "use_count", "sessions", "first_sign_in", "last_seen", NULL};

/*
 * One CSV field as RFC 4180 has it: quoted (with quotes doubled) when it holds a comma, a quote,
 * CR or LF. A field a spreadsheet would take for a formula (one that starts with =, +, -, @,
 * tab or CR) gets a leading single quote first, so that a name chosen by someone at the
 * provider is shown as text, never run, when an auditor opens the file.
 */
static void csv_field(FILE *out, const char *v)
{
    int guard = v[0] && strchr("=+-@\t\r", v[0]);
    int quote = strpbrk(v, ",\"\r\n") != NULL;
    if (quote)
        fputc('"', out);
    if (guard)
        fputc('\'', out);
    for (const char *p = v; *p; p++) {
        if (*p == '"')
            fputc('"', out);
        fputc(*p, out);
    }
    if (quote)
        fputc('"', out);
}

/* The text of one JSON field in a CSV cell: strings as they are, whole numbers as integers,
 * null and absent fields empty. */
static void csv_value(FILE *out, const cJSON *v)
{
    char num[32];
    if (cJSON_IsString(v)) {
        csv_field(out, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        snprintf(num, sizeof(num), "%lld", (long long)v->valuedouble);
        csv_field(out, num);
    } else if (cJSON_IsBool(v)) {
        csv_field(out, cJSON_IsTrue(v) ? "true" : "false");
    }
}

/* One row: the header when item is NULL, else kind and item's fields. */
static void csv_row(FILE *out, const char *kind, const cJSON *item)
{
    for (size_t k = 0; report_cols[k]; k++) {
        if (k)
            fputc(',', out);
        if (!item)
            csv_field(out, report_cols[k]);
        else if (k == 0)
            csv_field(out, kind);
        else
            csv_value(out, cJSON_GetObjectItemCaseSensitive(item, report_cols[k]));
    }
    fputs("\r\n", out);
}

static void print_report_csv(const cJSON *j)
{
    csv_row(stdout, NULL, NULL);
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(j, "grants"))
    {
        csv_row(stdout, "grant", item);
    }
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(j, "sessions"))
    {
        csv_row(stdout, "session", item);
    }
}

static int cmd_report(const void *args, const sg_cli_gw_t *c)
{
    const args_t *a = args;
    cJSON *j = NULL;
    long status = sg_cli_gw_call(c, "GET", "/v1/access-report", NULL, &j);
    int rc = EXIT_OK;
    if (status != 200 || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "grants")) ||
        !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "sessions"))) {
        if (status == 200)
            fprintf(stderr, "scopegate: grants report: the gateway's answer is not a report\n");
        else if (status == 404 && j)
            fprintf(stderr,
                    "scopegate: grants report: the gateway at %s has no access report: "
                    "is it an older scopegate?\n",
                    c->base);
        rc = status == 200 ? EXIT_UNREACHABLE : sg_cli_gw_error(c, status, j, "grants report");
    } else if (a->json) {
        rc = sg_cli_print_json(j, 1) ? EXIT_UNHEALTHY : EXIT_OK;
    } else {
        print_report_csv(j);
    }
    cJSON_Delete(j);
    /* A report cut short (a full disk behind the redirect) must not pass for a whole one. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "scopegate: grants report: could not write the report: %s\n",
                strerror(errno));
        if (rc == EXIT_OK)
            rc = EXIT_UNHEALTHY;
    }
    return rc;
}

int sg_cli_grants(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("grants: which command? list, check, explain, report or disconnect");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0)
        return usage(stdout);
    sg_cli_gw_fn fn = NULL;
    int want_id = 0;
    if (strcmp(cmd, "list") == 0)
        fn = cmd_list;
    else if (strcmp(cmd, "check") == 0)
        fn = cmd_check;
    else if (strcmp(cmd, "explain") == 0) {
        fn = cmd_explain;
        want_id = 1;
    } else if (strcmp(cmd, "report") == 0)
        fn = cmd_report;
    else if (strcmp(cmd, "disconnect") == 0)
        fn = cmd_disconnect;
    else
        return usage_error("grants: unknown command '%s' (list, check, explain, report or "
                           "disconnect)",
                           cmd);
    args_t a;
    int prc = parse_args(cmd, argc - 1, argv + 1, &a, want_id);
    if (prc < 0)
        return EXIT_OK; /* --help */
    if (prc > 0)
        return EXIT_USAGE;
    return sg_cli_gw_run(a.config, a.url, fn, &a);
}
