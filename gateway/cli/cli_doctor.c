/*
 * `scopegate doctor --config FILE`: the first-contact check of a deployment against the real
 * providers, before anyone signs in. Each check prints one line "ok|warn|fail  WHAT: detail",
 * and for a warning or a failure an indented "fix:" line saying what to do. Exit 0 when nothing
 * failed (warnings allowed), 1 when something did, 2 for usage.
 *
 * Every provider call goes through the gateway's own OIDC client (scopegate/oidc.h) with the
 * configured provider_timeout, so the doctor sees what the gateway will see. It creates,
 * migrates and changes nothing: a missing file the gateway would create is said, not made.
 * No secret is printed: client secrets stay in the OIDC client, and the webhook URL (whose
 * path is often its secret) is shown by its host only.
 */
#include "cli.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "scopegate/config.h"
#include "scopegate/http_client.h"
#include "scopegate/jose.h"
#include "scopegate/log.h"
#include "scopegate/oidc.h"
#include "scopegate/policy.h"
#include "scopegate/store.h"
#include "scopegate/text.h"

#define CALLBACK_PATH  "/oauth/callback"
#define INVENTED_CODE  "scopegate-doctor-not-a-real-code"
#define DOCTOR_STATE   "scopegate-doctor"
#define CLOCK_WARN_S   5 /* a synchronised clock is within a second or two */
#define PAGE_MAX       ((size_t)2 * 1024 * 1024)
#define DISCOVERY_PATH "/.well-known/openid-configuration"

enum { OK, WARN, FAIL };

typedef struct {
    const sg_config_t *cfg;
    const char *config_path;
    int n[3]; /* checks per outcome */
} doctor_t;

static int usage(FILE *out)
{
    fprintf(out, "usage: scopegate doctor [--config FILE]\n"
                 "  checks a deployment against its providers before the first sign-in: each\n"
                 "  app's discovery, keys, clock, client credentials and callback URL, the\n"
                 "  policy, the key files' and state_dir's permissions, the store and the\n"
                 "  webhook. One line per check: ok|warn|fail  WHAT: detail, then how to fix.\n"
                 "  Exit 0 nothing failed (warnings allowed), 1 something failed, 2 usage.\n"
                 "  FILE defaults to $SCOPEGATE_CONFIG, then /etc/scopegate/scopegate.cfg.\n");
    return out == stderr ? SG_EXIT_USAGE : SG_EXIT_OK;
}

static void report(doctor_t *d, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void report(doctor_t *d, int level, const char *fmt, ...)
{
    static const char *const word[] = {"ok", "warn", "fail"};
    d->n[level]++;
    printf("%-4s  ", word[level]);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static void fix(const char *fmt, ...)
{
    printf("      fix: ");
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* ---- files and folders --------------------------------------------------------------- */

static const char *user_name(uid_t uid, char *buf, size_t len)
{
    struct passwd *pw = getpwuid(uid);
    if (pw && pw->pw_name)
        snprintf(buf, len, "%s", pw->pw_name);
    else
        snprintf(buf, len, "uid %u", (unsigned)uid);
    return buf;
}

/*
 * A file (or folder, dir) that must be private to its owner. made_by_gateway: the gateway
 * creates it when missing, so missing is fine when it can be created.
 */
static void check_private(doctor_t *d, const char *what, const char *path, int dir,
                          int made_by_gateway)
{
    const char *mode_want = dir ? "0700" : "0600";
    struct stat st;
    if (stat(path, &st) != 0) {
        int missing = errno == ENOENT;
        char blocker[4200];
        if (missing && made_by_gateway &&
            sg_path_creatable(path, dir, blocker, sizeof(blocker)) == 0) {
            report(d, OK,
                   "%s: %s is not there yet; the gateway creates it (mode %s) at its "
                   "first start",
                   what, path, mode_want);
        } else if (missing && made_by_gateway) {
            report(d, FAIL, "%s: %s is missing and cannot be created: %s", what, path, blocker);
            char folder[4096];
            snprintf(folder, sizeof(folder), "%s", path);
            char *slash = strrchr(folder, '/');
            if (!dir && slash && slash != folder)
                *slash = '\0';
            fix("make %s a folder the gateway's user may write in (install -d -m 0700 -o USER "
                "%s), or point the config elsewhere",
                folder, folder);
        } else {
            report(d, FAIL, "%s: %s: %s", what, path, strerror(errno));
            fix("check the path in %s", d->config_path);
        }
        return;
    }
    if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
        report(d, FAIL, "%s: %s is not a %s", what, path, dir ? "folder" : "regular file");
        fix("point the config at a %s, or move what is there away",
            dir ? "folder" : "regular file");
        return;
    }
    char owner[64], me[64];
    user_name(st.st_uid, owner, sizeof(owner));
    unsigned mode = (unsigned)(st.st_mode & 0777);
    if (st.st_mode & 077) {
        const char *who = (st.st_mode & 070) && (st.st_mode & 07) ? "its group and other users"
                          : (st.st_mode & 070)                    ? "its group"
                                                                  : "other users";
        report(d, WARN, "%s: %s: mode %04o, owner %s: %s may %s it", what, path, mode, owner, who,
               (st.st_mode & 044) ? "read" : "use");
        fix("chmod %s %s", dir ? "700" : "600", path);
        return;
    }
    if (st.st_uid != geteuid() && geteuid() != 0) {
        report(d, WARN, "%s: %s: mode %04o, owned by %s, not by %s who runs this check", what, path,
               mode, owner, user_name(geteuid(), me, sizeof(me)));
        fix("run the gateway (and this check) as %s, or chown %s", owner, path);
        return;
    }
    report(d, OK, "%s: %s: mode %04o, owner %s", what, path, mode, owner);
}

/* ---- one app at its provider ----------------------------------------------------------- */

/* "issuer" without its trailing slash + the discovery path, as the OIDC client asks it. */
static void discovery_url(const char *issuer, char *out, size_t len)
{
    size_t n = strlen(issuer);
    if (n > 0 && issuer[n - 1] == '/')
        n--;
    snprintf(out, len, "%.*s%s", (int)n, issuer, DISCOVERY_PATH);
}

static void check_keys(doctor_t *d, const sg_app_config_t *app, sg_oidc_t *op)
{
    size_t nkeys = 0;
    sg_oidc_err_t err;
    if (sg_oidc_fetch_keys(op, &nkeys, &err) != SG_OK) {
        report(d, FAIL, "%s: keys: the provider's signing keys (jwks_uri) could not be read: %s",
               app->name, err.description);
        fix("no sign-in can be verified without them: check that this host reaches the "
            "jwks_uri of the discovery document; a 5xx is the provider's own outage");
    } else if (nkeys == 0) {
        report(d, FAIL,
               "%s: keys: the provider's key set (jwks_uri) holds no usable RS256 "
               "signing key",
               app->name);
        fix("ID tokens cannot be verified: is issuer the right provider?");
    } else {
        report(d, OK, "%s: keys: %zu usable signing key%s (RS256)", app->name, nkeys,
               nkeys == 1 ? "" : "s");
    }
}

static void check_clock(doctor_t *d, const sg_app_config_t *app, sg_oidc_t *op)
{
    long long off = 0;
    if (sg_oidc_clock_offset(op, &off) != SG_OK) {
        report(d, WARN,
               "%s: clock: the provider's answers carry no Date header; the clock "
               "was not compared",
               app->name);
        fix("make sure this host's clock is synchronised (NTP)");
        return;
    }
    long long skew = d->cfg->clock_skew;
    long long mag = off < 0 ? -off : off;
    /* off is the provider's clock minus ours: positive, ours is behind. */
    const char *way = off > 0 ? "behind" : "ahead of";
    if (mag > skew) {
        report(d, FAIL,
               "%s: clock: this host's clock is %lld s %s the provider's (ID tokens "
               "allow %lld s: clock_skew); sign-ins will fail",
               app->name, mag, way, skew);
        fix("synchronise this host's clock (NTP: timedatectl set-ntp true, or chrony)");
    } else if (mag > CLOCK_WARN_S) {
        report(d, WARN,
               "%s: clock: this host's clock is %lld s %s the provider's (ID tokens "
               "allow %lld s: clock_skew)",
               app->name, mag, way, skew);
        fix("synchronise this host's clock (NTP: timedatectl set-ntp true, or chrony)");
    } else {
        report(d, OK, "%s: clock: within %lld s of the provider's (its Date header)", app->name,
               mag);
    }
}

/*
 * The client id and secret: a code exchange with an invented code. Client authentication
 * comes before the code at the token endpoint, so invalid_grant means the client passed.
 */
static void check_credentials(doctor_t *d, const sg_app_config_t *app, sg_oidc_t *op,
                              const char *redirect_uri)
{
    sg_tokens_t tok;
    sg_oidc_err_t err;
    sg_rc rc = sg_oidc_exchange_code(op, INVENTED_CODE, redirect_uri, NULL, &tok, &err);
    if (rc == SG_OK) {
        sg_tokens_free(&tok);
        report(d, WARN, "%s: credentials: the token endpoint gave tokens for an invented code",
               app->name);
        fix("this provider does not check codes: is issuer really the provider you mean?");
        return;
    }
    const char *secret = app->client_secret_file ? app->client_secret_file : "(none)";
    if (strcmp(err.error, "invalid_grant") == 0) {
        report(d, OK,
               "%s: credentials: client_id %s and its secret accepted (the invented "
               "code was refused: invalid_grant)",
               app->name, app->client_id);
    } else if (strcmp(err.error, "invalid_client_id") == 0) {
        report(d, FAIL,
               "%s: credentials: the provider does not know client_id %s "
               "(invalid_client_id: %s)",
               app->name, app->client_id, err.description);
        fix("set client_id of app %s to the Connected App's Consumer Key (and check that the "
            "app is installed in the org)",
            app->name);
    } else if (strcmp(err.error, "invalid_client") == 0 || err.http_status == 401) {
        report(d, FAIL,
               "%s: credentials: the token endpoint refused client_id %s and its "
               "secret (%s: %s)",
               app->name, app->client_id, err.error, err.description);
        fix("check client_id and the secret in %s (the Connected App's Consumer Key and "
            "Consumer Secret, one line)",
            secret);
    } else if (err.http_status == 0) {
        report(d, FAIL, "%s: credentials: no answer from the token endpoint: %s", app->name,
               err.description);
        fix("check that this host reaches the token_endpoint of the discovery document");
    } else {
        report(d, WARN,
               "%s: credentials: the token endpoint answered HTTP %d %s: %s; it does "
               "not say whether client_id and secret are right",
               app->name, err.http_status, err.error, err.description);
        fix("read the answer above; a first sign-in will show whether they work");
    }
}

/* Is needle somewhere in the first len bytes of hay? */
static int has(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (!hay || len < n)
        return 0;
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return 1;
    return 0;
}

/*
 * The callback URL: the authorize endpoint, asked as a browser would be sent (no redirect
 * followed). Salesforce shows its login page (200, or a redirect to it) for a registered
 * redirect_uri and an error page naming redirect_uri_mismatch (or a redirect to one) for any
 * other; an error about the request itself comes back to the redirect_uri, which proves it
 * registered too.
 */
static void check_callback(doctor_t *d, const sg_app_config_t *app, sg_oidc_t *op,
                           const char *redirect_uri)
{
    sg_oidc_err_t err;
    char *url =
        sg_oidc_authorize_url(op, redirect_uri, "openid", DOCTOR_STATE, NULL, NULL, NULL, &err);
    if (!url) {
        report(d, FAIL, "%s: callback: no authorize URL: %s", app->name, err.description);
        fix("see the discovery line above");
        return;
    }
    sg_http_req_t req = {.method = "GET",
                         .url = url,
                         .timeout_ms = d->cfg->provider_timeout_ms,
                         .max_body = PAGE_MAX};
    sg_http_resp_t resp;
    sg_http_err_t herr;
    sg_rc rc = sg_http_call(&req, &resp, &herr);
    free(url);
    if (rc != SG_OK) {
        report(d, FAIL, "%s: callback: no answer from the authorize endpoint: %s", app->name,
               herr.description);
        fix("check that this host reaches the authorization_endpoint of the discovery "
            "document");
        return;
    }
    const char *loc = resp.location;
    size_t loclen = strlen(loc);
    int redirect = resp.status >= 300 && resp.status < 400;
    if (has(resp.body.ptr, resp.body.len, "redirect_uri_mismatch") ||
        has(loc, loclen, "redirect_uri_mismatch")) {
        report(d, FAIL,
               "%s: callback: the provider refuses redirect_uri %s "
               "(redirect_uri_mismatch)",
               app->name, redirect_uri);
        fix("register %s as a Callback URL of the Connected App %s (exactly; or correct "
            "public_url)",
            redirect_uri, app->client_id);
    } else if (has(resp.body.ptr, resp.body.len, "invalid_client_id") ||
               has(loc, loclen, "invalid_client_id")) {
        report(d, FAIL,
               "%s: callback: the authorize endpoint does not know client_id %s "
               "(invalid_client_id)",
               app->name, app->client_id);
        fix("set client_id of app %s to the Connected App's Consumer Key", app->name);
    } else if (redirect && strncmp(loc, redirect_uri, strlen(redirect_uri)) == 0) {
        report(d, OK, "%s: callback: %s is registered (the provider answers to it)", app->name,
               redirect_uri);
    } else if (resp.status == 200 || redirect) {
        report(d, OK, "%s: callback: %s is registered (the provider shows its login page)",
               app->name, redirect_uri);
    } else {
        report(d, WARN,
               "%s: callback: the authorize endpoint answered HTTP %ld; whether %s is "
               "registered is not known",
               app->name, resp.status, redirect_uri);
        fix("check that %s is a Callback URL of the Connected App %s", redirect_uri,
            app->client_id);
    }
    sg_http_resp_free(&resp);
}

static void check_end_session(doctor_t *d, const sg_app_config_t *app, sg_oidc_t *op)
{
    if (app->end_session_endpoint) {
        report(d, OK, "%s: sign-out: end_session_endpoint %s (configured)", app->name,
               app->end_session_endpoint);
    } else if (sg_oidc_can_end_session(op)) {
        report(d, OK, "%s: sign-out: the discovery document names an end_session_endpoint",
               app->name);
    } else {
        report(d, FAIL,
               "%s: sign-out: signout_provider is on, but the provider names no "
               "end_session_endpoint",
               app->name);
        fix("set end_session_endpoint for app %s (Salesforce: https://MY-DOMAIN/services/auth/"
            "idp/oidc/logout), or turn signout_provider off",
            app->name);
    }
}

static void check_app(doctor_t *d, const sg_app_config_t *app, int signout)
{
    const sg_config_t *cfg = d->cfg;
    char redirect_uri[4096], disco[2048];
    snprintf(redirect_uri, sizeof(redirect_uri), "%s%s", cfg->public_url, CALLBACK_PATH);
    discovery_url(app->issuer, disco, sizeof(disco));
    sg_oidc_opts_t o = {.issuer = app->issuer,
                        .client_id = app->client_id,
                        .client_secret = app->client_secret,
                        .timeout_ms = cfg->provider_timeout_ms,
                        .clock_skew = cfg->clock_skew,
                        .allow_http = cfg->allow_http_issuer,
                        .end_session_endpoint = app->end_session_endpoint};
    sg_oidc_t *op = NULL;
    sg_rc rc = sg_oidc_new(&o, &op);
    if (rc != SG_OK) {
        report(d, FAIL, "%s: discovery: issuer %s cannot be used: %s", app->name, app->issuer,
               rc == SG_ERR_NOMEM ? "out of memory" : "not an https URL without query");
        fix("set issuer of app %s to the provider's base URL", app->name);
        return;
    }
    sg_oidc_err_t err;
    rc = sg_oidc_discover(op, &err);
    if (rc != SG_OK) {
        if (strcmp(err.error, "bad_discovery") == 0 && strstr(err.description, "issuer")) {
            report(d, FAIL, "%s: discovery: %s", app->name, err.description);
            fix("issuers are compared exactly (a trailing slash too): set issuer of app %s to "
                "the one the provider names, if that is the provider you mean",
                app->name);
        } else if (err.http_status == 0) {
            const char *why = err.description;
            if (strncmp(why, "discovery: ", 11) == 0)
                why += 11;
            report(d, FAIL, "%s: discovery: no answer from %s: %s", app->name, disco, why);
            fix("check issuer of app %s and that this host reaches it (DNS, firewall, "
                "proxy); its keys, clock, credentials and callback were not checked",
                app->name);
        } else {
            report(d, FAIL, "%s: discovery: %s: %s", app->name, disco, err.description);
            fix("check issuer of app %s: %s must be the provider's discovery document; its "
                "keys, clock, credentials and callback were not checked",
                app->name, disco);
        }
        sg_oidc_free(op);
        return;
    }
    report(d, OK, "%s: discovery: %s, issuer %s", app->name, disco, app->issuer);
    check_keys(d, app, op);
    check_clock(d, app, op);
    check_credentials(d, app, op, redirect_uri);
    check_callback(d, app, op, redirect_uri);
    if (signout)
        check_end_session(d, app, op);
    sg_oidc_free(op);
}

/* ---- once per deployment ----------------------------------------------------------------- */

static void check_policy(doctor_t *d, const sg_policy_t *p, const sg_diags_t *diags, sg_rc rc)
{
    const char *file = d->cfg->policy_file;
    for (size_t i = 0; i < diags->n; i++) {
        const sg_diag_t *g = &diags->item[i];
        if (g->line > 0)
            printf("      %s:%d: %s: %s\n", g->file, g->line, sg_diag_severity_str(g->severity),
                   g->message);
        else
            printf("      %s: %s: %s\n", g->file, sg_diag_severity_str(g->severity), g->message);
    }
    if (rc != SG_OK) {
        report(d, FAIL, "policy: %s: %s", file,
               rc == SG_ERR_IO      ? "cannot be read"
               : rc == SG_ERR_NOMEM ? "out of memory"
                                    : "has errors (above); the gateway will not start with it");
        fix("scopegate policy check %s --config %s", file, d->config_path);
        return;
    }
    size_t nroles = 0, nrules = 0;
    sg_policy_roles(p, &nroles);
    sg_policy_rules(p, &nrules);
    if (diags->warnings) {
        report(d, WARN, "policy: %s: %zu roles, %zu rules, %zu warning%s (above)", file, nroles,
               nrules, diags->warnings, diags->warnings == 1 ? "" : "s");
        fix("scopegate policy check %s --config %s", file, d->config_path);
    } else {
        report(d, OK, "policy: %s: %zu roles, %zu rules", file, nroles, nrules);
    }
}

static void check_store(doctor_t *d)
{
    const sg_config_t *cfg = d->cfg;
    char err[1024] = "";
    if (cfg->store) {
        int version = 0;
        sg_rc rc =
            sg_store_ping_pg(cfg->store, cfg->store_password_file, &version, err, sizeof(err));
        if (rc == SG_OK && version == 0)
            report(d, OK,
                   "store: PostgreSQL reached; no schema yet (the gateway makes it at "
                   "its first start, or: scopegate store migrate)");
        else if (rc == SG_OK)
            report(d, OK, "store: PostgreSQL reached, schema version %d", version);
        if (rc == SG_OK)
            return;
        report(d, FAIL, "store: PostgreSQL: %s", err);
        fix("check store and store_password_file in %s, and that this host reaches the "
            "server",
            d->config_path);
        return;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/scopegate.db", cfg->state_dir);
    sg_store_t *st = NULL;
    sg_rc rc = sg_store_open_sqlite_readonly(path, &st, err, sizeof(err));
    if (rc == SG_OK) {
        st->ops->close(st);
        report(d, OK, "store: SQLite %s, schema current", path);
        check_private(d, "store file", path, 0, 1);
    } else if (rc == SG_ERR_NOTFOUND) {
        report(d, OK,
               "store: SQLite %s is not there yet; the gateway creates it at its first "
               "start",
               path);
    } else if (rc == SG_ERR_CONFIG) {
        report(d, WARN, "store: SQLite %s: %s", path, err);
        fix("start the gateway once to upgrade an older schema (or: scopegate store migrate "
            "--config %s); a newer one needs the matching scopegate",
            d->config_path);
    } else {
        report(d, FAIL, "store: SQLite %s: %s", path, err);
        fix("check state_dir and the database file's owner and mode");
    }
}

/* "https://host:port" of a URL: its path and query may be its secret and are not shown. */
static void url_origin(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
    char raw[512];
    sg_textf(raw, sizeof(raw), "%.*s", (int)(n < sizeof(raw) ? n : sizeof(raw) - 1), url);
    /* user:password@ before the host is a secret too */
    char *at = strchr(raw, '@');
    char *scheme_end = strstr(raw, "://");
    if (at && scheme_end)
        memmove(scheme_end + 3, at + 1, strlen(at + 1) + 1);
    sg_text_clean(out, len, raw);
}

/*
 * The webhook: a HEAD request, which carries no event, so no receiver acts on it; any HTTP
 * answer shows the name resolves and the server (and its TLS) answers. A receiver that does
 * not take HEAD says 405, which is fine; 404 and 5xx are worth a look.
 */
static void check_webhook(doctor_t *d)
{
    const char *url = d->cfg->webhook_url;
    if (!url)
        return;
    char origin[512];
    url_origin(url, origin, sizeof(origin));
    sg_http_req_t req = {.method = "HEAD", .url = url, .timeout_ms = d->cfg->provider_timeout_ms};
    sg_http_resp_t resp;
    sg_http_err_t err;
    if (sg_http_call(&req, &resp, &err) != SG_OK) {
        report(d, FAIL, "webhook: no answer from %s (path not shown): %s", origin, err.description);
        fix("check webhook_url and that this host reaches it; grant deaths would not be "
            "announced");
        return;
    }
    long status = resp.status;
    sg_http_resp_free(&resp);
    if (status == 404 || status == 410 || status >= 500) {
        report(d, WARN, "webhook: %s (path not shown) answered a HEAD request with HTTP %ld",
               origin, status);
        fix("check webhook_url's path and that the receiver is up");
    } else {
        report(d, OK, "webhook: %s (path not shown) answers (HTTP %ld to a HEAD request)", origin,
               status);
    }
}

static void check_files(doctor_t *d)
{
    const sg_config_t *cfg = d->cfg;
    check_private(d, "state_dir", cfg->state_dir, 1, 1);
    check_private(d, "internal key", cfg->internal_key_file, 0, 1);
    check_private(d, "vault key", cfg->vault_key_file, 0, 1);
    for (size_t i = 0; i < cfg->napps; i++) {
        if (!cfg->apps[i].client_secret_file)
            continue;
        char what[160];
        snprintf(what, sizeof(what), "%s: client secret", cfg->apps[i].name);
        check_private(d, what, cfg->apps[i].client_secret_file, 0, 0);
    }
    for (size_t i = 0; i < cfg->nintegrations; i++) {
        const sg_integration_config_t *in = &cfg->integrations[i];
        char what[160];
        snprintf(what, sizeof(what), "integration %s: private key", in->name);
        check_private(d, what, in->private_key_file, 0, 0);
        if (access(in->private_key_file, R_OK) != 0)
            continue; /* said just above */
        EVP_PKEY *key = sg_pem_load_private(in->private_key_file);
        if (key && EVP_PKEY_base_id(key) == EVP_PKEY_RSA) {
            report(d, OK,
                   "integration %s: %s is an RSA private key (it signs the JWT-bearer "
                   "assertions of app %s)",
                   in->name, in->private_key_file, in->app);
        } else {
            report(d, FAIL, "integration %s: %s is not a PEM RSA private key", in->name,
                   in->private_key_file);
            fix("point private_key_file at the key whose certificate the Connected App of app "
                "%s holds (PEM, RSA)",
                in->app);
        }
        EVP_PKEY_free(key);
    }
    if (cfg->store_password_file)
        check_private(d, "store password", cfg->store_password_file, 0, 0);
}

static int doctor(const char *config)
{
    sg_config_t cfg;
    char err[4096];
    /* The doctor says what it finds in its own lines; the libraries' log lines (a key file's
     * mode, a failed discovery) would say it twice. */
    sg_log_set_level(SG_LOG_ERROR);
    if (sg_config_load(config, &cfg, err, sizeof(err)) != SG_OK) {
        printf("fail  config: %s cannot be loaded:\n", config);
        for (char *line = strtok(err, "\n"); line; line = strtok(NULL, "\n"))
            printf("      %s\n", line);
        printf("      fix: correct the lines above (docs/configuration.md)\n");
        return SG_EXIT_FAILED;
    }
    if (sg_http_client_init() != SG_OK) {
        fprintf(stderr, "scopegate: cannot set up the HTTP client (libcurl)\n");
        sg_config_free(&cfg);
        return SG_EXIT_FAILED;
    }
    doctor_t d = {.cfg = &cfg, .config_path = config};
    report(&d, OK, "config: %s: %zu app%s, public_url %s", config, cfg.napps,
           cfg.napps == 1 ? "" : "s", cfg.public_url);

    const char **apps = calloc(cfg.napps + 1, sizeof(*apps));
    sg_diags_t diags;
    sg_diags_init(&diags);
    sg_policy_t *policy = NULL;
    sg_rc prc = SG_ERR_NOMEM;
    if (apps) {
        for (size_t i = 0; i < cfg.napps; i++)
            apps[i] = cfg.apps[i].name;
        sg_policy_opts_t popts = {.known_apps = apps};
        prc = sg_policy_load(cfg.policy_file, &popts, &policy, &diags);
    }
    /* Signing out at the provider concerns the sign-in app; the policy may decide it. */
    const sg_policy_signin_t *si = policy ? sg_policy_signin(policy) : NULL;
    int signout = si && si->signout_provider >= 0 ? si->signout_provider : cfg.signout_provider;

    for (size_t i = 0; i < cfg.napps; i++) {
        const sg_app_config_t *app = &cfg.apps[i];
        int is_signin = si ? si->app && strcmp(si->app, app->name) == 0 : 1;
        check_app(&d, app, signout && is_signin);
    }
    check_policy(&d, policy, &diags, prc);
    check_files(&d);
    check_store(&d);
    check_webhook(&d);

    printf("doctor: %d ok, %d warning%s, %d failure%s\n", d.n[OK], d.n[WARN],
           d.n[WARN] == 1 ? "" : "s", d.n[FAIL], d.n[FAIL] == 1 ? "" : "s");
    sg_policy_free(policy);
    sg_diags_free(&diags);
    free(apps);
    sg_http_client_cleanup();
    sg_config_free(&cfg);
    return d.n[FAIL] ? SG_EXIT_FAILED : SG_EXIT_OK;
}

int sg_cli_doctor(int argc, char **argv)
{
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "help") == 0)
            return usage(stdout);
        int took = sg_cli_take_option(argc, argv, &i, "--config", &v);
        if (took && !v)
            return sg_cli_usage_error(usage, "--config needs a FILE");
        if (!took)
            return sg_cli_usage_error(usage, "doctor: unknown argument '%s'", argv[i]);
        config = v;
    }
    if (!config)
        config = sg_cli_default_config();
    if (!config)
        return sg_cli_usage_error(usage, "doctor needs --config FILE (or $SCOPEGATE_CONFIG)");
    return doctor(config);
}
