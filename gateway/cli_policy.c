/*
 * `scopegate policy check` and `scopegate policy explain`: the policy engine for the people
 * who own the policy. Exit status 0 for success, 1 when the policy or the claims are bad,
 * 2 for a usage error.
 */
#include "cli.h"

#include "scopegate/buf.h"
#include "scopegate/policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CLAIMS_MAX_BYTES (1024 * 1024)

static int usage(FILE *out)
{
    fprintf(out,
            "usage: scopegate policy check FILE [--json]\n"
            "       scopegate policy explain FILE (--claims JSON | --claims-file PATH)\n"
            "\n"
            "  check    report each problem of the policy as FILE:LINE: error|warning: ...;\n"
            "           exit 0 when there is no error (warnings allowed), 1 otherwise\n"
            "  explain  print as JSON the role these claims get, the rule that matched and why\n"
            "           each rule before it did not (--claims-file - reads standard input)\n");
    return out == stderr ? 2 : 0;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "scopegate: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return usage(stderr);
}

/*
 * Matches "--name VALUE" or "--name=VALUE" at argv[*i] (moving *i past VALUE): 1 with *value
 * set, or NULL when VALUE is missing; 0 when argv[*i] is another argument.
 */
static int take_option(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    *value = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static int is_option(const char *arg)
{
    return arg[0] == '-' && arg[1] != '\0';
}

static int print_check_json(const char *file, int valid, const sg_diags_t *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *list = NULL;
    char *text = NULL;
    if (!o || !cJSON_AddStringToObject(o, "file", file) ||
        !cJSON_AddBoolToObject(o, "valid", valid))
        goto fail;
    list = cJSON_AddArrayToObject(o, "diagnostics");
    if (!list)
        goto fail;
    for (size_t i = 0; i < d->n; i++) {
        cJSON *g = cJSON_CreateObject();
        if (!g || !cJSON_AddItemToArray(list, g)) {
            cJSON_Delete(g);
            goto fail;
        }
        if (!cJSON_AddNumberToObject(g, "line", d->item[i].line) ||
            !cJSON_AddStringToObject(g, "severity", sg_diag_severity_str(d->item[i].severity)) ||
            !cJSON_AddStringToObject(g, "message", d->item[i].message))
            goto fail;
    }
    text = cJSON_PrintUnformatted(o);
    if (!text)
        goto fail;
    printf("%s\n", text);
    cJSON_free(text);
    cJSON_Delete(o);
    return 0;
fail:
    cJSON_Delete(o);
    fprintf(stderr, "scopegate: out of memory\n");
    return -1;
}

static int check(int argc, char **argv)
{
    const char *file = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--help") == 0)
            return usage(stdout);
        else if (is_option(argv[i]))
            return usage_error("policy check: unknown option '%s'", argv[i]);
        else if (file)
            return usage_error("policy check: one FILE only ('%s' is a second)", argv[i]);
        else
            file = argv[i];
    }
    if (!file)
        return usage_error("policy check: which FILE?");

    sg_diags_t d;
    sg_diags_init(&d);
    sg_rc rc = sg_policy_load(file, NULL, NULL, &d);
    int status = rc == SG_OK ? 0 : 1;
    if (rc == SG_ERR_NOMEM)
        fprintf(stderr, "scopegate: out of memory\n");
    else if (json && print_check_json(file, rc == SG_OK, &d) != 0)
        status = 1;
    else if (!json)
        sg_diags_print(&d, stdout);
    sg_diags_free(&d);
    return status;
}

/* The claims object from --claims TEXT or --claims-file PATH ("-": stdin); NULL, said why. */
static cJSON *read_claims(const char *arg, const char *path)
{
    sg_buf_t b;
    sg_buf_init(&b, CLAIMS_MAX_BYTES);
    const char *text = arg, *what = "--claims";
    if (path) {
        what = path;
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "scopegate: %s: %s\n", path, strerror(errno));
            return NULL;
        }
        sg_rc rc = sg_buf_add_file(&b, f);
        int err = errno;
        if (f != stdin)
            fclose(f);
        if (rc) {
            fprintf(stderr, "scopegate: %s: %s\n", path,
                    rc == SG_ERR_TOO_BIG ? "larger than 1 MiB"
                    : rc == SG_ERR_IO    ? strerror(err)
                                         : "out of memory");
            return NULL;
        }
        text = b.ptr ? b.ptr : "";
    }
    size_t len = path ? b.len : strlen(arg);
    const char *end = NULL;
    cJSON *claims = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (claims) {
        while (end < text + len && strchr(" \t\r\n", *end))
            end++;
    }
    if (!claims || end < text + len) {
        fprintf(stderr, "scopegate: %s: not valid JSON (at byte %zu)\n", what,
                end ? (size_t)(end - text) : 0);
        cJSON_Delete(claims);
        claims = NULL;
    } else if (!cJSON_IsObject(claims)) {
        fprintf(stderr,
                "scopegate: %s: the claims must be a JSON object, such as "
                "{\"preferred_username\":\"admin@acme.example\",\"groups\":[\"gateway-admins\"]}\n",
                what);
        cJSON_Delete(claims);
        claims = NULL;
    }
    sg_buf_free(&b);
    return claims;
}

static int explain(int argc, char **argv)
{
    const char *file = NULL, *claims_arg = NULL, *claims_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL, *opt = argv[i];
        if (strcmp(opt, "--help") == 0)
            return usage(stdout);
        if (take_option(argc, argv, &i, "--claims-file", &v)) {
            if (!v)
                return usage_error("policy explain: %s needs a PATH", opt);
            claims_path = v;
        } else if (take_option(argc, argv, &i, "--claims", &v)) {
            if (!v)
                return usage_error("policy explain: %s needs a JSON object", opt);
            claims_arg = v;
        } else if (is_option(opt)) {
            return usage_error("policy explain: unknown option '%s'", opt);
        } else if (file) {
            return usage_error("policy explain: one FILE only ('%s' is a second)", opt);
        } else {
            file = opt;
        }
    }
    if (!file)
        return usage_error("policy explain: which FILE?");
    if (!claims_arg == !claims_path)
        return usage_error("policy explain: give the claims with one of --claims or --claims-file");

    cJSON *claims = read_claims(claims_arg, claims_path);
    if (!claims)
        return 1;
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *policy = NULL;
    sg_rc rc = sg_policy_load(file, NULL, &policy, &d);
    sg_diags_print(&d, stderr); /* warnings too: stdout is only the JSON */
    sg_diags_free(&d);
    cJSON *result = NULL;
    char *text = NULL;
    if (rc == SG_ERR_CONFIG)
        fprintf(stderr, "scopegate: %s: the policy has errors; nothing to explain\n", file);
    else if (rc == SG_OK)
        rc = sg_policy_explain(policy, claims, &result);
    if (rc == SG_OK)
        text = cJSON_Print(result);
    if (text)
        printf("%s\n", text);
    else if (rc == SG_OK || rc == SG_ERR_NOMEM)
        fprintf(stderr, "scopegate: out of memory\n");
    else if (rc == SG_ERR_NOTFOUND)
        fprintf(stderr, "scopegate: %s: no rule matches these claims\n", file);
    cJSON_free(text);
    cJSON_Delete(result);
    sg_policy_free(policy);
    cJSON_Delete(claims);
    return text ? 0 : 1;
}

int sg_cli_policy(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "check") == 0)
        return check(argc - 1, argv + 1);
    if (strcmp(argv[1], "explain") == 0)
        return explain(argc - 1, argv + 1);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(stdout);
    return usage_error("unknown policy command '%s'", argv[1]);
}
