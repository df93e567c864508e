/*
 * `scopegate policy test POLICY CASES [--config DEPLOYMENT] [--json]`: runs a file of cases
 * (people's claims, and what the policy must give them) against a policy, so that a review
 * pipeline can hold a policy change to what its authors meant. Exit 0 when every case passes,
 * 1 when one fails or either file is bad, 2 for a usage error.
 */
#include "cli.h"

#include "scopegate/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define usage_error(...) sg_cli_usage_error(sg_cli_policy_usage, __VA_ARGS__)

typedef struct {
    const char *policy_file, *cases_file;
    sg_policy_t *policy;
    sg_policy_cases_t *cases;
    sg_diags_t pdiags, cdiags; /* the policy's, the cases file's: each sorted by its lines */
    sg_policy_case_result_t *results;
    size_t n, passed;
} run_t;

/* {"line","name","expect","got","rule":{"number","line","at","text"} or null,"passed",
 * "failures":[...]}; got is "denied" when no rule matches. */
static cJSON *case_json(const run_t *r, const sg_policy_case_t *k,
                        const sg_policy_case_result_t *res)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *rule = NULL, *failures = NULL;
    char *at = NULL;
    if (!o || !cJSON_AddNumberToObject(o, "line", k->line) ||
        !(k->name ? cJSON_AddStringToObject(o, "name", k->name)
                  : cJSON_AddNullToObject(o, "name")) ||
        !cJSON_AddStringToObject(o, "expect", k->expect) ||
        !cJSON_AddStringToObject(o, "got", res->role ? res->role->name : SG_POLICY_DENIED))
        goto fail;
    if (res->rule) {
        rule = cJSON_AddObjectToObject(o, "rule");
        if (!rule || asprintf(&at, "%s:%d", r->policy_file, res->rule->line) < 0) {
            at = NULL;
            goto fail;
        }
        if (!cJSON_AddNumberToObject(rule, "number", (double)res->rule_index + 1) ||
            !cJSON_AddNumberToObject(rule, "line", res->rule->line) ||
            !cJSON_AddStringToObject(rule, "at", at) ||
            !cJSON_AddStringToObject(rule, "text", res->rule->text))
            goto fail;
    } else if (!cJSON_AddNullToObject(o, "rule")) {
        goto fail;
    }
    if (!cJSON_AddBoolToObject(o, "passed", res->passed) ||
        !(failures = cJSON_AddArrayToObject(o, "failures")))
        goto fail;
    for (size_t i = 0; i < res->nfailures; i++) {
        cJSON *f = cJSON_CreateString(res->failures[i]);
        if (!f || !cJSON_AddItemToArray(failures, f)) {
            cJSON_Delete(f);
            goto fail;
        }
    }
    free(at);
    return o;
fail:
    free(at);
    cJSON_Delete(o);
    return NULL;
}

/*
 * {"policy","cases_file","valid","diagnostics":[...],"total","passed","failed","cases":[...]}:
 * valid is false when either file is bad (then no case ran and cases is empty).
 */
static int print_json(const run_t *r, int valid)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *diags = NULL, *cases = NULL;
    if (!o || !cJSON_AddStringToObject(o, "policy", r->policy_file) ||
        !cJSON_AddStringToObject(o, "cases_file", r->cases_file) ||
        !cJSON_AddBoolToObject(o, "valid", valid) ||
        !(diags = cJSON_AddArrayToObject(o, "diagnostics")) ||
        sg_cli_diags_json(diags, &r->pdiags) != 0 || sg_cli_diags_json(diags, &r->cdiags) != 0 ||
        !cJSON_AddNumberToObject(o, "total", (double)r->n) ||
        !cJSON_AddNumberToObject(o, "passed", (double)r->passed) ||
        !cJSON_AddNumberToObject(o, "failed", (double)(r->n - r->passed)) ||
        !(cases = cJSON_AddArrayToObject(o, "cases")))
        goto fail;
    size_t n = 0;
    const sg_policy_case_t *items = r->cases ? sg_policy_cases(r->cases, &n) : NULL;
    for (size_t i = 0; i < r->n && i < n; i++) {
        cJSON *c = case_json(r, &items[i], &r->results[i]);
        if (!c || !cJSON_AddItemToArray(cases, c)) {
            cJSON_Delete(c);
            goto fail;
        }
    }
    int rc = sg_cli_print_json(o, 1);
    cJSON_Delete(o);
    return rc;
fail:
    cJSON_Delete(o);
    fprintf(stderr, "scopegate: out of memory\n");
    return -1;
}

/* Each failure as CASES:LINE: ..., then "N cases, N passed, N failed". */
static void print_text(const run_t *r)
{
    size_t n = 0;
    const sg_policy_case_t *items = sg_policy_cases(r->cases, &n);
    for (size_t i = 0; i < r->n; i++)
        for (size_t f = 0; f < r->results[i].nfailures; f++)
            printf("%s:%d: %s\n", r->cases_file, items[i].line, r->results[i].failures[f]);
    printf("%zu case%s, %zu passed, %zu failed\n", r->n, r->n == 1 ? "" : "s", r->passed,
           r->n - r->passed);
}

/* Runs every case; -1 when out of memory. */
static int run_all(run_t *r)
{
    size_t n = 0;
    const sg_policy_case_t *items = sg_policy_cases(r->cases, &n);
    r->results = calloc(n ? n : 1, sizeof(*r->results));
    if (!r->results)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (sg_policy_case_run(r->policy, &items[i], &r->results[i]) != SG_OK)
            return -1;
        r->n++;
        r->passed += (size_t)r->results[i].passed;
    }
    return 0;
}

int sg_cli_policy_test(int argc, char **argv)
{
    const char *files[2] = {NULL, NULL}, *config = NULL;
    int nfiles = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *opt = argv[i];
        if (strcmp(opt, "--help") == 0)
            return sg_cli_policy_usage(stdout);
        if (strcmp(opt, "--json") == 0) {
            json = 1;
        } else if (sg_cli_take_option(argc, argv, &i, "--config", &v)) {
            if (!v)
                return usage_error("policy test: %s needs a DEPLOYMENT config file", opt);
            config = v;
        } else if (sg_cli_is_option(opt)) {
            return usage_error("policy test: unknown option '%s'", opt);
        } else if (nfiles == 2) {
            return usage_error("policy test: a POLICY and a CASES file only ('%s' is a third)",
                               opt);
        } else {
            files[nfiles++] = opt;
        }
    }
    if (nfiles < 2)
        return usage_error("policy test: which POLICY and CASES files?");

    sg_cli_deployment_t dep = {.apps = NULL};
    if (config && sg_cli_deployment_load(config, &dep) != 0) {
        sg_cli_deployment_free(&dep);
        return 1;
    }
    run_t r = {.policy_file = files[0], .cases_file = files[1]};
    sg_diags_init(&r.pdiags);
    sg_diags_init(&r.cdiags);
    int status = 1, nomem = 0;
    sg_policy_opts_t opts = {.known_apps = config ? dep.apps : NULL};
    sg_rc prc = sg_policy_load(r.policy_file, &opts, &r.policy, &r.pdiags);
    /* The cases file is read even when the policy is bad: its own mistakes show at once. */
    sg_rc crc = prc == SG_ERR_NOMEM
                    ? SG_ERR_NOMEM
                    : sg_policy_cases_load(r.cases_file, r.policy, &r.cases, &r.cdiags);
    if (prc == SG_ERR_NOMEM || crc == SG_ERR_NOMEM) {
        nomem = 1;
        goto done;
    }
    int valid = prc == SG_OK && crc == SG_OK;
    if (valid && run_all(&r) != 0) {
        nomem = 1;
        goto done;
    }
    if (json) {
        if (print_json(&r, valid) != 0)
            goto done;
    } else {
        /* stdout is only the cases' results */
        sg_diags_print(&r.pdiags, stderr);
        sg_diags_print(&r.cdiags, stderr);
        if (prc != SG_OK)
            fprintf(stderr, "scopegate: %s: the policy has errors; no case was run\n",
                    r.policy_file);
        if (crc != SG_OK)
            fprintf(stderr, "scopegate: %s: the cases file has errors; no case was run\n",
                    r.cases_file);
        if (valid)
            print_text(&r);
    }
    status = valid && r.passed == r.n ? 0 : 1;
done:
    if (nomem)
        fprintf(stderr, "scopegate: out of memory\n");
    for (size_t i = 0; r.results && i < r.n; i++)
        sg_policy_case_result_free(&r.results[i]);
    free(r.results);
    sg_policy_cases_free(r.cases);
    sg_policy_free(r.policy);
    sg_diags_free(&r.pdiags);
    sg_diags_free(&r.cdiags);
    if (config)
        sg_cli_deployment_free(&dep);
    return status;
}
