/*
 * `scopegate sessions list|end`: who is signed in, and signing people out everywhere (a stolen
 * laptop, a departure). The commands ask the running gateway through its internal listener
 * (GET /v1/sessions, POST /v1/sessions/end; routes_sessions.c), since only the gateway can
 * take a session out of its memory at once and tell the other instances on a shared store.
 *
 * A session is named by the first 12 hex digits of its id hash (SHA-256 of the cookie: the
 * gateway never keeps the cookie); `end --session-id-prefix` takes at least 8 digits, so a
 * slip of the keyboard cannot end many sessions.
 *
 * Exit status: 0 done, 1 no session matched (nothing listed, nothing ended), 2 usage or
 * config error, 3 the gateway could not be reached.
 */
#include "cli.h"

#include "scopegate/http.h"
#include "scopegate/http_client.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFIX_MIN  8  /* hex digits of an id hash prefix that may end sessions */
#define PREFIX_MAX  64 /* a whole id hash */
#define REASON_MAX  500
#define BROWSER_COL 40 /* bytes of the browser column of the table */

static int usage(FILE *out)
{
    fprintf(out,
            "usage: scopegate sessions list [--user ID | --email E] --config FILE [--json] "
            "[--url URL]\n"
            "       scopegate sessions end (--user ID | --email E | --session-id-prefix P | "
            "--all)\n"
            "                              --config FILE [--reason TEXT] [--url URL]\n"
            "\n"
            "  list  the live sessions (of one person with --user or --email): session id (the\n"
            "        first 12 hex digits of its id hash), person, role, browser, when it\n"
            "        started, was last seen and expires; --json gives everything, the whole\n"
            "        id hash included\n"
            "  end   signs them out everywhere at once (their next request goes to sign-in):\n"
            "        every session of a person (--user, --email), one session\n"
            "        (--session-id-prefix: at least 8 hex digits of its id, from list), or\n"
            "        every session of everyone (--all, spelled out; no confirmation). --reason\n"
            "        goes to the audit log with the count. It does not disconnect API grants.\n"
            "\n"
            "Exit status: 0 done, 1 no session matched (nothing listed or ended), 2 usage or\n"
            "config error, 3 the gateway could not be reached.\n"
            "\n"
            "The commands talk to the running gateway's internal listener (internal_listen and\n"
            "internal_key_file of the config; with port 0, the address the gateway wrote to\n"
            "state_dir/internal.url); --url URL overrides the address.\n");
    return out == stderr ? SG_EXIT_USAGE : SG_EXIT_OK;
}

#define usage_error(...) sg_cli_usage_error(usage, __VA_ARGS__)

typedef struct {
    const char *config, *url, *user, *email, *reason;
    char prefix[PREFIX_MAX + 1]; /* lower-cased; "" when not given */
    int json, all;
} args_t;

/* ---- arguments ------------------------------------------------------------------------------ */

static int take_prefix(const char *cmd, const char *v, args_t *a)
{
    size_t n = strlen(v);
    if (n < PREFIX_MIN || n > PREFIX_MAX || strspn(v, "0123456789abcdefABCDEF") != n) {
        usage_error("sessions %s: --session-id-prefix takes 8 to 64 hex digits of a session's id "
                    "(see sessions list), not '%s'",
                    cmd, v);
        return -1;
    }
    for (size_t i = 0; i <= n; i++)
        a->prefix[i] = (char)tolower((unsigned char)v[i]);
    return 0;
}

/* 0 parsed, -1 --help (answered), 1 usage error (said). */
static int parse_args(const char *cmd, int end, int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0) {
            usage(stdout);
            return -1;
        } else if (!end && strcmp(arg, "--json") == 0) {
            a->json = 1;
        } else if (end && strcmp(arg, "--all") == 0) {
            a->all = 1;
        } else if (sg_cli_take_option(argc, argv, &i, "--config", &v)) {
            if (!v)
                return usage_error("sessions %s: --config needs a FILE", cmd), 1;
            a->config = v;
        } else if (sg_cli_take_option(argc, argv, &i, "--url", &v)) {
            if (!v)
                return usage_error("sessions %s: --url needs a URL", cmd), 1;
            a->url = v;
        } else if (sg_cli_take_option(argc, argv, &i, "--user", &v)) {
            if (!v || !*v)
                return usage_error("sessions %s: --user needs a person's user ID", cmd), 1;
            a->user = v;
        } else if (sg_cli_take_option(argc, argv, &i, "--email", &v)) {
            if (!v || !*v)
                return usage_error("sessions %s: --email needs an address", cmd), 1;
            a->email = v;
        } else if (end && sg_cli_take_option(argc, argv, &i, "--session-id-prefix", &v)) {
            if (!v)
                return usage_error("sessions end: --session-id-prefix needs hex digits"), 1;
            if (take_prefix(cmd, v, a))
                return 1;
        } else if (end && sg_cli_take_option(argc, argv, &i, "--reason", &v)) {
            if (!v)
                return usage_error("sessions end: --reason needs a TEXT"), 1;
            if (strlen(v) > REASON_MAX)
                return usage_error("sessions end: --reason is longer than %d bytes", REASON_MAX), 1;
            a->reason = v;
        } else if (arg[0] == '-') {
            return usage_error("sessions %s: unknown option '%s'", cmd, arg), 1;
        } else {
            return usage_error("sessions %s: unexpected argument '%s'", cmd, arg), 1;
        }
    }
    int given = (a->user != NULL) + (a->email != NULL) + (a->prefix[0] != '\0') + a->all;
    if (end && given != 1)
        return usage_error("sessions end: whose sessions? give exactly one of --user ID, --email "
                           "E, --session-id-prefix P or --all"),
               1;
    if (!end && given > 1)
        return usage_error("sessions list: give --user or --email, not both"), 1;
    if (!a->config)
        a->config = sg_cli_default_config();
    if (!a->config)
        return usage_error("sessions %s: which gateway? give --config FILE (or set "
                           "SCOPEGATE_CONFIG)",
                           cmd),
               1;
    return 0;
}

/* ---- sessions list ----------------------------------------------------------------------------
 */

/* s cut to at most max bytes on a character's start, "..." marking a cut. */
static void cut(char *dst, size_t cap, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max || max < 4) {
        snprintf(dst, cap, "%.*s", (int)(n <= max ? n : max), s);
        return;
    }
    size_t k = max - 3;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    snprintf(dst, cap, "%.*s...", (int)k, s);
}

static int print_table(const cJSON *sessions)
{
    static const char *const head[] = {"SESSION", "USER ID", "PERSON",    "ROLE",
                                       "BROWSER", "STARTED", "LAST SEEN", "EXPIRES"};
    sg_cli_table_t *t = sg_cli_table_new(8, head);
    const cJSON *s;
    cJSON_ArrayForEach(s, sessions)
    {
        char cell[5][128], tm[3][40];
        const char *person = sg_cli_jstr(s, "username");
        if (!person || !*person)
            person = sg_cli_jstr(s, "email");
        cut(cell[0], sizeof(cell[0]), sg_cli_or_dash(sg_cli_jstr(s, "session_id")), 12);
        cut(cell[1], sizeof(cell[1]), sg_cli_or_dash(sg_cli_jstr(s, "user_id")), 64);
        cut(cell[2], sizeof(cell[2]), sg_cli_or_dash(person), 64);
        cut(cell[3], sizeof(cell[3]), sg_cli_or_dash(sg_cli_jstr(s, "role")), 32);
        cut(cell[4], sizeof(cell[4]), sg_cli_or_dash(sg_cli_jstr(s, "browser")), BROWSER_COL);
        const char *row[] = {cell[0],
                             cell[1],
                             cell[2],
                             cell[3],
                             cell[4],
                             sg_cli_when(sg_cli_jnum(s, "created"), tm[0], sizeof(tm[0])),
                             sg_cli_when(sg_cli_jnum(s, "last_seen"), tm[1], sizeof(tm[1])),
                             sg_cli_when(sg_cli_jnum(s, "expires_at"), tm[2], sizeof(tm[2]))};
        sg_cli_table_row(t, row);
    }
    int rc = sg_cli_table_print(t);
    sg_cli_table_free(t);
    return rc;
}

static int cmd_list(const void *args, const sg_cli_gw_t *c)
{
    const args_t *a = args;
    char *path = NULL;
    const char *key = a->user ? "user" : a->email ? "email" : NULL;
    char *enc = key ? sg_url_encode(a->user ? a->user : a->email) : NULL;
    if ((key && !enc) || asprintf(&path, "/v1/sessions%s%s%s%s", key ? "?" : "", key ? key : "",
                                  key ? "=" : "", enc ? enc : "") < 0) {
        free(enc);
        fprintf(stderr, "scopegate: out of memory\n");
        return SG_EXIT_USAGE;
    }
    free(enc);
    cJSON *j = NULL;
    long status = sg_cli_gw_call(c, "GET", path, NULL, &j);
    free(path);
    const cJSON *sessions = cJSON_GetObjectItemCaseSensitive(j, "sessions");
    int rc = SG_EXIT_OK;
    if (status != 200 || !cJSON_IsArray(sessions)) {
        rc = status == 200 ? SG_EXIT_UNREACHABLE : sg_cli_gw_error(c, status, j, "sessions list");
        if (status == 200)
            fprintf(stderr, "scopegate: sessions list: the gateway's answer is not a list\n");
    } else if (a->json) {
        rc = cJSON_GetArraySize(sessions) ? SG_EXIT_OK : SG_EXIT_FAILED;
        if (sg_cli_print_json(j, 1))
            rc = SG_EXIT_USAGE;
    } else if (cJSON_GetArraySize(sessions) == 0) {
        if (key)
            printf("no session matched: %s %s is not signed in anywhere\n",
                   a->user ? "user" : "email", a->user ? a->user : a->email);
        else
            printf("no session matched: nobody is signed in\n");
        rc = SG_EXIT_FAILED;
    } else if (print_table(sessions)) {
        rc = SG_EXIT_USAGE;
    }
    cJSON_Delete(j);
    return rc;
}

/* ---- sessions end -----------------------------------------------------------------------------
 */

static int cmd_end(const void *args, const sg_cli_gw_t *c)
{
    const args_t *a = args;
    cJSON *req = cJSON_CreateObject();
    int ok = req != NULL;
    if (ok && a->user)
        ok = cJSON_AddStringToObject(req, "user", a->user) != NULL;
    else if (ok && a->email)
        ok = cJSON_AddStringToObject(req, "email", a->email) != NULL;
    else if (ok && a->prefix[0])
        ok = cJSON_AddStringToObject(req, "session_id_prefix", a->prefix) != NULL;
    else if (ok)
        ok = cJSON_AddTrueToObject(req, "all") != NULL;
    if (ok && a->reason)
        ok = cJSON_AddStringToObject(req, "reason", a->reason) != NULL;
    if (!ok) {
        cJSON_Delete(req);
        fprintf(stderr, "scopegate: out of memory\n");
        return SG_EXIT_USAGE;
    }
    cJSON *j = NULL;
    long status = sg_cli_gw_call(c, "POST", "/v1/sessions/end", req, &j);
    cJSON_Delete(req);
    const cJSON *ended = cJSON_GetObjectItemCaseSensitive(j, "ended");
    int rc;
    if (status != 200 || !cJSON_IsNumber(ended)) {
        rc = status == 200 ? SG_EXIT_UNREACHABLE : sg_cli_gw_error(c, status, j, "sessions end");
        if (status == 200)
            fprintf(stderr, "scopegate: sessions end: the gateway's answer has no count\n");
        cJSON_Delete(j);
        return rc;
    }
    long long n = (long long)ended->valuedouble;
    const char *kind = a->user ? "user " : a->email ? "email " : a->prefix[0] ? "session id " : "";
    const char *who = a->user        ? a->user
                      : a->email     ? a->email
                      : a->prefix[0] ? a->prefix
                                     : "everyone";
    if (n == 0) {
        fprintf(stderr, "scopegate: sessions end: no session matched (%s%s); nothing ended\n", kind,
                who);
        rc = SG_EXIT_FAILED;
    } else {
        printf("%lld session%s ended (%s%s): signed out everywhere at once\n", n, n == 1 ? "" : "s",
               kind, who);
        rc = SG_EXIT_OK;
    }
    cJSON_Delete(j);
    return rc;
}

int sg_cli_sessions(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("sessions: which command? list or end");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0)
        return usage(stdout);
    int end;
    if (strcmp(cmd, "list") == 0)
        end = 0;
    else if (strcmp(cmd, "end") == 0)
        end = 1;
    else
        return usage_error("sessions: unknown command '%s' (list or end)", cmd);
    args_t a;
    int prc = parse_args(cmd, end, argc - 1, argv + 1, &a);
    if (prc < 0)
        return SG_EXIT_OK; /* --help */
    if (prc > 0)
        return SG_EXIT_USAGE;
    return sg_cli_gw_run(a.config, a.url, end ? cmd_end : cmd_list, &a);
}
