/*
 * The commands that ask the running gateway (grants, sessions): where its internal listener is
 * and with which bearer key, from the deployment config, and one call at a time to it.
 */
#include "cli.h"

#include "scopegate/config.h"
#include "scopegate/http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HTTP_TIMEOUT_MS 30000L
#define BODY_MAX        ((size_t)64 * 1024 * 1024)

const char *sg_cli_default_config(void)
{
    return sg_config_default_path();
}

void sg_cli_gw_close(sg_cli_gw_t *c)
{
    free(c->base);
    if (c->key) {
        memset(c->key, 0, strlen(c->key));
        free(c->key);
    }
}

/* "http://" + internal_listen, with a wildcard host replaced by loopback; NULL for port 0. */
static char *url_of_listen(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || strcmp(colon + 1, "0") == 0 || !colon[1])
        return NULL;
    size_t hostlen = (size_t)(colon - listen);
    const char *host = listen;
    if ((hostlen == 7 && strncmp(listen, "0.0.0.0", 7) == 0) || hostlen == 0) {
        host = "127.0.0.1";
        hostlen = 9;
    } else if ((hostlen == 4 && strncmp(listen, "[::]", 4) == 0) ||
               (hostlen == 2 && strncmp(listen, "::", 2) == 0)) {
        host = "[::1]";
        hostlen = 5;
    }
    char *url = NULL;
    if (asprintf(&url, "http://%.*s%s", (int)hostlen, host, colon) < 0)
        return NULL;
    return url;
}

/* The URL the gateway wrote to state_dir/internal.url (trailing newline dropped), or NULL. */
static char *url_of_state_dir(const char *state_dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/internal.url", state_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char line[512];
    char *url = NULL;
    if (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "http://", 7) == 0 || strncmp(line, "https://", 8) == 0)
            url = strdup(line);
    }
    fclose(f);
    if (url) {
        /* A gateway bound to every address writes 0.0.0.0: ask it on loopback. */
        char *wild = strstr(url, "//0.0.0.0:");
        if (wild) {
            char *fixed = NULL;
            if (asprintf(&fixed, "http://127.0.0.1%s", wild + 9) >= 0) {
                free(url);
                url = fixed;
            }
        }
    }
    return url;
}

/* Reads the config: where to ask and with which key. An exit status, SG_EXIT_OK when usable. */
int sg_cli_gw_open(sg_cli_gw_t *c, const char *config, const char *url)
{
    memset(c, 0, sizeof(*c));
    c->config = config;
    sg_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    char err[4096];
    if (sg_config_load(config, &cfg, err, sizeof(err)) != SG_OK) {
        fprintf(stderr, "%s\n", err);
        return SG_EXIT_USAGE;
    }
    int status = SG_EXIT_OK;
    if (sg_read_key_file(cfg.internal_key_file, 0, &c->key, err, sizeof(err)) != SG_OK) {
        fprintf(stderr,
                "scopegate: %s\n(the gateway creates internal_key_file %s when it first starts: "
                "has it run with this config?)\n",
                err, cfg.internal_key_file);
        status = SG_EXIT_USAGE;
    } else if (url) {
        c->base = strdup(url);
    } else {
        c->base = url_of_listen(cfg.internal_listen);
        if (!c->base)
            c->base = url_of_state_dir(cfg.state_dir);
        if (!c->base) {
            fprintf(stderr,
                    "scopegate: the gateway is not running: internal_listen %s names no fixed "
                    "port and %s/internal.url (written by a running gateway) is missing\n",
                    cfg.internal_listen, cfg.state_dir);
            status = SG_EXIT_UNREACHABLE;
        }
    }
    if (status == SG_EXIT_OK && !c->base)
        status = SG_EXIT_USAGE;
    if (status == SG_EXIT_OK) {
        size_t n = strlen(c->base);
        while (n > 0 && c->base[n - 1] == '/')
            c->base[--n] = '\0';
    }
    sg_config_free(&cfg);
    return status;
}

/*
 * One call to the internal listener; *json gets the parsed answer (caller deletes). Returns
 * the HTTP status, or 0 when no answer came (said on stderr).
 */
long sg_cli_gw_call(const sg_cli_gw_t *c, const char *method, const char *path, const cJSON *body,
                    cJSON **json)
{
    *json = NULL;
    char *url = NULL, *auth = NULL, *text = body ? cJSON_PrintUnformatted(body) : NULL;
    if (asprintf(&url, "%s%s", c->base, path) < 0 || asprintf(&auth, "Bearer %s", c->key) < 0 ||
        (body && !text)) {
        fprintf(stderr, "scopegate: out of memory\n");
        free(url);
        cJSON_free(text);
        return 0;
    }
    sg_http_req_t req = {.method = method,
                         .url = url,
                         .authorization = auth,
                         .body = text,
                         .content_type = text ? "application/json" : NULL,
                         .timeout_ms = HTTP_TIMEOUT_MS,
                         .max_body = BODY_MAX,
                         .no_proxy = 1}; /* the internal listener is never behind a proxy */
    sg_http_resp_t resp;
    sg_http_err_t err;
    long status = 0;
    if (sg_http_call(&req, &resp, &err) != SG_OK) {
        fprintf(stderr, "scopegate: the gateway could not be reached at %s: %s\n", c->base,
                err.description);
    } else {
        status = resp.status;
        if (resp.body.len)
            *json = cJSON_ParseWithLength(resp.body.ptr, resp.body.len);
        sg_http_resp_free(&resp);
    }
    free(url);
    cJSON_free(text);
    explicit_bzero(auth, strlen(auth));
    free(auth);
    return status;
}

/*
 * The exit status for an answer that is not the 200 wanted: the gateway's error said on
 * stderr. 401: the key in internal_key_file is not the running gateway's (config error).
 */
int sg_cli_gw_error(const sg_cli_gw_t *c, long status, const cJSON *j, const char *what)
{
    if (status == 0)
        return SG_EXIT_UNREACHABLE;
    const char *desc =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "error_description"));
    fprintf(stderr, "scopegate: %s: the gateway at %s answered %ld%s%s\n", what, c->base, status,
            desc ? ": " : "", desc ? desc : "");
    if (status == 401)
        fprintf(stderr, "scopegate: is %s the config of the gateway running there?\n", c->config);
    if (status == 404 && !j)
        fprintf(stderr, "scopegate: is the gateway there a version that has `%s`?\n", what);
    /* A 400 is this command asking wrongly (the gateway says how): a usage error too. */
    if (status == 400 || status == 401 || status == 403)
        return SG_EXIT_USAGE;
    if (status >= 500)
        return SG_EXIT_UNREACHABLE;
    return SG_EXIT_FAILED;
}

int sg_cli_gw_run(const char *config, const char *url, sg_cli_gw_fn fn, const void *args)
{
    if (sg_http_client_init() != SG_OK) {
        fprintf(stderr, "scopegate: cannot set up the HTTP client (libcurl)\n");
        return SG_EXIT_UNREACHABLE;
    }
    sg_cli_gw_t c;
    int rc = sg_cli_gw_open(&c, config, url);
    if (rc == SG_EXIT_OK)
        rc = fn(args, &c);
    sg_cli_gw_close(&c);
    sg_http_client_cleanup();
    return rc;
}
