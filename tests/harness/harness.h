/*
 * The end-to-end test harness (tests/harness; harness_int.h says which file does what): starts
 * real processes (sfsim, and the gateway with it) on ephemeral loopback ports, drives them over
 * real HTTP with libcurl (a cookie jar per client, redirects never followed), and offers the
 * few Salesforce-flow helpers every test needs.
 *
 * Every function that can fail returns 0 on success and -1 on failure after printing why on
 * stderr, so a test can `assert_int_equal(0, f(...))` and still read what went wrong.
 */
#ifndef SG_TEST_HARNESS_H
#define SG_TEST_HARNESS_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>
#include <cjson/cJSON.h>

/* ---- processes ---------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    char url[128];      /* "http://127.0.0.1:NNNN", from the first stdout line */
    char log_path[256]; /* the process's stderr, kept in a temp file for assertions */
} th_proc_t;

/* Starts $SFSIM --config CONFIG --listen 127.0.0.1:0 and waits (10 s max) for its first line
 * "sfsim listening on URL". config NULL means $SFSIM_DEMO_CFG. */
int th_sfsim_start(th_proc_t *p, const char *config);
/* SIGTERM, wait up to 10 s (then SIGKILL). Returns the exit status (0 for a clean exit), or
 * -1 when it had to be killed or died from a signal. Removes the log file. */
int th_proc_stop(th_proc_t *p);
/* The process's stderr so far (heap string; "" when empty). */
char *th_proc_log(const th_proc_t *p);

/* ---- HTTP ----------------------------------------------------------------------------- */

typedef struct {
    long status; /* 0 when no response arrived (connection closed, timeout) */
    char *body;  /* NUL-terminated, "" when empty */
    size_t body_len;
    char *headers;      /* raw response headers, NUL-terminated */
    char *location;     /* Location header or NULL */
    char *content_type; /* Content-Type header or NULL */
    double seconds;     /* total time */
} th_resp_t;

typedef struct th_client th_client_t; /* one browser: its own cookie jar */

th_client_t *th_client_new(void);
void th_client_free(th_client_t *c);

/*
 * One request. method "GET"/"POST"/...; content_type and body may be NULL; extra_headers is a
 * NULL-terminated array of "Name: value" strings or NULL. Never follows redirects. Timeout
 * 10 s. Returns 0 when a response (any status) arrived, -1 otherwise (out->status is then 0).
 */
int th_http(th_client_t *c, const char *method, const char *url, const char *content_type,
            const char *body, const char *const *extra_headers, th_resp_t *out);
/* Shorthands: GET, and POST of an application/x-www-form-urlencoded body. */
int th_get(th_client_t *c, const char *url, th_resp_t *out);
int th_post_form(th_client_t *c, const char *url, const char *form, th_resp_t *out);
void th_resp_free(th_resp_t *r);

/* The body parsed as JSON (caller deletes), or NULL. */
cJSON *th_resp_json(const th_resp_t *r);
/* A header's value (first occurrence, case-insensitive name), heap string or NULL. */
char *th_resp_header(const th_resp_t *r, const char *name);

/* Decoded value of a query parameter in a URL (after '?', before '#'); heap or NULL. */
char *th_url_param(const char *url, const char *name);
/* Percent-encoding of s (heap). */
char *th_enc(const char *s);
/* printf into a heap string. */
char *th_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- a server of the test's own ---------------------------------------------------------- */

/* Called for each request: head is the request line and headers (each line ends in CRLF),
 * body the first body_len bytes after them (Content-Length, at most 16 KiB in all); the
 * handler writes the whole answer to fd (th_send_all), which is closed after it returns. */
typedef void (*th_serve_fn)(void *ctx, int fd, const char *head, const char *body, size_t body_len);

typedef struct {
    int fd;
    pthread_t thread;
    pthread_mutex_t mu;
    int running;
    th_serve_fn fn;
    void *ctx;
    char url[64]; /* "http://127.0.0.1:PORT" */
} th_server_t;

/* Listens on a free loopback port and serves one connection at a time on a thread of its own
 * (webhook receivers, fake providers). 0, or -1 after a message. */
int th_server_start(th_server_t *s, th_serve_fn fn, void *ctx);
/* Stops the thread and closes the listener. */
void th_server_stop(th_server_t *s);
/* Writes all n bytes (0), or -1 when the peer went away. */
int th_send_all(int fd, const char *p, size_t n);
/* A TCP connection (close-on-exec) to url's port on 127.0.0.1, from the loopback address src
 * (127.0.0.2 ...: a stranger of its own); -1 on failure. */
int th_dial(const char *url, const char *src);

/* ---- Salesforce flows against sfsim ----------------------------------------------------- */

/* Callback registered for every demo app. */
#define TH_DEMO_CALLBACK "http://127.0.0.1:8080/oauth/callback"

typedef struct {
    const char *client_id;
    const char *redirect_uri;   /* NULL: TH_DEMO_CALLBACK */
    const char *scope;          /* NULL: no scope parameter */
    const char *state;          /* NULL: "st-123" */
    const char *nonce;          /* NULL: no nonce */
    const char *code_challenge; /* NULL: no PKCE */
    const char *prompt;         /* NULL: none */
    const char *extra;          /* raw "&k=v..." appended, or NULL */
} th_authz_t;

/* base + "/services/oauth2/authorize?response_type=code&..." (heap). */
char *th_authorize_url(const char *base, const th_authz_t *a);

/*
 * Plays the browser: GET the authorize URL; if a login form comes, post username/password to
 * it; if an approval page comes, press "Allow" (approve=1) or "Deny" (approve=0). Stops at the
 * first redirect that leaves sfsim (to redirect_uri) and returns it in *final (its location
 * holds code/state or error). Returns -1 when the flow ends anywhere else (final still holds
 * the last response, for the test to inspect).
 */
int th_browser_authorize(th_client_t *c, const char *authorize_url, const char *username,
                         const char *password, int approve, th_resp_t *final);

/* Full code flow: browser login as username and returns the code (heap) or NULL. */
char *th_get_code(const char *base, const th_authz_t *a, const char *username,
                  const char *password);

/* POST /services/oauth2/token with client_secret in the body. Returns the HTTP status
 * (0 on transport failure); *json gets the parsed body (may be NULL). */
long th_exchange_code(const char *base, const char *client_id, const char *client_secret,
                      const char *code, const char *redirect_uri, const char *code_verifier,
                      cJSON **json);
long th_refresh(const char *base, const char *client_id, const char *client_secret,
                const char *refresh_token, cJSON **json);

/* Code flow plus exchange in one: the token response JSON (caller deletes) or NULL. */
cJSON *th_authorize_and_exchange(const char *base, const char *client_id, const char *client_secret,
                                 const char *scope, const char *username, const char *password);

/* ---- sfsim test-control API ------------------------------------------------------------- */

/* POST base + path (e.g. "/_sim/reset", "/_sim/clock?advance=60"); 0 when it answered 200. */
int th_sim_post(const char *base, const char *path_and_query);
/* GET base + path as JSON (caller deletes) or NULL. */
cJSON *th_sim_get(const char *base, const char *path_and_query);
/* The demo users' and apps' names, for readable tests. */
#define TH_ALICE "alice@demo.example"
#define TH_ADMIN "admin@demo.example"
#define TH_OPS   "ops@demo.example"
#define TH_BOB   "bob@demo.example"

/* ---- the gateway stack: sfsim and scopegate together ------------------------------------ */

/*
 * One stack is a temporary folder holding a copy of demo.cfg whose demo-signin and demo-api
 * callbacks are the gateway's (public_url + "/oauth/callback"), the gateway's config, the two
 * client-secret files (0600), the policy and state_dir; sfsim runs on the org copy and
 * $SCOPEGATE serve on the config. The gateway's stderr goes to gw.log in the folder and is
 * appended to across restarts, so a test can grep everything one stack's gateway ever logged.
 * Set TH_KEEP_STACK=1 to keep the folder after th_stack_stop (its path is printed).
 */

/* Cookie names of a gateway whose public_url is http:// (https adds the __Host- prefix). */
#define TH_SESSION_COOKIE "scopegate"
#define TH_LOGIN_COOKIE   "scopegate_login"

/* The stack's policy when none is given: the demo org's policy shape. admin@ is admin
 * by preferred_username; a custom_attributes.role of "admin" (ops@) gives "auditor", so a test
 * can tell which rule matched; everyone else is "user". */
extern const char th_default_policy[];

typedef struct {
    const char *policy;           /* policy text; NULL: th_default_policy */
    const char *provider_timeout; /* NULL: "2s" */
    const char *log_level;        /* NULL: "debug" (the most the log-secrets checks can see) */
    const char *extra_config;     /* raw lines appended to the gateway config, or NULL */
    /* A JWT-bearer integration (appended for the vault's tests): when not NULL, apps gets
     * jwt = { issuer = sfsim; client_id = "demo-jwt"; client_secret_file = "jwt.secret"; }
     * and the config gets integrations = { NAME = { app = "jwt"; username = jwt_username;
     * org_id = TH_DEMO_ORG_ID; private_key_file = <demo.cfg's folder>/jwt-demo.key; }; }.
     * extra_config must then not set integrations itself. */
    const char *jwt_integration;
    const char *jwt_username; /* NULL: admin@demo.example */
} th_stack_opts_t;

typedef struct {
    th_proc_t sim, gw;
    char dir[256];          /* the temporary folder */
    char url[128];          /* the gateway's listener, "http://127.0.0.1:PORT" */
    char public_url[128];   /* its public_url (the callback's base): url, or a proxy's */
    char internal_url[128]; /* its internal listener (a new port after each restart) */
    char gw_cfg[300];       /* gateway config file */
    char policy[300];       /* policy file */
    char state_dir[300];
    char db[300];      /* state_dir/scopegate.db */
    char sim_cfg[300]; /* the org copy */
    char gw_log[256];  /* the gateway's stderr, all runs (th_proc_t.log_path size) */
    int port;          /* the gateway's public port */
} th_stack_t;

/* Writes the folder, starts sfsim then the gateway. policy_text NULL: th_default_policy. The
 * gateway's port is probed first and held until the gateway starts; when another process takes
 * it in between, the whole stack starts again (three tries). */
int th_stack_start(th_stack_t *s, const char *policy_text);
int th_stack_start_opts(th_stack_t *s, const th_stack_opts_t *opts);
/* SIGTERM to the gateway (it must exit 0), then the same config and state again. */
int th_stack_restart_gateway(th_stack_t *s);
/* Stops the gateway then sfsim and removes the folder. 0 only when both exited 0 after
 * SIGTERM (a sanitizer report makes the exit status non-zero); the gateway's log is printed
 * when it did not. Safe on a stack that never started (all zero) or half started. */
int th_stack_stop(th_stack_t *s);
/* Everything the gateway wrote on stderr so far (heap). */
char *th_stack_log(const th_stack_t *s);

/*
 * The browser's way in, up to the callback: GET /login (?rd= when rd is not NULL, encoded
 * here), follow the redirect to sfsim, log in as user/password there and press "Allow".
 * Returns the callback URL sfsim sent the browser to (heap: the gateway's
 * /oauth/callback?code=...&state=...) without requesting it, or NULL. login_out, when not
 * NULL, gets /login's answer (the authorize URL is its Location); the caller frees it.
 */
char *th_gateway_authorize(th_client_t *c, const th_stack_t *s, const char *rd, const char *user,
                           const char *password, th_resp_t *login_out);
/* th_gateway_authorize, then GET the callback: 0 when the gateway answered it with a redirect
 * and a session cookie. *final gets the callback's answer whatever happened. */
int th_gateway_signin(th_client_t *c, const th_stack_t *s, const char *rd, const char *user,
                      const char *password, th_resp_t *final);
/* Signs an admin in (who must be sent to /connect, having no live grant), follows the connect
 * page's link, approves at sfsim and takes the callback: 0 when the gateway stored a grant. */
int th_gateway_connect(th_client_t *c, const th_stack_t *s, const char *user, const char *password);
/* GET s->url + path with the client's cookies; the status (0 when no answer). */
long th_gateway_status(th_client_t *c, const th_stack_t *s, const char *path);

/* The value of cookie name in the client's jar (heap) or NULL. */
char *th_client_cookie(th_client_t *c, const char *name);
/* The value a Set-Cookie header of the response gives cookie name (heap; "" for a cookie
 * being cleared), or NULL when the response sets no such cookie. */
char *th_resp_set_cookie(const th_resp_t *r, const char *name);

/* The sum of the samples of a Prometheus metric whose label set contains every string in
 * labels (NULL-terminated, may be NULL), or -1 when no sample matches. */
double th_metric(const char *text, const char *name, const char *const *labels);

/* A free loopback TCP port, or -1. */
int th_free_port(void);
/* Writes text to path with mode (created or truncated). */
int th_write_file(const char *path, const char *text, mode_t mode);
/* The whole file (heap, NUL-terminated; *len its size when len is not NULL), or NULL. */
char *th_read_file(const char *path, size_t *len);
/* Removes dir and everything in it (symbolic links are not followed); complains on stderr. */
void th_remove_tree(const char *dir);

/*
 * A stack behind a reverse proxy the test runs itself: like th_stack_start_opts, but the
 * gateway's public_url is public_url (the proxy's address, e.g. "http://127.0.0.1:PORT", no
 * trailing slash), and so is the callback registered at sfsim (public_url + "/oauth/callback").
 * The gateway still listens on a free port of its own: s->url is that listener (what the
 * proxy forwards to; th_gateway_* helpers begin at it directly, and take the callback at
 * s->public_url, so their sign-in works only while the proxy runs), s->port its port. Stop it
 * with th_stack_stop.
 */
int th_stack_start_public(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url);

/* ---- the vault's tests ------------------------------------------------------- */

/* The demo org's id (tests/sfsim/demo.cfg). */
#define TH_DEMO_ORG_ID "00D8d000001DeMoEAK"

/* SIGKILL to the gateway (no clean shutdown: what a crash or the OOM killer does), reaped;
 * its state_dir is left as the kill left it. 0 when it died from SIGKILL. */
int th_stack_kill_gateway(th_stack_t *s);
/* th_stack_kill_gateway, then the same config and state again (s->internal_url changes). */
int th_stack_crash_restart_gateway(th_stack_t *s);
/* The internal listener's bearer key (state_dir/internal.key, trailing newline dropped; heap)
 * or NULL. */
char *th_stack_internal_key(const th_stack_t *s);

/*
 * Another instance of s's gateway, for several instances on one shared store (s's config must
 * set store): a folder of its own with s's config listening on a free port of its own, s's
 * policy, client secrets and keys (internal, vault, CSRF and login keys copied from s's
 * state_dir, as an operator copies them to every machine), the same sfsim and public_url.
 * inst->url is its own listener; stop it with th_stack_stop(inst) (sfsim stays s's).
 */
int th_stack_add_instance(const th_stack_t *s, th_stack_t *inst);
/* The same with extra_config's lines appended to the instance's config (keys s's config does
 * not set). */
int th_stack_add_instance_with(const th_stack_t *s, const char *extra_config, th_stack_t *inst);

/* ---- a PostgreSQL server of the test's own ------------------------------------------------ */

/*
 * Debian's PostgreSQL server (/usr/lib/postgresql/N/bin, the newest N) in a temporary folder:
 * initdb with scram-sha-256 and a generated password, listening on 127.0.0.1 only on a free
 * port, its unix socket in the folder, fsync off. When the test runs as root (CI does, and
 * PostgreSQL refuses root), initdb and the server run as nobody and the folder is nobody's.
 * The server is the test's child and dies with it. Two roles: an administrator the harness
 * uses itself (th_pg_exec, th_pg_query_int, th_pg_new_database) and "scopegate", the owner of
 * each database made for the tests, which url and password_file name.
 */
typedef struct {
    pid_t pid; /* the postmaster; -1 while stopped */
    int port;
    char dir[256];           /* the temporary folder: data/, the socket, server.log */
    char bin[128];           /* the server's binaries */
    char db[64];             /* the current database */
    char url[256];           /* "postgresql://scopegate@127.0.0.1:PORT/DB": no password */
    char password_file[300]; /* the password on one line; 0600, the test's user's */
    char password[64];       /* the same password, for tests that check it is never shown */
    char log_path[300];      /* the server's stderr, every run */
    uid_t uid;               /* who runs the server */
    gid_t gid;
} th_pg_t;

/* initdb, start (30 s at most) and a first database "scopegate". -1 with a message when
 * PostgreSQL's server binaries are missing (install the Debian package postgresql). */
int th_pg_start(th_pg_t *pg);
/* Fast shutdown (SIGINT to the postmaster, by its PID; 30 s, then SIGQUIT) and removes the
 * folder. 0 when the server exited 0. Safe on a server never started (all zero). */
int th_pg_stop(th_pg_t *pg);
/* Fast shutdown, keeping the data and the port, and the server started again on them: for
 * tests of a server that goes away and comes back. */
int th_pg_stop_only(th_pg_t *pg);
int th_pg_start_again(th_pg_t *pg);
int th_pg_restart(th_pg_t *pg);
/* A new empty database name (dropped first when it exists) owned by scopegate; url and db
 * point at it from now on. name: lower-case letters, digits and '_'. */
int th_pg_new_database(th_pg_t *pg, const char *name);
/* Runs sql (no parameters: the tests' own constants) as the administrator on the current
 * database; 0, or -1 with the server's message. */
int th_pg_exec(const th_pg_t *pg, const char *sql);
/* The first column of the first row of sql's answer as a number; -1 (with a message) when
 * the query fails or has no row. */
long long th_pg_query_int(const th_pg_t *pg, const char *sql);

/*
 * The first <form> in html whose action attribute is action (entity-decoded, compared
 * exactly): its fields (hidden and other valued inputs, in order) as an
 * application/x-www-form-urlencoded body (heap), or NULL when there is no such form.
 */
char *th_html_form(const char *html, const char *action);
/* The href (entity-decoded, heap) of the first <a> in html whose href starts with
 * href_prefix, or NULL. */
char *th_html_link(const char *html, const char *href_prefix);

#endif
