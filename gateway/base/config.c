/* The deployment file: see config.h and docs/configuration.md. */
#include "scopegate/config.h"

#include <ctype.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/duration.h"
#include "scopegate/log.h"

typedef struct {
    const char *path;
    char dir[4096];
    sg_buf_t err;
    int failed;
} loader_t;

static void fail_at(loader_t *L, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_at(loader_t *L, const config_setting_t *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (L->err.len < 3000)
        sg_buf_printf(&L->err, "%s%s:%d: error: %s", L->err.len ? "\n" : "", L->path,
                      s ? config_setting_source_line(s) : 0, msg);
    L->failed = 1;
}

static char *resolve(loader_t *L, const char *p)
{
    if (!p)
        return NULL;
    if (p[0] == '/')
        return strdup(p);
    size_t n = strlen(L->dir) + strlen(p) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", L->dir, p);
    return out;
}

static const char *str(loader_t *L, const config_setting_t *g, const char *key, int required)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s) {
        if (required)
            fail_at(L, g, "missing '%s'", key);
        return NULL;
    }
    const char *v = config_setting_get_string(s);
    if (!v || !*v)
        fail_at(L, s, "'%s' must be a non-empty string", key);
    return v;
}

static long long duration(loader_t *L, const config_setting_t *g, const char *key, long long dflt)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return dflt;
    long long v = 0;
    int t = config_setting_type(s);
    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        v = config_setting_get_int64(s);
    } else {
        const char *txt = config_setting_get_string(s);
        if (!txt || sg_duration_parse(txt, &v)) {
            fail_at(L, s, "'%s' is not a duration (like \"10s\", \"5m\", \"1h\")", key);
            return dflt;
        }
    }
    if (v <= 0)
        fail_at(L, s, "'%s' must be positive", key);
    return v;
}

static int boolean(loader_t *L, const config_setting_t *g, const char *key, int dflt)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return dflt;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        fail_at(L, s, "'%s' must be true or false", key);
        return dflt;
    }
    return config_setting_get_bool(s);
}

/* A whole number in [lo, hi], or dflt when the key is absent. */
static long long number(loader_t *L, const config_setting_t *g, const char *key, long long dflt,
                        long long lo, long long hi)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return dflt;
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
        fail_at(L, s, "'%s' must be a whole number", key);
        return dflt;
    }
    long long v = config_setting_get_int64(s);
    if (v < lo || v > hi) {
        fail_at(L, s, "'%s' must be between %lld and %lld", key, lo, hi);
        return dflt;
    }
    return v;
}

static const char *const top_keys[] = {
    "listen",
    "public_url",
    "internal_listen",
    "policy_file",
    "state_dir",
    "internal_key_file",
    "apps",
    "provider_timeout",
    "login_timeout",
    "clock_skew",
    "allow_http_issuer",
    "log_level",
    "integrations",
    "vault_key_file",
    "vault_old_key_files",
    "webhook_url",
    "watch_policy",
    "app_url",
    "branding",
    "limits",
    "trusted_proxies",
    "store",
    "store_password_file",
    "store_outage_grace",
    "instance_id",
    "signout_provider",
    NULL,
};
/* A URI's user information (between "://" and the '@' before the host) with a ':' holds a
 * password. */
static int uri_has_password(const char *uri)
{
    const char *p = strstr(uri, "://") + 3;
    size_t host_at = strcspn(p, "/?");
    const char *at = memchr(p, '@', host_at);
    return at && memchr(p, ':', (size_t)(at - p)) != NULL;
}

/*
 * store: absent for SQLite in state_dir; a libpq URI (postgresql://) or key=value conninfo for
 * PostgreSQL. The password never sits in the config text: store_password_file, or libpq's
 * own PGPASSFILE.
 */
static void load_store(loader_t *L, const config_setting_t *root, sg_config_t *cfg)
{
    const config_setting_t *at = config_setting_get_member(root, "store");
    const char *v = str(L, root, "store", 0);
    if (v) {
        int uri = strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0;
        if (!uri && !strchr(v, '='))
            fail_at(L, at,
                    "'store' must be a PostgreSQL URI (postgresql://USER@HOST:PORT/DB) or a "
                    "libpq conninfo (host=... dbname=...); leave it out for SQLite in state_dir");
        else if (strstr(v, "password=") || (uri && uri_has_password(v)))
            fail_at(L, at,
                    "'store' holds a password: put it in store_password_file (or libpq's "
                    "PGPASSFILE), not in the config");
        else
            cfg->store = strdup(v);
    }
    v = str(L, root, "store_password_file", 0);
    if (v) {
        if (!cfg->store)
            fail_at(L, config_setting_get_member(root, "store_password_file"),
                    "'store_password_file' is for a PostgreSQL store: set 'store' too");
        cfg->store_password_file = resolve(L, v);
    }
    cfg->store_outage_grace = duration(L, root, "store_outage_grace", 300);
    v = str(L, root, "instance_id", 0);
    if (v) {
        size_t n = strlen(v);
        int ok = n > 0 && n <= 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)v[i]) || strchr("-_.:", v[i]);
        if (!ok)
            fail_at(L, config_setting_get_member(root, "instance_id"),
                    "'instance_id' must be 1 to 64 letters, digits, '-', '_', '.' or ':'");
        else
            snprintf(cfg->instance_id, sizeof(cfg->instance_id), "%s", v);
    }
}

static const char *const limits_keys[] = {"max_connections",
                                          "max_connections_per_client",
                                          "request_timeout",
                                          "idle_timeout",
                                          "threads",
                                          "workers",
                                          "max_waiting",
                                          "max_waiting_per_client",
                                          NULL};
static const char *const branding_keys[] = {"product_name", "logo_url", "logo_file", "accent_color",
                                            NULL};
static const char *const integration_keys[] = {"app", "username", "org_id", "private_key_file",
                                               NULL};
static const char *const app_keys[] = {"issuer", "client_id", "client_secret_file",
                                       "end_session_endpoint", NULL};

static void check_keys(loader_t *L, const config_setting_t *g, const char *const *allowed)
{
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, config_setting_name(m)) == 0;
        if (!ok)
            fail_at(L, m, "unknown key '%s'", config_setting_name(m));
    }
}

/* #rgb or #rrggbb: the only colour syntax that can go into the stylesheet unescaped. */
static int is_hex_colour(const char *v)
{
    size_t n = strlen(v);
    if (v[0] != '#' || (n != 4 && n != 7))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!isxdigit((unsigned char)v[i]))
            return 0;
    return 1;
}

/* A URL the pages may link to: an http(s) URL, or a path on this site. */
static int is_page_url(const char *v)
{
    if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0 &&
        !(v[0] == '/' && v[1] != '/' && v[1] != '\\'))
        return 0;
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == '"' || *p == '<' || *p == '>' || *p == '\\' ||
            (unsigned char)*p == 0x7f)
            return 0;
    return 1;
}

/*
 * The HTTP server's limits (the group limits = { ... }; 0 or absent: the server's default,
 * see docs/configuration.md) and trusted_proxies, the addresses whose X-Forwarded-For names
 * the client.
 */
static void load_limits(loader_t *L, const config_setting_t *root, sg_config_t *cfg)
{
    const config_setting_t *t = config_setting_get_member(root, "trusted_proxies");
    if (t) {
        int n = config_setting_length(t);
        cfg->trusted_proxies = calloc((size_t)n + 1, sizeof(char *));
        for (int i = 0; cfg->trusted_proxies && i < n; i++) {
            const char *a = config_setting_get_string_elem(t, i);
            unsigned char buf[16];
            if (!a || (inet_pton(AF_INET, a, buf) != 1 && inet_pton(AF_INET6, a, buf) != 1))
                fail_at(L, t, "'trusted_proxies' must be a list of IP addresses");
            else
                cfg->trusted_proxies[cfg->ntrusted_proxies++] = strdup(a);
        }
    }
    const config_setting_t *g = config_setting_get_member(root, "limits");
    if (!g)
        return;
    if (!config_setting_is_group(g)) {
        fail_at(L, g, "'limits' must be a group: limits = { max_connections = 20000; ... }");
        return;
    }
    check_keys(L, g, limits_keys);
    cfg->max_connections = (unsigned)number(L, g, "max_connections", 0, 16, 1000000);
    cfg->max_connections_per_client =
        (unsigned)number(L, g, "max_connections_per_client", 0, 1, 1000000);
    cfg->request_timeout_ms = (long)duration(L, g, "request_timeout", 0) * 1000;
    cfg->idle_timeout_ms = (long)duration(L, g, "idle_timeout", 0) * 1000;
    cfg->threads = (unsigned)number(L, g, "threads", 0, 1, 64);
    cfg->workers = (unsigned)number(L, g, "workers", 0, 1, 1024);
    cfg->max_waiting = (unsigned)number(L, g, "max_waiting", 0, 1, 1000000);
    cfg->max_waiting_per_client = (unsigned)number(L, g, "max_waiting_per_client", 0, 1, 1000000);
}

/* app_url (where "Back to the application" and the signed-out page lead) and the branding
 * group (product name, logo, accent colour). All optional. */
static void load_branding(loader_t *L, const config_setting_t *root, sg_config_t *cfg)
{
    const char *v = str(L, root, "app_url", 0);
    if (v && !is_page_url(v))
        fail_at(L, config_setting_get_member(root, "app_url"),
                "'app_url' must be an http(s) URL or a path starting with /");
    else if (v)
        cfg->app_url = strdup(v);
    const config_setting_t *b = config_setting_get_member(root, "branding");
    if (!b)
        return;
    if (!config_setting_is_group(b)) {
        fail_at(L, b, "'branding' must be a group: branding = { product_name = \"...\"; };");
        return;
    }
    check_keys(L, b, branding_keys);
    v = str(L, b, "product_name", 0);
    if (v && (!*v || strlen(v) > 80))
        fail_at(L, config_setting_get_member(b, "product_name"),
                "'product_name' must be 1 to 80 characters");
    else if (v)
        cfg->product_name = strdup(v);
    v = str(L, b, "logo_url", 0);
    if (v && strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)
        fail_at(L, config_setting_get_member(b, "logo_url"), "'logo_url' must be an http(s) URL");
    else if (v && !is_page_url(v))
        fail_at(L, config_setting_get_member(b, "logo_url"),
                "'logo_url' holds a character a URL cannot have");
    else if (v)
        cfg->logo_url = strdup(v);
    v = str(L, b, "logo_file", 0);
    if (v && cfg->logo_url)
        fail_at(L, config_setting_get_member(b, "logo_file"),
                "give 'logo_url' or 'logo_file', not both");
    else if (v)
        cfg->logo_file = resolve(L, v);
    v = str(L, b, "accent_color", 0);
    if (v && !is_hex_colour(v))
        fail_at(L, config_setting_get_member(b, "accent_color"),
                "'accent_color' must be a colour like \"#0b5cab\" or \"#06c\"");
    else if (v)
        cfg->accent_color = strdup(v);
}

static void load_apps(loader_t *L, const config_setting_t *apps, sg_config_t *cfg)
{
    if (!apps || !config_setting_is_group(apps) || config_setting_length(apps) == 0) {
        fail_at(L, apps,
                "'apps' must be a group naming at least one app, e.g. "
                "apps = { signin = { issuer = ...; client_id = ...; "
                "client_secret_file = ...; }; }");
        return;
    }
    int n = config_setting_length(apps);
    cfg->apps = calloc((size_t)n, sizeof(sg_app_config_t));
    if (!cfg->apps) {
        fail_at(L, apps, "out of memory");
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *a = config_setting_get_elem(apps, (unsigned)i);
        sg_app_config_t *app = &cfg->apps[cfg->napps++];
        app->name = strdup(config_setting_name(a));
        if (!config_setting_is_group(a)) {
            fail_at(L, a, "app '%s' must be a group", app->name);
            continue;
        }
        check_keys(L, a, app_keys);
        const char *issuer = str(L, a, "issuer", 1);
        const char *id = str(L, a, "client_id", 1);
        const char *secret_file = str(L, a, "client_secret_file", 0);
        if (issuer) {
            /* Kept verbatim: issuers are compared exactly (OIDC Discovery 4.3), and some
             * end in '/' (Auth0). The oidc module drops it only to build the discovery URL. */
            app->issuer = strdup(issuer);
            if (strncmp(issuer, "https://", 8) != 0 && strncmp(issuer, "http://", 7) != 0)
                fail_at(L, a, "app '%s': issuer must be an http(s) URL", app->name);
        }
        app->client_id = id ? strdup(id) : NULL;
        /* For a provider whose discovery document names no end-session endpoint; http:// is
         * checked against allow_http_issuer with the issuers, below. */
        const char *end = str(L, a, "end_session_endpoint", 0);
        if (end && strncmp(end, "https://", 8) != 0 && strncmp(end, "http://", 7) != 0)
            fail_at(L, a, "app '%s': end_session_endpoint must be an http(s) URL", app->name);
        else if (end && strpbrk(end, " \t\r\n#"))
            fail_at(L, a, "app '%s': end_session_endpoint holds a space or '#'", app->name);
        else if (end)
            app->end_session_endpoint = strdup(end);
        if (secret_file) {
            char *path = resolve(L, secret_file);
            char e[512];
            if (!path || sg_read_key_file(path, 0, &app->client_secret, e, sizeof(e)))
                fail_at(L, a, "app '%s': %s", app->name, path ? e : "out of memory");
            free(path);
        }
    }
}

static void load_integrations(loader_t *L, const config_setting_t *ints, sg_config_t *cfg)
{
    if (!ints)
        return;
    if (!config_setting_is_group(ints)) {
        fail_at(L, ints,
                "'integrations' must be a group: integrations = { NAME = { app = "
                "\"api\"; username = ...; private_key_file = ...; }; }");
        return;
    }
    int n = config_setting_length(ints);
    cfg->integrations = calloc((size_t)n + 1, sizeof(sg_integration_config_t));
    if (!cfg->integrations) {
        fail_at(L, ints, "out of memory");
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(ints, (unsigned)i);
        sg_integration_config_t *in = &cfg->integrations[cfg->nintegrations++];
        in->name = strdup(config_setting_name(g));
        if (!config_setting_is_group(g)) {
            fail_at(L, g, "integration '%s' must be a group", in->name);
            continue;
        }
        check_keys(L, g, integration_keys);
        const char *v = str(L, g, "app", 1);
        in->app = v ? strdup(v) : NULL;
        v = str(L, g, "username", 1);
        in->username = v ? strdup(v) : NULL;
        v = str(L, g, "org_id", 0);
        in->org_id = v ? strdup(v) : NULL;
        in->private_key_file = resolve(L, str(L, g, "private_key_file", 1));
        if (in->app && !sg_config_app(cfg, in->app))
            fail_at(L, g, "integration '%s': app '%s' is not among apps", in->name, in->app);
    }
}

int sg_libconfig_read(const char *path, config_t *c, char *dir, size_t dirlen, char *err,
                      size_t errlen)
{
    snprintf(dir, dirlen, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, dirlen, ".");
    config_init(c);
    if (config_read_file(c, path))
        return 0;
    if (config_error_type(c) == CONFIG_ERR_FILE_IO)
        snprintf(err, errlen, "%s: error: cannot read the file", path);
    else
        snprintf(err, errlen, "%s:%d: error: %s", path, config_error_line(c), config_error_text(c));
    config_destroy(c);
    return -1;
}

sg_rc sg_config_load(const char *path, sg_config_t *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    loader_t L = {.path = path};
    config_t c;
    if (sg_libconfig_read(path, &c, L.dir, sizeof(L.dir), err, errlen))
        return SG_ERR_CONFIG;
    sg_buf_init(&L.err, 4096);
    const config_setting_t *root = config_root_setting(&c);
    check_keys(&L, root, top_keys);
    cfg->path = strdup(path);
    const char *v;
    v = str(&L, root, "listen", 1);
    cfg->listen = v ? strdup(v) : NULL;
    v = str(&L, root, "public_url", 1);
    if (v) {
        size_t len = strlen(v);
        cfg->public_url = strndup(v, len && v[len - 1] == '/' ? len - 1 : len);
        if (strncmp(v, "https://", 8) == 0)
            cfg->secure_cookies = 1;
        else if (strncmp(v, "http://", 7) != 0)
            fail_at(&L, config_setting_get_member(root, "public_url"),
                    "'public_url' must start with http:// or https://");
    }
    v = str(&L, root, "internal_listen", 1);
    cfg->internal_listen = v ? strdup(v) : NULL;
    v = str(&L, root, "policy_file", 1);
    cfg->policy_file = resolve(&L, v);
    v = str(&L, root, "state_dir", 1);
    cfg->state_dir = resolve(&L, v);
    v = str(&L, root, "internal_key_file", 0);
    if (v) {
        cfg->internal_key_file = resolve(&L, v);
    } else if (cfg->state_dir) {
        size_t n = strlen(cfg->state_dir) + 16;
        cfg->internal_key_file = malloc(n);
        if (cfg->internal_key_file)
            snprintf(cfg->internal_key_file, n, "%s/internal.key", cfg->state_dir);
    }
    load_apps(&L, config_setting_get_member(root, "apps"), cfg);
    load_integrations(&L, config_setting_get_member(root, "integrations"), cfg);
    v = str(&L, root, "vault_key_file", 0);
    if (v) {
        cfg->vault_key_file = resolve(&L, v);
    } else if (cfg->state_dir) {
        size_t n = strlen(cfg->state_dir) + 16;
        cfg->vault_key_file = malloc(n);
        if (cfg->vault_key_file)
            snprintf(cfg->vault_key_file, n, "%s/vault.key", cfg->state_dir);
    }
    const config_setting_t *old = config_setting_get_member(root, "vault_old_key_files");
    if (old) {
        int n = config_setting_length(old);
        cfg->vault_old_key_files = calloc((size_t)n + 1, sizeof(char *));
        for (int i = 0; cfg->vault_old_key_files && i < n; i++) {
            const char *f = config_setting_get_string_elem(old, i);
            if (!f)
                fail_at(&L, old, "'vault_old_key_files' must be a list of file names");
            else
                cfg->vault_old_key_files[cfg->nvault_old++] = resolve(&L, f);
        }
    }
    v = str(&L, root, "webhook_url", 0);
    if (v) {
        if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)
            fail_at(&L, config_setting_get_member(root, "webhook_url"),
                    "'webhook_url' must be an http(s) URL");
        cfg->webhook_url = strdup(v);
    }

    load_branding(&L, root, cfg);
    load_limits(&L, root, cfg);
    load_store(&L, root, cfg);

    cfg->provider_timeout_ms = (long)duration(&L, root, "provider_timeout", 10) * 1000;
    cfg->login_timeout = duration(&L, root, "login_timeout", 600);
    cfg->clock_skew = duration(&L, root, "clock_skew", 60);
    cfg->allow_http_issuer = boolean(&L, root, "allow_http_issuer", 0);
    cfg->watch_policy = boolean(&L, root, "watch_policy", 0);
    cfg->signout_provider = boolean(&L, root, "signout_provider", 0);
    cfg->log_level = SG_LOG_INFO;
    v = str(&L, root, "log_level", 0);
    if (v) {
        int lvl = sg_log_level_parse(v);
        if (lvl < 0)
            fail_at(&L, config_setting_get_member(root, "log_level"),
                    "'log_level' must be debug, info, warn or error");
        else
            cfg->log_level = lvl;
    }
    for (size_t i = 0; i < cfg->napps; i++) {
        const sg_app_config_t *a = &cfg->apps[i];
        if (a->issuer && strncmp(a->issuer, "http://", 7) == 0 && !cfg->allow_http_issuer)
            fail_at(&L, config_setting_get_member(root, "apps"),
                    "app '%s': issuer %s is not https (set allow_http_issuer = true for a "
                    "local test provider)",
                    a->name, a->issuer);
        if (a->end_session_endpoint && strncmp(a->end_session_endpoint, "http://", 7) == 0 &&
            !cfg->allow_http_issuer)
            fail_at(&L, config_setting_get_member(root, "apps"),
                    "app '%s': end_session_endpoint is not https (set allow_http_issuer = true "
                    "for a local test provider)",
                    a->name);
    }
    snprintf(cfg->cookie_name, sizeof(cfg->cookie_name), "%s",
             cfg->secure_cookies ? "__Host-scopegate" : "scopegate");
    config_destroy(&c);

    if (L.failed) {
        snprintf(err, errlen, "%s", L.err.ptr ? L.err.ptr : "invalid configuration");
        sg_buf_free(&L.err);
        sg_config_free(cfg);
        return SG_ERR_CONFIG;
    }
    sg_buf_free(&L.err);
    return SG_OK;
}

void sg_config_free(sg_config_t *cfg)
{
    free(cfg->path);
    free(cfg->listen);
    free(cfg->public_url);
    free(cfg->internal_listen);
    free(cfg->policy_file);
    free(cfg->state_dir);
    free(cfg->internal_key_file);
    for (size_t i = 0; i < cfg->napps; i++) {
        free(cfg->apps[i].name);
        free(cfg->apps[i].issuer);
        free(cfg->apps[i].client_id);
        free(cfg->apps[i].end_session_endpoint);
        if (cfg->apps[i].client_secret) {
            OPENSSL_cleanse(cfg->apps[i].client_secret, strlen(cfg->apps[i].client_secret));
            free(cfg->apps[i].client_secret);
        }
    }
    free(cfg->apps);
    for (size_t i = 0; i < cfg->nintegrations; i++) {
        free(cfg->integrations[i].name);
        free(cfg->integrations[i].app);
        free(cfg->integrations[i].username);
        free(cfg->integrations[i].org_id);
        free(cfg->integrations[i].private_key_file);
    }
    free(cfg->integrations);
    free(cfg->vault_key_file);
    for (size_t i = 0; i < cfg->nvault_old; i++)
        free(cfg->vault_old_key_files[i]);
    free(cfg->vault_old_key_files);
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++)
        free(cfg->trusted_proxies[i]);
    free(cfg->trusted_proxies);
    free(cfg->webhook_url);
    free(cfg->store);
    free(cfg->store_password_file);
    free(cfg->app_url);
    free(cfg->product_name);
    free(cfg->logo_url);
    free(cfg->logo_file);
    free(cfg->accent_color);
    memset(cfg, 0, sizeof(*cfg));
}

const sg_app_config_t *sg_config_app(const sg_config_t *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->napps; i++)
        if (strcmp(cfg->apps[i].name, name) == 0)
            return &cfg->apps[i];
    return NULL;
}

static sg_rc make_parent(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return SG_OK;
    *slash = '\0';
    struct stat st;
    if (stat(dir, &st) == 0)
        return SG_OK;
    if (make_parent(dir, err, errlen))
        return SG_ERR_IO;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create folder %s: %s", dir, strerror(errno));
        return SG_ERR_IO;
    }
    return SG_OK;
}

sg_rc sg_read_key_file(const char *path, size_t create_bytes, char **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT && create_bytes > 0) {
        if (make_parent(path, err, errlen))
            return SG_ERR_IO;
        char *key = sg_random_token(create_bytes);
        int wfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (!key || wfd < 0) {
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
            free(key);
            if (wfd >= 0)
                close(wfd);
            return SG_ERR_IO;
        }
        size_t len = strlen(key);
        int ok =
            write(wfd, key, len) == (ssize_t)len && write(wfd, "\n", 1) == 1 && fsync(wfd) == 0;
        close(wfd);
        if (!ok) {
            snprintf(err, errlen, "cannot write %s", path);
            free(key);
            return SG_ERR_IO;
        }
        sg_log(SG_LOG_INFO, "key_created", "created %s (mode 0600)", path);
        *out = key;
        return SG_OK;
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return SG_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 65536) {
        snprintf(err, errlen, "%s is not a regular file of at most 64 KiB", path);
        close(fd);
        return SG_ERR_IO;
    }
    if (st.st_mode & 077)
        sg_log(SG_LOG_WARN, "key_file_mode",
               "%s can be read by other users (mode %03o); chmod 600 it", path,
               (unsigned)(st.st_mode & 0777));
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    FILE *f = fdopen(fd, "r");
    sg_rc rc = f ? sg_buf_add_file(&b, f) : SG_ERR_IO;
    if (f)
        fclose(f);
    else
        close(fd);
    if (rc) {
        snprintf(err, errlen, "cannot read %s", path);
        sg_buf_free(&b);
        return rc;
    }
    while (b.len && (b.ptr[b.len - 1] == '\n' || b.ptr[b.len - 1] == '\r'))
        b.ptr[--b.len] = '\0';
    if (b.len == 0) {
        snprintf(err, errlen, "%s is empty", path);
        sg_buf_free(&b);
        return SG_ERR_CONFIG;
    }
    *out = sg_buf_steal(&b);
    return *out ? SG_OK : SG_ERR_NOMEM;
}
