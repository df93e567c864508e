/*
 * `scopegate grants report` end to end: sfsim and `scopegate serve` as real processes, grants
 * connected and people signed in through the gateway by libcurl browsers, and the auditor's
 * report taken by running $SCOPEGATE grants report --config on the stack's own config.
 *
 * sfsim runs a copy of the demo org with two more people whose usernames a CSV must handle:
 * one with a comma, double quotes and an apostrophe (a plain user, signed in twice), and one
 * that a spreadsheet would run as a formula (an admin with a grant). Three admins connect
 * grants, one of them is revoked at sfsim and the gateway finds it dead, then a new policy
 * takes one admin's role away. The report must then match, field by field, what the
 * gateway's store holds (opened read-only beside it) and the roles the policy in force gives:
 * as CSV, parsed back with Python's csv module (RFC 4180: a header, CRLF, quoting, the
 * formula guard) and as JSON. On a PostgreSQL store shared by two instances, the report one
 * instance gives lists the sessions the other holds too. A bad --format is a usage error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <libconfig.h>
#include <libgen.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"
#include "scopegate/store.h"
#include "scopegate/vault.h"

#define ADMIN_ID   "0058d000002AdmnEAA"
#define OPS_ID     "0058d000002OpsxEAA"
#define QUOTED_ID  "0058d000002DanaEAA"
#define FORMULA_ID "0058d000002FrmlEAA"
#define QUOTED     "Dana \"Dee\" O'Neil, ops@demo.example"
#define FORMULA    "=cmd|' /C calc'!A0@demo.example"
/* QUOTED as an RFC 4180 field: quoted, its quotes doubled. */
#define CSV_QUOTED "\"Dana \"\"Dee\"\" O'Neil, ops@demo.example\""
#define API_APP    "demo-api"

static int STARTED;
static const char *KEY;
static char ORG_DIR[256]; /* the folder of the org copy sfsim runs */
/* The shared-store case: a PostgreSQL server of the test's own and a second instance. */
static th_pg_t PG;
static th_stack_t B;
static int PG_STARTED, B_STARTED;

/* The CSV's columns, in order (docs/operations.md, "Access review"). */
static const char *const COLS[] = {
    "kind",      "grant_id", "user_id",       "username",  "email",   "org_id",         "app",
    "role",      "scopes",   "state",         "cause",     "created", "last_refreshed", "last_used",
    "use_count", "sessions", "first_sign_in", "last_seen", NULL};
static const char *const GRANT_KEYS[] = {
    "grant_id", "user_id", "username", "org_id",         "app",       "role",      "scopes",
    "state",    "cause",   "created",  "last_refreshed", "last_used", "use_count", NULL};
static const char *const SESSION_KEYS[] = {"user_id",       "username",  "email",
                                           "org_id",        "role",      "sessions",
                                           "first_sign_in", "last_seen", NULL};

/* ---- the stack --------------------------------------------------------------------------------
 */

static const char *policy_for(const char *admins)
{
    return FMT("version = 1;\n"
               "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
               "roles = {\n"
               "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
               "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\", "
               "\"offline_access\"]; };\n"
               "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"
               "};\n"
               "assign = (\n"
               "  { role = \"admin\"; claim = \"preferred_username\"; in = [%s]; },\n"
               "  { role = \"user\"; }\n"
               ");\n",
               admins);
}

static void add_string(config_setting_t *group, const char *name, const char *value)
{
    config_setting_t *s = config_setting_add(group, name, CONFIG_TYPE_STRING);
    CHECK(s && config_setting_set_string(s, value), "cannot add %s to the org copy", name);
}

static void add_person(config_setting_t *users, const char *username, const char *password,
                       const char *id, const char *email, const char *profile)
{
    config_setting_t *u = config_setting_add(users, NULL, CONFIG_TYPE_GROUP);
    CHECK(u, "cannot add %s to the org copy", username);
    add_string(u, "username", username);
    add_string(u, "password", password);
    add_string(u, "id", id);
    add_string(u, "email", email);
    add_string(u, "profile", profile);
}

/* A path of the demo org made absolute, so that the copy works from another folder. */
static void absolutize(config_setting_t *group, const char *name, const char *dir)
{
    const char *v = NULL;
    if (!group || !config_setting_lookup_string(group, name, &v) || v[0] == '/')
        return;
    const char *abs = FMT("%s/%s", dir, v);
    CHECK(config_setting_set_string(config_setting_get_member(group, name), abs),
          "cannot set %s in the org copy", name);
}

/* $SFSIM_DEMO_CFG with QUOTED and FORMULA among its users, written to ORG_DIR/org.cfg. */
static const char *write_org(void)
{
    const char *src = getenv("SFSIM_DEMO_CFG");
    CHECK(src && *src, "SFSIM_DEMO_CFG is not set (meson test sets it)");
    const char *dir = dirname(keep_str(strdup(src)));
    snprintf(ORG_DIR, sizeof ORG_DIR, "/tmp/sg-report-XXXXXX");
    CHECK(mkdtemp(ORG_DIR), "cannot make a temporary folder");
    config_t cfg;
    config_init(&cfg);
    if (!config_read_file(&cfg, src)) {
        const char *why = FMT("%s:%d: %s", src, config_error_line(&cfg), config_error_text(&cfg));
        config_destroy(&cfg);
        FAILF("%s", why);
    }
    config_setting_t *users = config_lookup(&cfg, "users");
    config_setting_t *apps = config_lookup(&cfg, "apps");
    CHECK(users && apps, "%s has no users or apps", src);
    add_person(users, QUOTED, "dana", QUOTED_ID, "dana@demo.example", "Standard User");
    add_person(users, FORMULA, "formula", FORMULA_ID, "formula@demo.example",
               "System Administrator");
    for (int i = 0; i < config_setting_length(apps); i++)
        absolutize(config_setting_get_elem(apps, (unsigned)i), "jwt_certificate", dir);
    absolutize(config_lookup(&cfg, "settings"), "key_file", dir);
    const char *path = FMT("%s/org.cfg", ORG_DIR);
    int ok = config_write_file(&cfg, path);
    config_destroy(&cfg);
    CHECK(ok, "cannot write %s", path);
    return path;
}

/* The stack on the org copy; extra_config: lines for the gateway's config, or NULL. */
static void start_stack_with(const char *policy_text, const char *extra_config)
{
    /* The harness copies the org that SFSIM_DEMO_CFG names for the stack's sfsim. */
    const char *demo = keep_str(strdup(getenv("SFSIM_DEMO_CFG")));
    const char *org = write_org();
    setenv("SFSIM_DEMO_CFG", org, 1);
    th_stack_opts_t o = {.policy = policy_text, .extra_config = extra_config};
    int rc = th_stack_start_opts(&GW, &o);
    setenv("SFSIM_DEMO_CFG", demo, 1);
    CHECK(rc == 0, "the stack did not start (see above)");
    STARTED = 1;
    KEY = keep_str(th_stack_internal_key(&GW));
    CHECK(KEY && *KEY, "expected an internal key in %s", GW.state_dir);
}

static void start_stack(const char *policy_text)
{
    start_stack_with(policy_text, NULL);
}

static int setup(void **state)
{
    (void)state;
    STARTED = PG_STARTED = B_STARTED = 0;
    KEY = NULL;
    ORG_DIR[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_free_kept();
    int rc = 0;
    if (B_STARTED && th_stack_stop(&B) != 0) {
        fprintf(stderr, "the second instance did not stop cleanly (see above)\n");
        rc = -1;
    }
    B_STARTED = 0;
    if (STARTED && th_stack_stop(&GW) != 0) {
        fprintf(stderr, "the stack did not stop cleanly (see above)\n");
        rc = -1;
    }
    STARTED = 0;
    if (ORG_DIR[0])
        th_remove_tree(ORG_DIR);
    ORG_DIR[0] = '\0';
    if (PG_STARTED && th_pg_stop(&PG) != 0) {
        fprintf(stderr, "PostgreSQL did not stop cleanly (see above)\n");
        rc = -1;
    }
    PG_STARTED = 0;
    return rc;
}

/* ---- running programs -------------------------------------------------------------------------
 */

typedef struct {
    int status; /* exit status; -1 when it did not exit normally */
    const char *out, *err;
    const char *out_path; /* stdout, kept until the test ends */
    const char *cmd;      /* for messages */
} run_t;

/* argv[0] (a path, or a name looked up in PATH) with argv; stdout kept in a file of its own. */
static run_t run_prog(const char *const *argv)
{
    static int seq;
    run_t r = {.status = -1};
    const char *cmd = argv[0];
    for (size_t i = 1; argv[i]; i++)
        cmd = FMT("%s %s", cmd, argv[i]);
    r.cmd = cmd;
    r.out_path = FMT("%s/run%d.out", GW.dir, ++seq);
    const char *err_path = FMT("%s/run.err", GW.dir);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        int fo = open(r.out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = keep_str(th_read_file(r.out_path, NULL));
    r.err = keep_str(th_read_file(err_path, NULL));
    if (!r.out)
        r.out = "";
    if (!r.err)
        r.err = "";
    if (getenv("TH_SHOW_CLI")) /* to see what operators see */
        fprintf(stderr, "$ %s  -> exit %d\n%s%s", cmd, r.status, r.out, r.err);
    return r;
}

static run_t run_cli(const char *const *args)
{
    const char *bin = getenv("SCOPEGATE");
    CHECK(bin && *bin, "SCOPEGATE is not set (meson test sets it)");
    const char *argv[32] = {bin};
    size_t n = 1;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return run_prog(argv);
}

#define CLI(...) run_cli((const char *const[]){__VA_ARGS__, NULL})

static void expect_exit(const run_t *r, int want)
{
    CHECK(r->status == want, "%s: expected exit %d, got %d\nstdout:\n%.3000s\nstderr:\n%.3000s",
          r->cmd, want, r->status, r->out, r->err);
}

/*
 * Python's csv module reads the report back: strict RFC 4180 parsing into a header and rows
 * (each a dict by column), and whether every line ends in CRLF.
 */
static const char PARSE_CSV[] =
    "import csv, json, sys\n"
    "raw = open(sys.argv[1], 'rb').read()\n"
    "with open(sys.argv[1], newline='', encoding='utf-8') as f:\n"
    "    reader = csv.DictReader(f, strict=True)\n"
    "    rows = list(reader)\n"
    "bare_lf = b'\\n' in raw.replace(b'\\r\\n', b'')\n"
    "print(json.dumps({'header': reader.fieldnames, 'rows': rows,\n"
    "                  'crlf': raw.endswith(b'\\r\\n') and not bare_lf}))\n";

static cJSON *parse_csv(const char *path)
{
    run_t r = run_prog((const char *const[]){"python3", "-c", PARSE_CSV, path, NULL});
    expect_exit(&r, 0);
    cJSON *j = keep_json(cJSON_Parse(r.out));
    CHECK(j, "python3's reading of the CSV is not JSON: %s", r.out);
    return j;
}

/* ---- what the store holds -------------------------------------------------------------------
 */

/* "2026-12-07T12:00:00Z", or "" for 0 (never). */
static const char *iso(long long t)
{
    if (t <= 0)
        return "";
    time_t tt = (time_t)t;
    struct tm tm;
    char text[32];
    CHECK(gmtime_r(&tt, &tm) && strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm),
          "cannot format the time %lld", t);
    return FMT("%s", text);
}

/* The role each person has under the policy in force after the test's reload. */
static const char *role_of(const char *user_id)
{
    if (strcmp(user_id, ADMIN_ID) == 0 || strcmp(user_id, FORMULA_ID) == 0)
        return "admin";
    return "user";
}

static void put(cJSON *row, const char *col, const char *v)
{
    CHECK(cJSON_AddStringToObject(row, col, v ? v : ""), "out of memory");
}

/* A row with every column empty but kind. */
static cJSON *blank_row(cJSON *rows, const char *kind)
{
    cJSON *row = cJSON_CreateObject();
    CHECK(row && cJSON_AddItemToArray(rows, row), "out of memory");
    for (size_t k = 0; COLS[k]; k++)
        put(row, COLS[k], k == 0 ? kind : "");
    return row;
}

static void set(cJSON *row, const char *col, const char *v)
{
    CHECK(cJSON_ReplaceItemInObjectCaseSensitive(row, col, cJSON_CreateString(v ? v : "")),
          "out of memory");
}

/* One person's live sessions in the store. */
typedef struct {
    char user_id[64], username[128], email[128], org_id[64], role[32];
    long long newest, first, last;
    int n;
} person_t;

typedef struct {
    person_t p[16];
    size_t n;
    long long now;
} people_t;

static int visit_session(void *ctx, const sg_session_rec_t *rec)
{
    people_t *pp = ctx;
    if (pp->now - rec->last_seen > rec->idle_timeout || pp->now - rec->created > rec->max_lifetime)
        return 0;
    size_t i = 0;
    while (i < pp->n && strcmp(pp->p[i].user_id, rec->user_id) != 0)
        i++;
    if (i == pp->n) {
        if (pp->n == sizeof pp->p / sizeof pp->p[0])
            return 1;
        memset(&pp->p[pp->n++], 0, sizeof pp->p[0]);
        snprintf(pp->p[i].user_id, sizeof pp->p[i].user_id, "%s", rec->user_id);
        pp->p[i].first = rec->created;
    }
    person_t *p = &pp->p[i];
    p->n++;
    if (rec->created < p->first)
        p->first = rec->created;
    if (rec->last_seen > p->last)
        p->last = rec->last_seen;
    if (rec->created >= p->newest) {
        p->newest = rec->created;
        snprintf(p->username, sizeof p->username, "%s", rec->username ? rec->username : "");
        snprintf(p->email, sizeof p->email, "%s", rec->email ? rec->email : "");
        snprintf(p->org_id, sizeof p->org_id, "%s", rec->org_id ? rec->org_id : "");
        snprintf(p->role, sizeof p->role, "%s", rec->role ? rec->role : "");
    }
    return 0;
}

static int person_cmp(const void *x, const void *y)
{
    return strcmp(((const person_t *)x)->user_id, ((const person_t *)y)->user_id);
}

/*
 * The rows the report should have, as the store holds them now: every grant oldest first,
 * then one row per person with a live session, by user id. Values are the text the CSV holds
 * before its formula guard.
 */
static cJSON *store_rows(void)
{
    char err[512] = "";
    sg_store_t *st = NULL;
    if (PG_STARTED)
        CHECK(sg_store_open_pg(PG.url, PG.password_file, &st, err, sizeof err) == SG_OK,
              "cannot open the shared store %s: %s", PG.url, err);
    else
        CHECK(sg_store_open_sqlite_readonly(GW.db, &st, err, sizeof err) == SG_OK,
              "cannot open the gateway's store %s read-only: %s", GW.db, err);
    cJSON *rows = keep_json(cJSON_CreateArray());
    sg_grant_rec_t *g = NULL;
    size_t n = 0;
    sg_rc rc = st->ops->grant_list(st, &g, &n);
    people_t *pp = th_keep(calloc(1, sizeof *pp), KEPT_STR);
    CHECK(pp, "out of memory");
    pp->now = (long long)time(NULL);
    sg_rc src = rc ? rc : st->ops->session_each(st, visit_session, pp);
    st->ops->close(st);
    if (rc || src) {
        sg_grant_recs_free(g, n);
        FAILF("cannot read the store: %s", sg_rc_str(rc ? rc : src));
    }
    for (size_t i = 0; i < n; i++) {
        cJSON *row = blank_row(rows, "grant");
        set(row, "grant_id", FMT("%lld", g[i].id));
        set(row, "user_id", g[i].user_id);
        set(row, "username", g[i].username);
        set(row, "org_id", g[i].org_id);
        set(row, "app", g[i].app);
        set(row, "role", role_of(g[i].user_id));
        set(row, "scopes", g[i].scopes);
        set(row, "state", sg_vault_state_name(g[i].state));
        set(row, "cause", g[i].cause);
        set(row, "created", iso(g[i].created));
        set(row, "last_refreshed", iso(g[i].last_refreshed));
        set(row, "last_used", iso(g[i].last_used));
        set(row, "use_count", FMT("%lld", g[i].use_count));
    }
    sg_grant_recs_free(g, n);
    qsort(pp->p, pp->n, sizeof pp->p[0], person_cmp);
    for (size_t i = 0; i < pp->n; i++) {
        const person_t *p = &pp->p[i];
        CHECK(strcmp(p->role, role_of(p->user_id)) == 0,
              "the store holds the sessions of %s with role %s, the policy in force gives %s",
              p->user_id, p->role, role_of(p->user_id));
        cJSON *row = blank_row(rows, "session");
        set(row, "user_id", p->user_id);
        set(row, "username", p->username);
        set(row, "email", p->email);
        set(row, "org_id", p->org_id);
        set(row, "role", p->role);
        set(row, "sessions", FMT("%d", p->n));
        set(row, "first_sign_in", iso(p->first));
        set(row, "last_seen", iso(p->last));
    }
    return rows;
}

/* What a spreadsheet-safe CSV cell holds for v: a formula gets a leading single quote. */
static const char *guarded(const char *v)
{
    return v[0] && strchr("=+-@\t\r", v[0]) ? FMT("'%s", v) : v;
}

static const cJSON *row_of(const cJSON *rows, const char *kind, const char *key, const char *v)
{
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        if (strcmp(jstr(row, "kind"), kind) == 0 && strcmp(jstr(row, key), v) == 0)
            return row;
    }
    return NULL;
}

/* ---- the report ------------------------------------------------------------------------------
 */

/* Signs user in on inst, connects a grant through it, and returns the grant's id (what
 * /v1/token serves for the person). */
static long long connect_on(const th_stack_t *inst, const char *user, const char *password,
                            const char *user_id)
{
    CHECK(th_gateway_connect(browser(), inst, user, password) == 0,
          "%s could not connect a grant (see above)", user);
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    th_resp_t *t =
        req(NULL, "GET", FMT("%s/v1/token?user=%s", inst->internal_url, user_id), NULL, NULL, hdrs);
    expect_status(t, 200, "GET /v1/token after connecting");
    cJSON *j = keep_json(th_resp_json(t));
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "grant_id");
    CHECK(cJSON_IsNumber(id) && id->valuedouble > 0, "expected a grant_id in %s", t->body);
    return (long long)id->valuedouble;
}

/*
 * `scopegate grants report ARGS --config` GW's config, with the store read before and after
 * it: session activity the gateway writes every few seconds may land in between, and then the
 * report is taken again. *want gets the store's rows that the report must match.
 */
static run_t report(const char *args, cJSON **want)
{
    const char *argv[8] = {"grants", "report", "--config", GW.gw_cfg};
    size_t n = 4;
    char *copy = keep_str(strdup(args)), *save = NULL;
    for (char *a = strtok_r(copy, " ", &save); a && n < 7; a = strtok_r(NULL, " ", &save))
        argv[n++] = a;
    argv[n] = NULL;
    for (int tries = 0;; tries++) {
        cJSON *before = store_rows();
        run_t r = run_cli(argv);
        *want = store_rows();
        if (cJSON_Compare(before, *want, 1) || tries == 3)
            return r;
    }
}

/* The CSV report r, read back by Python's csv module, against the store's rows: its rows. */
static const cJSON *expect_csv(const run_t *r, const cJSON *want)
{
    expect_exit(r, 0);
    cJSON *csv = parse_csv(r->out_path);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(csv, "crlf")),
          "every CSV line should end in CRLF:\n%s", r->out);
    const cJSON *header = cJSON_GetObjectItemCaseSensitive(csv, "header");
    size_t k = 0;
    for (; COLS[k]; k++) {
        const cJSON *h = cJSON_GetArrayItem(header, (int)k);
        CHECK(cJSON_IsString(h) && strcmp(h->valuestring, COLS[k]) == 0,
              "CSV column %zu should be %s:\n%s", k + 1, COLS[k], r->out);
    }
    CHECK(cJSON_GetArraySize(header) == (int)k, "the CSV has more columns than documented:\n%s",
          r->out);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(csv, "rows");
    CHECK(cJSON_GetArraySize(rows) == cJSON_GetArraySize(want),
          "expected %d rows as in the store, got %d:\n%s", cJSON_GetArraySize(want),
          cJSON_GetArraySize(rows), r->out);
    for (int i = 0; i < cJSON_GetArraySize(want); i++) {
        const cJSON *w = cJSON_GetArrayItem(want, i), *got = cJSON_GetArrayItem(rows, i);
        for (k = 0; COLS[k]; k++) {
            const char *g = jstr(got, COLS[k]), *e = guarded(jstr(w, COLS[k]));
            CHECK(g && strcmp(g, e) == 0,
                  "CSV row %d (%s %s), column %s: expected \"%s\", got \"%s\"\n%s", i + 2,
                  jstr(w, "kind"), jstr(w, "user_id"), COLS[k], e, g ? g : "(none)", r->out);
        }
    }
    return rows;
}

/* The JSON report r against the store's rows: the same values, unguarded, null for nothing. */
static void expect_json(const run_t *r, const cJSON *want)
{
    expect_exit(r, 0);
    cJSON *j = keep_json(cJSON_Parse(r->out));
    CHECK(j, "%s: expected JSON, got:\n%.3000s", r->cmd, r->out);
    const char *gen = jstr(j, "generated");
    CHECK(gen && strlen(gen) == 20 && gen[10] == 'T' && gen[19] == 'Z',
          "%s: expected generated as ISO 8601 UTC: %s", r->cmd, r->out);
    CHECK(jstr(j, "policy_sha256") && strlen(jstr(j, "policy_sha256")) == 64,
          "%s: expected the policy's sha256: %s", r->cmd, r->out);
    cJSON *items = keep_json(cJSON_CreateArray());
    CHECK(items, "out of memory");
    const char *lists[] = {"grants", "sessions"}, *kinds[] = {"grant", "session"};
    const char *const *keys[] = {GRANT_KEYS, SESSION_KEYS};
    for (size_t s = 0; s < 2; s++) {
        size_t nkeys = 0;
        while (keys[s][nkeys])
            nkeys++;
        const cJSON *item;
        cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(j, lists[s]))
        {
            CHECK(cJSON_GetArraySize(item) == (int)nkeys,
                  "%s: a %s item has other fields than documented: %s", r->cmd, kinds[s], r->out);
            cJSON *row = blank_row(items, kinds[s]);
            for (size_t k = 0; k < nkeys; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, keys[s][k]);
                CHECK(v, "%s: a %s item has no %s: %s", r->cmd, kinds[s], keys[s][k], r->out);
                if (cJSON_IsString(v))
                    set(row, keys[s][k], v->valuestring);
                else if (cJSON_IsNumber(v))
                    set(row, keys[s][k], FMT("%lld", (long long)v->valuedouble));
                else
                    CHECK(cJSON_IsNull(v), "%s: %s is neither text, a number nor null: %s", r->cmd,
                          keys[s][k], r->out);
            }
        }
    }
    CHECK(cJSON_GetArraySize(items) == cJSON_GetArraySize(want), "%s: expected %d items: %s",
          r->cmd, cJSON_GetArraySize(want), r->out);
    for (int i = 0; i < cJSON_GetArraySize(want); i++) {
        const cJSON *w = cJSON_GetArrayItem(want, i), *got = cJSON_GetArrayItem(items, i);
        for (size_t k = 0; COLS[k]; k++) {
            const char *g = jstr(got, COLS[k]), *e = jstr(w, COLS[k]);
            CHECK(g && strcmp(g, e) == 0,
                  "%s: item %d (%s %s), field %s: expected \"%s\", got \"%s\"\n%s", r->cmd, i,
                  jstr(w, "kind"), jstr(w, "user_id"), COLS[k], e, g ? g : "(none)", r->out);
        }
    }
}

static void test_report_matches_the_store(void **state)
{
    (void)state;
    const char *admins = "\"admin@demo.example\", \"ops@demo.example\", \"" FORMULA "\"";
    start_stack(policy_for(admins));
    long long dead = connect_on(&GW, TH_ADMIN, "admin", ADMIN_ID);
    long long ops = connect_on(&GW, TH_OPS, "ops", OPS_ID);
    long long formula = connect_on(&GW, FORMULA, "formula", FORMULA_ID);
    /* The plain user signs in from two browsers: two sessions, one row. */
    const char *sid1 = sign_in(browser(), "/", QUOTED, "dana");
    const char *sid2 = sign_in(browser(), "/", QUOTED, "dana");

    /* An admin revokes one grant at sfsim; the gateway's check finds it dead. */
    sim_post("/_sim/revoke?username=admin%40demo.example&client_id=" API_APP);
    usleep(1100 * 1000); /* the vault refreshes one grant at most once a second */
    run_t r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 1);

    /* ops@ is an admin no more: the report gives the role the policy in force decides. */
    CHECK(th_write_file(GW.policy, policy_for("\"admin@demo.example\", \"" FORMULA "\""), 0600) ==
              0,
          "cannot write %s", GW.policy);
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    expect_status(req(NULL, "POST", FMT("%s/v1/reload", GW.internal_url), NULL, NULL, hdrs), 200,
                  "POST /v1/reload");

    /* CSV: RFC 4180, as Python's csv module reads it, and field by field the store. */
    cJSON *want = NULL;
    r = report("--format csv", &want);
    const cJSON *rows = expect_csv(&r, want);
    CHECK(cJSON_GetArraySize(rows) == 7, "expected 3 grant rows and 4 session rows:\n%s", r.out);
    CHECK(strstr(r.out, "," CSV_QUOTED ","), "the CSV should hold %s as %s:\n%s", QUOTED,
          CSV_QUOTED, r.out);

    /* What the test did, as the report says it. */
    const cJSON *g = row_of(rows, "grant", "grant_id", FMT("%lld", dead));
    CHECK(g && strcmp(jstr(g, "state"), "dead") == 0 && *jstr(g, "cause") &&
              strcmp(jstr(g, "role"), "admin") == 0,
          "the revoked grant: expected dead with a cause, role admin:\n%s", r.out);
    g = row_of(rows, "grant", "grant_id", FMT("%lld", ops));
    CHECK(g && strcmp(jstr(g, "state"), "live") == 0 && strcmp(jstr(g, "role"), "user") == 0 &&
              strcmp(jstr(g, "scopes"), "api refresh_token offline_access") == 0,
          "ops@'s grant: expected live, role user after the reload:\n%s", r.out);
    g = row_of(rows, "grant", "grant_id", FMT("%lld", formula));
    CHECK(g && strcmp(jstr(g, "username"), "'" FORMULA) == 0 &&
              strcmp(jstr(g, "role"), "admin") == 0,
          "the formula-like username should be guarded with a leading quote:\n%s", r.out);
    g = row_of(rows, "session", "user_id", QUOTED_ID);
    CHECK(g && strcmp(jstr(g, "username"), QUOTED) == 0 && strcmp(jstr(g, "sessions"), "2") == 0 &&
              strcmp(jstr(g, "role"), "user") == 0 &&
              strcmp(jstr(g, "email"), "dana@demo.example") == 0,
          "expected %s with 2 sessions, role user:\n%s", QUOTED, r.out);
    CHECK(strcmp(jstr(g, "first_sign_in"), jstr(g, "last_seen")) <= 0,
          "first sign-in after last seen:\n%s", r.out);
    g = row_of(rows, "session", "user_id", OPS_ID);
    CHECK(g && strcmp(jstr(g, "role"), "user") == 0, "ops@'s session: expected role user:\n%s",
          r.out);
    /* Nothing secret: no session id. */
    CHECK(!strstr(r.out, sid1) && !strstr(r.out, sid2), "the report shows a session id:\n%s",
          r.out);

    /* JSON, both ways of asking. */
    r = report("--format json", &want);
    expect_json(&r, want);
    r = report("--json", &want);
    expect_json(&r, want);
}

/*
 * Two instances on one PostgreSQL store: a grant connected and a session made on A, a session
 * made on B; the report A gives lists all of them, as the shared store holds them.
 */
static void test_report_on_a_shared_store(void **state)
{
    (void)state;
    CHECK(th_pg_start(&PG) == 0, "PostgreSQL did not start (see above)");
    PG_STARTED = 1;
    CHECK(th_pg_new_database(&PG, "report") == 0, "no database for the test (see above)");
    start_stack_with(
        policy_for("\"admin@demo.example\", \"" FORMULA "\""),
        FMT("store = \"%s\";\nstore_password_file = \"%s\";\n", PG.url, PG.password_file));
    CHECK(th_stack_add_instance(&GW, &B) == 0, "the second instance did not start (see above)");
    B_STARTED = 1;
    long long gid = connect_on(&GW, TH_ADMIN, "admin", ADMIN_ID);
    th_resp_t *fin = new_resp();
    CHECK(th_gateway_signin(browser(), &B, "/", QUOTED, "dana", fin) == 0,
          "%s could not sign in on B (see above)", QUOTED);

    cJSON *want = NULL;
    run_t r = report("", &want);
    const cJSON *rows = expect_csv(&r, want);
    CHECK(cJSON_GetArraySize(rows) == 3, "expected a grant row and two session rows:\n%s", r.out);
    const cJSON *g = row_of(rows, "grant", "grant_id", FMT("%lld", gid));
    CHECK(g && strcmp(jstr(g, "role"), "admin") == 0 && strcmp(jstr(g, "state"), "live") == 0,
          "the admin's grant: expected live, role admin:\n%s", r.out);
    g = row_of(rows, "session", "user_id", QUOTED_ID);
    CHECK(g && strcmp(jstr(g, "username"), QUOTED) == 0 && strcmp(jstr(g, "sessions"), "1") == 0,
          "the session made on B should be in A's report:\n%s", r.out);
    r = report("--json", &want);
    expect_json(&r, want);
}

static void test_usage_errors(void **state)
{
    (void)state;
    start_stack(NULL);
    /* Nobody has signed in: the header alone. */
    run_t r = CLI("grants", "report", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    CHECK(strncmp(r.out, "kind,grant_id,", 14) == 0 && strcmp(strstr(r.out, "\r\n"), "\r\n") == 0,
          "an empty report is its header line: %s", r.out);

    r = CLI("grants", "report", "--config", GW.gw_cfg, "--format", "xml");
    expect_exit(&r, 2);
    CHECK(strstr(r.err, "--format takes csv or json"), "a bad --format: %s", r.err);
    r = CLI("grants", "report", "--config", GW.gw_cfg, "--format");
    expect_exit(&r, 2);
    r = CLI("grants", "report", "--config", GW.gw_cfg, "--json", "--format", "csv");
    expect_exit(&r, 2);
    r = CLI("grants", "list", "--config", GW.gw_cfg, "--format", "csv");
    expect_exit(&r, 2);
    r = CLI("grants", "report", "--config", FMT("%s/no-such.cfg", GW.dir));
    expect_exit(&r, 2);
    r = CLI("grants", "report", "--config", GW.gw_cfg, "--format=json");
    expect_exit(&r, 0);
    CHECK(strstr(r.out, "\"sessions\""), "--format=json: %s", r.out);

    int port = th_free_port();
    CHECK(port > 0, "no free port");
    r = CLI("grants", "report", "--config", GW.gw_cfg, "--url", FMT("http://127.0.0.1:%d", port));
    expect_exit(&r, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_report_matches_the_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_on_a_shared_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_errors, setup, teardown),
    };
    return cmocka_run_group_tests_name("grants report", tests, NULL, NULL);
}
