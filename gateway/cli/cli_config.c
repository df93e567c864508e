/*
 * `scopegate config check` (the deployment config, the policy it names, the files and ports
 * the gateway will use, all checked without starting, binding or creating anything) and
 * `scopegate config keys` (every key the config accepts, from the validator's own tables).
 */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/diag.h"
#include "scopegate/http_server.h"
#include "scopegate/policy.h"

int sg_cli_config_usage(FILE *out)
{
    fprintf(out,
            "usage: scopegate config check [--config FILE] [--json]\n"
            "             check a deployment config as `serve` would load it, the policy it\n"
            "             names, its files and its listeners; every problem as\n"
            "             FILE:LINE: error|warning: ..., then FILE: ok or FILE: N errors;\n"
            "             exit 0 no errors, 1 errors, 2 usage. Starts, binds and creates\n"
            "             nothing. FILE: $SCOPEGATE_CONFIG, then %s\n"
            "       scopegate config keys\n"
            "             every key the config accepts, one per line, dotted (NAME: a name\n"
            "             you choose)\n",
            SG_CONFIG_DEFAULT_PATH);
    return out == stderr ? SG_EXIT_USAGE : SG_EXIT_OK;
}

#define usage_error(...) sg_cli_usage_error(sg_cli_config_usage, __VA_ARGS__)

/* The raw file, for what the loaded config no longer knows: the lines of its settings, and the
 * policy's path when the config as a whole did not load. */
typedef struct {
    config_t c;
    int ok;
    char dir[4096];
} raw_t;

static int line_of(const raw_t *r, const char *key)
{
    if (!r->ok)
        return 0;
    const config_setting_t *s = config_lookup(&r->c, key);
    return s ? config_setting_source_line(s) : 0;
}

/* Whether the gateway could listen where the config says, tried now and let go at once. A port
 * in use is a warning: it is often the gateway itself, already running. */
static void check_listener(sg_diags_t *d, const char *file, const raw_t *r, const char *key,
                           const char *listen)
{
    char why[256];
    sg_rc rc = sg_httpd_try_listen(listen, why, sizeof(why));
    if (rc == SG_ERR_CONFIG)
        sg_diags_add(d, file, line_of(r, key), SG_DIAG_ERROR, "'%s' %s: %s", key, listen, why);
    else if (rc != SG_OK && strstr(why, "in use"))
        sg_diags_add(d, file, line_of(r, key), SG_DIAG_WARNING,
                     "'%s' %s: %s (is the gateway already running?)", key, listen, why);
    else if (rc != SG_OK)
        sg_diags_add(d, file, line_of(r, key), SG_DIAG_WARNING,
                     "'%s' %s: cannot listen there now: %s", key, listen, why);
}

/* {"file","valid","errors","warnings","diagnostics":[{"file","line","severity","message"}]} */
static int print_json(const char *file, const sg_diags_t *cd, const sg_diags_t *pd)
{
    size_t errors = cd->errors + pd->errors, warnings = cd->warnings + pd->warnings;
    cJSON *o = cJSON_CreateObject();
    cJSON *list = NULL;
    if (!o || !cJSON_AddStringToObject(o, "file", file) ||
        !cJSON_AddBoolToObject(o, "valid", errors == 0) ||
        !cJSON_AddNumberToObject(o, "errors", (double)errors) ||
        !cJSON_AddNumberToObject(o, "warnings", (double)warnings))
        goto fail;
    list = cJSON_AddArrayToObject(o, "diagnostics");
    if (!list || sg_cli_diags_json(list, cd) || sg_cli_diags_json(list, pd))
        goto fail;
    int rc = sg_cli_print_json(o, 0);
    cJSON_Delete(o);
    return rc;
fail:
    cJSON_Delete(o);
    fprintf(stderr, "scopegate: out of memory\n");
    return -1;
}

static void print_summary(const char *file, size_t errors, size_t warnings)
{
    if (errors == 0 && warnings == 0)
        printf("%s: ok\n", file);
    else if (errors == 0)
        printf("%s: ok with %zu %s\n", file, warnings, warnings == 1 ? "warning" : "warnings");
    else if (warnings == 0)
        printf("%s: %zu %s\n", file, errors, errors == 1 ? "error" : "errors");
    else
        printf("%s: %zu %s, %zu %s\n", file, errors, errors == 1 ? "error" : "errors", warnings,
               warnings == 1 ? "warning" : "warnings");
}

static int check(int argc, char **argv)
{
    const char *file = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *opt = argv[i];
        if (strcmp(opt, "--json") == 0)
            json = 1;
        else if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0)
            return sg_cli_config_usage(stdout);
        else if (sg_cli_take_option(argc, argv, &i, "--config", &v)) {
            if (!v)
                return usage_error("config check: --config needs a FILE");
            file = v;
        } else if (sg_cli_is_option(opt))
            return usage_error("config check: unknown option '%s'", opt);
        else
            return usage_error("config check: unexpected '%s' (the file goes after --config)", opt);
    }
    if (!file)
        file = sg_cli_default_config();
    if (!file)
        return usage_error("config check: which config? --config FILE ($SCOPEGATE_CONFIG and "
                           "%s are not there)",
                           SG_CONFIG_DEFAULT_PATH);

    sg_diags_t cd, pd;
    sg_diags_init(&cd);
    sg_diags_init(&pd);
    raw_t raw = {.ok = 0};
    char rerr[1024];
    raw.ok = sg_libconfig_read(file, &raw.c, raw.dir, sizeof(raw.dir), rerr, sizeof(rerr)) == 0;

    sg_config_t cfg;
    sg_rc rc = sg_config_check(file, SG_CONFIG_CHECK_FILES, &cfg, &cd);
    int loaded = rc == SG_OK;
    const char **apps = NULL;
    char *policy_path = NULL;
    if (loaded) {
        check_listener(&cd, file, &raw, "listen", cfg.listen);
        check_listener(&cd, file, &raw, "internal_listen", cfg.internal_listen);
        size_t n = strlen(cfg.listen);
        if (strcmp(cfg.listen, cfg.internal_listen) == 0 &&
            !(n >= 2 && strcmp(cfg.listen + n - 2, ":0") == 0))
            sg_diags_add(&cd, file, line_of(&raw, "internal_listen"), SG_DIAG_ERROR,
                         "'internal_listen' is the same address as 'listen'");
        sg_diags_sort(&cd);
        apps = calloc(cfg.napps + 1, sizeof(*apps));
        policy_path = strdup(cfg.policy_file);
        if (!apps || !policy_path) {
            rc = SG_ERR_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < cfg.napps; i++)
            apps[i] = cfg.apps[i].name;
    } else if (raw.ok) {
        /* The config has errors, but its policy may be checked all the same (its app names
         * cannot be, the apps being unknown). */
        const char *p = NULL;
        if (config_lookup_string(&raw.c, "policy_file", &p) && *p &&
            asprintf(&policy_path, "%s%s%s", p[0] == '/' ? "" : raw.dir, p[0] == '/' ? "" : "/",
                     p) < 0)
            policy_path = NULL;
    }
    if (rc == SG_ERR_NOMEM)
        goto done;
    if (policy_path) {
        sg_policy_opts_t opts = {.known_apps = apps};
        sg_policy_t *p = NULL;
        if (sg_policy_load(policy_path, &opts, &p, &pd) == SG_ERR_NOMEM)
            rc = SG_ERR_NOMEM;
        sg_policy_free(p);
    }

done:;
    int status = SG_EXIT_OK;
    if (rc == SG_ERR_NOMEM) {
        fprintf(stderr, "scopegate: out of memory\n");
        status = SG_EXIT_FAILED;
    } else if (json) {
        if (print_json(file, &cd, &pd))
            status = SG_EXIT_FAILED;
    } else {
        sg_diags_print(&cd, stdout);
        sg_diags_print(&pd, stdout);
        print_summary(file, cd.errors + pd.errors, cd.warnings + pd.warnings);
    }
    if (cd.errors + pd.errors)
        status = SG_EXIT_FAILED;
    free(apps);
    free(policy_path);
    if (loaded)
        sg_config_free(&cfg);
    if (raw.ok)
        config_destroy(&raw.c);
    sg_diags_free(&cd);
    sg_diags_free(&pd);
    return status;
}

static void print_key(const char *key, void *arg)
{
    printf("%s\n", key);
}

int sg_cli_config(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("config: check or keys?");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0)
        return sg_cli_config_usage(stdout);
    if (strcmp(sub, "check") == 0)
        return check(argc - 1, argv + 1);
    if (strcmp(sub, "keys") == 0) {
        if (argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0))
            return sg_cli_config_usage(stdout);
        if (argc > 2)
            return usage_error("config keys: unexpected '%s'", argv[2]);
        sg_config_each_key(print_key, NULL);
        return SG_EXIT_OK;
    }
    return usage_error("config: unknown command '%s' (check or keys)", sub);
}
