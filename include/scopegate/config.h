/*
 * The deployment file (libconfig): where the gateway listens, which providers it talks to,
 * where it keeps its state. Keys and defaults are listed in docs/configuration.md.
 * Values start unset and take their defaults in one merge step at the end of loading; paths
 * are resolved relative to the config file's folder.
 */
#ifndef SCOPEGATE_CONFIG_H
#define SCOPEGATE_CONFIG_H

#include <stddef.h>
#include <libconfig.h>
#include "scopegate/diag.h"
#include "scopegate/rc.h"
#include "scopegate/version.h"

typedef struct {
    char *name; /* the key under apps = { ... }: what the policy names */
    char *issuer;
    char *client_id;
    char *client_secret;        /* the contents of client_secret_file, trailing newline dropped */
    char *client_secret_file;   /* its path (resolved); NULL for a public client */
    char *end_session_endpoint; /* RP-initiated logout's endpoint when discovery lacks it;
                                   NULL: discovery's */
} sg_app_config_t;

/* A JWT-bearer integration user (vault fallback, ?integration=NAME). */
typedef struct {
    char *name;
    char *app;              /* the app whose consumer key signs (must be in apps) */
    char *username;         /* the assertion's sub */
    char *org_id;           /* the org it may stand in for; NULL: any */
    char *private_key_file; /* PEM private key */
} sg_integration_config_t;

typedef struct {
    char *path;            /* the file this came from */
    char *listen;          /* "127.0.0.1:8080" */
    char *public_url;      /* no trailing slash */
    char *internal_listen; /* "127.0.0.1:8081" */
    char *policy_file;
    char *state_dir;
    char *internal_key_file;
    sg_app_config_t *apps;
    size_t napps;
    sg_integration_config_t *integrations;
    size_t nintegrations;
    char *vault_key_file;       /* default state_dir/vault.key; created (0600) if missing */
    char **vault_old_key_files; /* older keys that may still decrypt, NULL-terminated */
    size_t nvault_old;
    char *webhook_url;    /* grant deaths are POSTed here; NULL: none */
    int watch_policy;     /* reload when policy_file changes (checked every few seconds) */
    int signout_provider; /* after a sign-out, send the browser to end the provider's session
                             too (the policy's signin.signout_provider wins when set) */
    /* What people see on the gateway's pages (all optional). */
    char *app_url;      /* "Back to the application" and the signed-out page's link; NULL: "/" */
    char *product_name; /* branding.product_name; NULL: "scopegate" */
    char *logo_url;     /* branding.logo_url (http(s)), or */
    char *logo_file;    /* branding.logo_file (PNG, JPEG, GIF, WebP or SVG, <= 256 KiB) */
    char *accent_color; /* branding.accent_color, "#rgb" or "#rrggbb"; NULL: the default blue */

    /* The HTTP server (limits = { ... } and trusted_proxies; 0: the server's default). */
    unsigned max_connections, max_connections_per_client;
    long request_timeout_ms, idle_timeout_ms;
    unsigned threads, workers, max_waiting, max_waiting_per_client;
    char **trusted_proxies; /* NULL-terminated; NULL: none */
    size_t ntrusted_proxies;

    /* Where the state lives: NULL for SQLite (state_dir/scopegate.db), else a PostgreSQL
     * URI or conninfo shared by every instance. */
    char *store;
    char *store_password_file;    /* NULL: libpq's own (PGPASSFILE, ~/.pgpass) */
    long long store_outage_grace; /* seconds known sessions stay good while the store is down */
    char instance_id[65];         /* this instance's name among several; "": host and port */

    long provider_timeout_ms; /* provider_timeout, default "10s" */
    long long login_timeout;  /* how long a sign-in may take (state lifetime), default "10m" */
    long long clock_skew;     /* ID-token exp/iat leeway, default "60s" */
    int allow_http_issuer;    /* default false: providers must be https */
    int log_level;            /* sg_log_level, default info */
    int secure_cookies;       /* derived: public_url is https */
    char cookie_name[64];     /* derived: "__Host-scopegate" when secure, else "scopegate" */
} sg_config_t;

/*
 * Reads a libconfig file into *c (config_init'ed here) and puts the file's folder, against
 * which its relative paths resolve, in dir. 0, or -1 with "FILE: error: cannot read the file:
 * REASON" or "FILE:LINE: error: ..." (a syntax error with a hint) in err and *c destroyed. For
 * every libconfig file we read: the deployment config here, sfsim's org.
 */
int sg_libconfig_read(const char *path, config_t *c, char *dir, size_t dirlen, char *err,
                      size_t errlen);

/* sg_config_check's flags. */
#define SG_CONFIG_CHECK_FILES                                                                      \
    1u /* also look at the files the gateway will open at start:                                   \
          secrets readable and kept from others, state_dir and the                                 \
          key files' folders there or creatable; creates nothing */

/*
 * The validator: loads path into *cfg, adding every problem found to diags (errors and
 * warnings, each with its file and line; line 0 for the whole file, e.g. a missing top-level
 * key), sorted by line. An unknown key is an error with the nearest known key suggested.
 * SG_OK when no error was found (warnings allowed); else the config is empty.
 */
sg_rc sg_config_check(const char *path, unsigned flags, sg_config_t *cfg, sg_diags_t *diags);
/* sg_config_check without the file checks; on failure *err holds the errors, one
 * "FILE:LINE: error: ..." line each. */
sg_rc sg_config_load(const char *path, sg_config_t *cfg, char *err, size_t errlen);
/* Every key the config accepts, dotted, NAME where the operator names a member
 * ("apps.NAME.issuer"), in the validator's order. */
void sg_config_each_key(void (*fn)(const char *key, void *arg), void *arg);
void sg_config_free(sg_config_t *cfg);
#define SG_CONFIG_DEFAULT_PATH "/etc/scopegate/scopegate.cfg"
/* The config a command reads without --config: $SCOPEGATE_CONFIG, then SG_CONFIG_DEFAULT_PATH
 * when it can be read; NULL when neither. */
const char *sg_config_default_path(void);
/* libconfig's version (it has no way to say which one runs: running is ""). */
void sg_config_lib_version(sg_lib_version_t *v);
const sg_app_config_t *sg_config_app(const sg_config_t *cfg, const char *name);

/*
 * Reads a small secret/key file (<= 64 KiB), dropping one trailing newline. When the file is
 * missing and create_bytes > 0, creates it (mode 0600, parent folder 0700 if missing) with
 * create_bytes random bytes in base64url. Warns (log) when group or others may read it.
 */
sg_rc sg_read_key_file(const char *path, size_t create_bytes, char **out, char *err, size_t errlen);

/*
 * Could this process create path (a key file, state_dir), as the gateway makes them: the
 * nearest folder above it that exists must let it write; with parent_only (state_dir, of which
 * the gateway makes only the last folder) that must be its parent. 0, or -1 with why said.
 */
int sg_path_creatable(const char *path, int parent_only, char *why, size_t whylen);

#endif
