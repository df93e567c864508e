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
#include "scopegate/diag.h"
#include "scopegate/duration.h"
#include "scopegate/log.h"
#include "scopegate/text.h"

typedef struct {
    const char *path;
    char dir[4096];
    sg_diags_t *d;
    unsigned flags;
    int nomem;
    int http_hint_off; /* an unknown key looks like allow_http_issuer: its hints would mislead */
    /* Known keys an unknown one was taken for, by group: "missing 'listen'" after "unknown key
     * 'listn' (did you mean 'listen'?)" would say the same thing twice. */
    struct {
        const config_setting_t *group;
        const char *key;
    } meant[16];
    size_t nmeant;
} loader_t;

static void report(loader_t *L, const config_setting_t *s, sg_diag_severity sev, const char *fmt,
                   va_list ap) __attribute__((format(printf, 4, 0)));

static void report(loader_t *L, const config_setting_t *s, sg_diag_severity sev, const char *fmt,
                   va_list ap)
{
    char msg[1024];
    sg_vtextf(msg, sizeof(msg), fmt, ap);
    /* The root group has no line: its problems are the whole file's ("FILE: error: ..."). */
    int line = s ? config_setting_source_line(s) : 0;
    if (sg_diags_add(L->d, L->path, line, sev, "%s", msg) != 0)
        L->nomem = 1;
}

static void fail_at(loader_t *L, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_at(loader_t *L, const config_setting_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(L, s, SG_DIAG_ERROR, fmt, ap);
    va_end(ap);
}

static void warn_at(loader_t *L, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void warn_at(loader_t *L, const config_setting_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(L, s, SG_DIAG_WARNING, fmt, ap);
    va_end(ap);
}

static sg_rc read_key_file(const char *path, size_t create_bytes, char **out, char *err,
                           size_t errlen, int warn_mode);

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
        for (size_t i = 0; i < L->nmeant; i++)
            if (L->meant[i].group == g && strcmp(L->meant[i].key, key) == 0)
                return NULL;
        if (required)
            fail_at(L, g, "missing required key '%s'", key);
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
        const char *name = config_setting_name(m);
        int ok = 0;
        sg_suggest_t sug;
        sg_suggest_init(&sug, name ? name : "");
        for (const char *const *a = allowed; *a && !ok; a++) {
            ok = name && strcmp(*a, name) == 0;
            sg_suggest_try(&sug, *a);
        }
        if (ok)
            continue;
        char hint[128];
        fail_at(L, m, "unknown key '%s'%s", name ? name : "?",
                sg_suggest_hint(&sug, hint, sizeof(hint)));
        if (sug.best && strcmp(sug.best, "allow_http_issuer") == 0)
            L->http_hint_off = 1;
        if (sug.best && L->nmeant < sizeof(L->meant) / sizeof(L->meant[0])) {
            L->meant[L->nmeant].group = g;
            L->meant[L->nmeant++].key = sug.best;
        }
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
    for (size_t i = 0; !apps && i < L->nmeant; i++)
        if (strcmp(L->meant[i].key, "apps") == 0)
            return;
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
            if (!path || read_key_file(path, 0, &app->client_secret, e, sizeof(e),
                                       !(L->flags & SG_CONFIG_CHECK_FILES)))
                fail_at(L, config_setting_get_member(a, "client_secret_file"), "app '%s': %s",
                        app->name, path ? e : "out of memory");
            app->client_secret_file = path;
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

/* A file the gateway reads at start (a secret or a key): readable, as it will be opened, and
 * kept from other users. The store's password file: followed through a symlink, and refused by
 * the store when others may read it, so an error here too (password). */
static void check_secret_file(loader_t *L, const config_setting_t *s, const char *what,
                              const char *path, int password)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | (password ? 0 : O_NOFOLLOW));
    if (fd < 0) {
        fail_at(L, s, "%s: cannot read %s: %s", what, path, strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        fail_at(L, s, "%s: %s is not a regular file", what, path);
    else if ((st.st_mode & 077) && password)
        fail_at(L, s, "%s: %s is open to group or others (mode %04o): chmod 600 it", what, path,
                (unsigned)(st.st_mode & 07777));
    else if (st.st_mode & 077)
        warn_at(L, s, "%s: %s can be read by other users (mode %04o): chmod 600 it", what, path,
                (unsigned)(st.st_mode & 07777));
    close(fd);
}

int sg_path_creatable(const char *path, int parent_only, char *why, size_t whylen)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash)
            snprintf(dir, sizeof(dir), ".");
        else if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
        struct stat st;
        if (stat(dir, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) {
                snprintf(why, whylen, "%s is not a folder", dir);
                return -1;
            }
            if (access(dir, W_OK | X_OK) != 0) {
                snprintf(why, whylen, "cannot create it in %s: %s", dir, strerror(errno));
                return -1;
            }
            return 0;
        }
        if (errno != ENOENT) {
            snprintf(why, whylen, "%s: %s", dir, strerror(errno));
            return -1;
        }
        if (parent_only) {
            snprintf(why, whylen, "its folder %s does not exist (only the last folder is made)",
                     dir);
            return -1;
        }
        if (!slash || slash == dir)
            return 0;
    }
}

/* A key file the gateway creates when missing (internal_key_file, vault_key_file). */
static void check_made_key_file(loader_t *L, const config_setting_t *s, const char *what,
                                const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        check_secret_file(L, s, what, path, 0);
        return;
    }
    char why[4200];
    if (errno != ENOENT)
        fail_at(L, s, "%s: %s: %s", what, path, strerror(errno));
    else if (sg_path_creatable(path, 0, why, sizeof(why)))
        fail_at(L, s, "%s: %s does not exist and cannot be created: %s", what, path, why);
}

/*
 * SG_CONFIG_CHECK_FILES: what the gateway will open at start, looked at without creating or
 * changing anything. Group- or world-readable secrets are warnings (the gateway runs, and says
 * so in its log); a world-writable state_dir is an error (anyone could replace its keys).
 */
static void check_files(loader_t *L, const config_setting_t *root, const sg_config_t *cfg)
{
    const config_setting_t *apps = config_setting_get_member(root, "apps");
    for (size_t i = 0; apps && i < cfg->napps; i++) {
        const config_setting_t *a = config_setting_get_member(apps, cfg->apps[i].name);
        const config_setting_t *f = a ? config_setting_get_member(a, "client_secret_file") : NULL;
        const char *v = f ? config_setting_get_string(f) : NULL;
        char *path = v && *v ? resolve(L, v) : NULL;
        char what[200];
        snprintf(what, sizeof(what), "app '%s': client_secret_file", cfg->apps[i].name);
        /* Unreadable was said by the loader already. */
        if (path && cfg->apps[i].client_secret)
            check_secret_file(L, f, what, path, 0);
        free(path);
    }
    const config_setting_t *ints = config_setting_get_member(root, "integrations");
    for (size_t i = 0; ints && i < cfg->nintegrations; i++) {
        const sg_integration_config_t *in = &cfg->integrations[i];
        const config_setting_t *g = config_setting_get_member(ints, in->name);
        const config_setting_t *f = g ? config_setting_get_member(g, "private_key_file") : NULL;
        char what[200];
        snprintf(what, sizeof(what), "integration '%s': private_key_file", in->name);
        if (in->private_key_file && f)
            check_secret_file(L, f, what, in->private_key_file, 0);
    }
    const config_setting_t *sd = config_setting_get_member(root, "state_dir");
    if (cfg->state_dir && sd) {
        struct stat st;
        char why[4200];
        if (stat(cfg->state_dir, &st) != 0) {
            if (errno != ENOENT)
                fail_at(L, sd, "state_dir %s: %s", cfg->state_dir, strerror(errno));
            else if (sg_path_creatable(cfg->state_dir, 1, why, sizeof(why)))
                fail_at(L, sd, "state_dir %s does not exist and cannot be created: %s",
                        cfg->state_dir, why);
        } else if (!S_ISDIR(st.st_mode)) {
            fail_at(L, sd, "state_dir %s is not a folder", cfg->state_dir);
        } else if (st.st_mode & 002) {
            fail_at(L, sd, "state_dir %s can be written by anyone (mode %04o): chmod 700 it",
                    cfg->state_dir, (unsigned)(st.st_mode & 07777));
        } else if (access(cfg->state_dir, W_OK | X_OK) != 0) {
            fail_at(L, sd, "state_dir %s: %s", cfg->state_dir, strerror(errno));
        }
    }
    const config_setting_t *ik = config_setting_get_member(root, "internal_key_file");
    if (cfg->internal_key_file)
        check_made_key_file(L, ik ? ik : sd, "internal_key_file", cfg->internal_key_file);
    const config_setting_t *vk = config_setting_get_member(root, "vault_key_file");
    if (cfg->vault_key_file)
        check_made_key_file(L, vk ? vk : sd, "vault_key_file", cfg->vault_key_file);
    const config_setting_t *old = config_setting_get_member(root, "vault_old_key_files");
    for (size_t i = 0; old && i < cfg->nvault_old; i++)
        check_secret_file(L, old, "vault_old_key_files", cfg->vault_old_key_files[i], 0);
    const config_setting_t *pw = config_setting_get_member(root, "store_password_file");
    if (cfg->store_password_file && pw)
        check_secret_file(L, pw, "store_password_file", cfg->store_password_file, 1);
}

/*
 * What probably went wrong at a libconfig syntax error on line err_line of text, in plain
 * words, or NULL. libconfig says only "syntax error" and, for something left open, the line
 * after the last one; a scan of the brackets and quotes usually tells which.
 */
static const char *syntax_hint(const char *text, int err_line, char *buf, size_t len)
{
    int line = 1, open_line[64], depth = 0, string_line = 0, stray_line = 0;
    char open_ch[64];
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            line++;
            continue;
        }
        if (string_line) {
            if (*p == '\\' && p[1] && p[1] != '\n')
                p++;
            else if (*p == '"')
                string_line = 0;
            continue;
        }
        if (*p == '#' || (*p == '/' && p[1] == '/')) {
            while (p[1] && p[1] != '\n')
                p++;
        } else if (*p == '/' && p[1] == '*') {
            for (p += 2; *p && !(*p == '*' && p[1] == '/'); p++)
                line += *p == '\n';
            if (!*p)
                break;
            p++;
        } else if (*p == '"') {
            string_line = line;
        } else if (strchr("{[(", *p)) {
            if (depth < 64) {
                open_line[depth] = line;
                open_ch[depth] = *p;
            }
            depth++;
        } else if (strchr("}])", *p)) {
            if (depth == 0 && !stray_line)
                stray_line = line;
            else if (depth > 0)
                depth--;
        }
    }
    if (string_line && string_line <= err_line) {
        snprintf(buf, len, "the text that starts on line %d has no closing '\"'", string_line);
        return buf;
    }
    if (stray_line && stray_line <= err_line) {
        snprintf(buf, len,
                 "the bracket on line %d closes nothing: one too many, or one missing "
                 "before it",
                 stray_line);
        return buf;
    }
    if (err_line >= line && depth > 0 && depth <= 64) {
        char c = open_ch[depth - 1];
        snprintf(buf, len, "the '%c' on line %d is never closed: a '%c' is missing", c,
                 open_line[depth - 1],
                 c == '{'   ? '}'
                 : c == '[' ? ']'
                            : ')');
        return buf;
    }
    /* The line itself: a value that is neither quoted, a number, nor true/false. */
    const char *l = text;
    for (int n = 1; n < err_line && l; n++) {
        l = strchr(l, '\n');
        if (l)
            l++;
    }
    const char *eq = l ? strpbrk(l, "=:") : NULL;
    const char *nl = l ? strchr(l, '\n') : NULL;
    if (eq && (!nl || eq < nl)) {
        const char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if ((isalpha((unsigned char)*v) || *v == '/') && strncasecmp(v, "true", 4) != 0 &&
            strncasecmp(v, "false", 5) != 0) {
            snprintf(buf, len, "text must be in double quotes, like listen = \"127.0.0.1:8080\";");
            return buf;
        }
    }
    if (err_line > 1) {
        snprintf(buf, len,
                 "check this line and the end of line %d (a missing ';' or ',', or a "
                 "stray character)",
                 err_line - 1);
        return buf;
    }
    return NULL;
}

/* Reads path into c; on failure, the line (0: the whole file) and the message with a hint. */
static int read_config(const char *path, config_t *c, char *dir, size_t dirlen, int *line,
                       char *msg, size_t msglen)
{
    snprintf(dir, dirlen, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, dirlen, ".");
    config_init(c);
    *line = 0;
    /* Opened here rather than by libconfig, whose message drops errno's reason. */
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(msg, msglen, "cannot read the file: %s", strerror(errno));
        config_destroy(c);
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(msg, msglen, "cannot read the file: it is a folder");
        fclose(f);
        config_destroy(c);
        return -1;
    }
    sg_buf_t text;
    sg_buf_init(&text, 4 * 1024 * 1024);
    int have_text = sg_buf_add_file(&text, f) == SG_OK;
    rewind(f);
    int ok = config_read(c, f);
    fclose(f);
    if (ok) {
        sg_buf_free(&text);
        return 0;
    }
    *line = config_error_line(c);
    char hint[256];
    const char *h = NULL;
    if (have_text && text.ptr && config_error_type(c) == CONFIG_ERR_PARSE &&
        strcmp(config_error_text(c), "syntax error") == 0)
        h = syntax_hint(text.ptr, *line, hint, sizeof(hint));
    snprintf(msg, msglen, "%s%s%s", config_error_text(c), h ? ": " : "", h ? h : "");
    sg_buf_free(&text);
    config_destroy(c);
    return -1;
}

int sg_libconfig_read(const char *path, config_t *c, char *dir, size_t dirlen, char *err,
                      size_t errlen)
{
    int line;
    char msg[512];
    if (read_config(path, c, dir, dirlen, &line, msg, sizeof(msg)) == 0)
        return 0;
    if (line > 0)
        snprintf(err, errlen, "%s:%d: error: %s", path, line, msg);
    else
        snprintf(err, errlen, "%s: error: %s", path, msg);
    return -1;
}

sg_rc sg_config_check(const char *path, unsigned flags, sg_config_t *cfg, sg_diags_t *diags)
{
    memset(cfg, 0, sizeof(*cfg));
    loader_t L = {.path = path, .d = diags, .flags = flags};
    size_t errors_before = diags->errors;
    config_t c;
    int line;
    char msg[512];
    if (read_config(path, &c, L.dir, sizeof(L.dir), &line, msg, sizeof(msg))) {
        if (sg_diags_add(diags, path, line, SG_DIAG_ERROR, "%s", msg) != 0)
            return SG_ERR_NOMEM;
        return SG_ERR_CONFIG;
    }
    const config_setting_t *root = config_root_setting(&c);
    /* First, so a misspelt key is named before any check that its absence would mislead. */
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
    for (size_t i = 0; !L.http_hint_off && i < cfg->napps; i++) {
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
    if (flags & SG_CONFIG_CHECK_FILES)
        check_files(&L, root, cfg);
    config_destroy(&c);
    sg_diags_sort(diags);
    if (L.nomem || diags->errors > errors_before) {
        sg_config_free(cfg);
        return L.nomem ? SG_ERR_NOMEM : SG_ERR_CONFIG;
    }
    return SG_OK;
}

/* The groups whose keys are their own tables; named: the operator names each member. */
static const struct {
    const char *name;
    const char *const *keys;
    int named;
} key_groups[] = {
    {"apps", app_keys, 1},
    {"integrations", integration_keys, 1},
    {"limits", limits_keys, 0},
    {"branding", branding_keys, 0},
};

void sg_config_each_key(void (*fn)(const char *key, void *arg), void *arg)
{
    char key[128];
    for (const char *const *k = top_keys; *k; k++) {
        size_t g = 0;
        while (g < sizeof(key_groups) / sizeof(key_groups[0]) && strcmp(key_groups[g].name, *k))
            g++;
        if (g == sizeof(key_groups) / sizeof(key_groups[0])) {
            fn(*k, arg);
            continue;
        }
        for (const char *const *m = key_groups[g].keys; *m; m++) {
            snprintf(key, sizeof(key), "%s.%s%s", *k, key_groups[g].named ? "NAME." : "", *m);
            fn(key, arg);
        }
    }
}

sg_rc sg_config_load(const char *path, sg_config_t *cfg, char *err, size_t errlen)
{
    sg_diags_t d;
    sg_diags_init(&d);
    sg_rc rc = sg_config_check(path, 0, cfg, &d);
    err[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; rc && i < d.n && used + 1 < errlen; i++) {
        const sg_diag_t *g = &d.item[i];
        if (g->severity != SG_DIAG_ERROR)
            continue;
        char where[32] = "";
        if (g->line > 0)
            snprintf(where, sizeof(where), ":%d", g->line);
        int n = snprintf(err + used, errlen - used, "%s%s%s: error: %s", used ? "\n" : "", g->file,
                         where, g->message);
        if (n < 0)
            break;
        used += (size_t)n < errlen - used ? (size_t)n : errlen - used - 1;
    }
    if (rc && !err[0])
        snprintf(err, errlen, "%s: error: out of memory", path);
    sg_diags_free(&d);
    return rc;
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
        free(cfg->apps[i].client_secret_file);
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

const char *sg_config_default_path(void)
{
    const char *env = getenv("SCOPEGATE_CONFIG");
    if (env && *env)
        return env;
    if (access(SG_CONFIG_DEFAULT_PATH, R_OK) == 0)
        return SG_CONFIG_DEFAULT_PATH;
    return NULL;
}

void sg_config_lib_version(sg_lib_version_t *v)
{
    v->name = "libconfig";
    snprintf(v->built, sizeof(v->built), "%d.%d.%d", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR,
             LIBCONFIG_VER_REVISION);
    v->running[0] = '\0';
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

/* sg_read_key_file; warn_mode: log when others may read the file (the config check says it
 * as one of its problems instead). */
static sg_rc read_key_file(const char *path, size_t create_bytes, char **out, char *err,
                           size_t errlen, int warn_mode)
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
    if (warn_mode && (st.st_mode & 077))
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

sg_rc sg_read_key_file(const char *path, size_t create_bytes, char **out, char *err, size_t errlen)
{
    return read_key_file(path, create_bytes, out, err, errlen, 1);
}
