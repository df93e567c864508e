/* Commands of the scopegate binary that live outside main.c, one entry point per group. */
#ifndef SCOPEGATE_CLI_H
#define SCOPEGATE_CLI_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "scopegate/config.h"
#include "scopegate/diag.h"

/* The exit statuses of the commands that ask the running gateway. */
#define SG_EXIT_OK          0
#define SG_EXIT_FAILED      1 /* the command's own "no": unhealthy, nothing matched */
#define SG_EXIT_USAGE       2
#define SG_EXIT_UNREACHABLE 3

/* `scopegate policy ...`: argv[0] is "policy". Returns the exit status (2: usage). */
int sg_cli_policy(int argc, char **argv);
/* `scopegate policy test POLICY CASES ...`: argv[0] is "test" (cli_policy_test.c). */
int sg_cli_policy_test(int argc, char **argv);
/* The policy commands' usage: on stdout (returns 0) or stderr (returns 2). */
int sg_cli_policy_usage(FILE *out);

/* What the policy commands read from a deployment config (--config): its app names, for
 * checking the policy's, and the path of its database. */
typedef struct {
    sg_config_t cfg;
    const char **apps; /* NULL-terminated, pointing into cfg */
    char *db;          /* state_dir/scopegate.db */
} sg_cli_deployment_t;

/* Loads the deployment config at path; on failure says why on stderr and returns -1 (free
 * it all the same). */
int sg_cli_deployment_load(const char *path, sg_cli_deployment_t *dep);
void sg_cli_deployment_free(sg_cli_deployment_t *dep);

/* `scopegate grants list|check|explain|report ...`: argv[0] is "grants". Exit status 0 fine,
 * 1 unhealthy (check), no such grant (explain) or the report not written out (report),
 * 2 usage/config, 3 gateway unreachable. */
int sg_cli_grants(int argc, char **argv);

/* `scopegate config check|keys ...`: argv[0] is "config" (cli_config.c). Exit status 0 no
 * errors, 1 errors, 2 usage. */
int sg_cli_config(int argc, char **argv);
/* The config commands' usage: on stdout (returns 0) or stderr (returns 2). */
int sg_cli_config_usage(FILE *out);

/* `scopegate store migrate --config FILE`: argv[0] is "store". 0 done, 1 failed, 2 usage. */
int sg_cli_store(int argc, char **argv);

/* `scopegate doctor [--config FILE]`: argv[0] is "doctor". Exit status 0 nothing failed
 * (warnings allowed), 1 something failed, 2 usage (cli_doctor.c). */
int sg_cli_doctor(int argc, char **argv);

/* `scopegate sessions list|end ...`: argv[0] is "sessions". Exit status 0 done, 1 no session
 * matched (nothing listed or ended), 2 usage/config, 3 gateway unreachable. */
int sg_cli_sessions(int argc, char **argv);

/*
 * Matches "--name VALUE" or "--name=VALUE" at argv[*i] (moving *i past VALUE): 1 with *value
 * set, or NULL when VALUE is missing; 0 when argv[*i] is another argument.
 */
int sg_cli_take_option(int argc, char **argv, int *i, const char *name, const char **value);

/* An option rather than an operand: starts with '-' and is not "-" alone (standard input). */
int sg_cli_is_option(const char *arg);

/* Says "scopegate: MESSAGE" on stderr, then the command's usage (usage(stderr)), and returns
 * what usage returns: the usage exit status. */
int sg_cli_usage_error(int (*usage)(FILE *out), const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- tables and the gateway's answers, for people (cli_table.c) ---- */

/* A table printed with each column as wide as its widest cell. A failed allocation is
 * remembered and said by sg_cli_table_print (-1), so rows may be added without checks. */
typedef struct sg_cli_table sg_cli_table_t;
sg_cli_table_t *sg_cli_table_new(size_t ncols, const char *const *head); /* NULL: no memory */
void sg_cli_table_row(sg_cli_table_t *t, const char *const *cells);      /* copies; NULL: "-" */
int sg_cli_table_print(sg_cli_table_t *t);                               /* on stdout */
void sg_cli_table_free(sg_cli_table_t *t);
/* "2026-11-27 09:50:12Z" (UTC) in buf, or "-" for 0 (never). */
const char *sg_cli_when(long long t, char *buf, size_t len);
const char *sg_cli_or_dash(const char *s); /* "-" for NULL and "" */
/* A string member of a JSON object, or NULL; a number member, or 0. */
const char *sg_cli_jstr(const cJSON *o, const char *key);
long long sg_cli_jnum(const cJSON *o, const char *key);
/* Prints o as one line of JSON, or indented with pretty; -1 out of memory (said). */
int sg_cli_print_json(const cJSON *o, int pretty);
/* Appends d's diagnostics as {"file","line","severity","message"} to list; -1 out of memory. */
int sg_cli_diags_json(cJSON *list, const sg_diags_t *d);

/* ---- asking the running gateway (cli_gateway.c) ---- */

typedef struct {
    char *base; /* "http://127.0.0.1:8081", no trailing slash */
    char *key;  /* the internal listener's bearer key */
    const char *config;
} sg_cli_gw_t;

/* --config's default: $SCOPEGATE_CONFIG, then /etc/scopegate/scopegate.cfg when readable. */
const char *sg_cli_default_config(void);
/* Reads the config for where the internal listener is (url overrides) and its key; an exit
 * status, SG_EXIT_OK when c is usable (then sg_cli_gw_close it). Problems said on stderr. */
int sg_cli_gw_open(sg_cli_gw_t *c, const char *config, const char *url);
void sg_cli_gw_close(sg_cli_gw_t *c);
/* One call (body, when not NULL, sent as JSON); *json gets the parsed answer (caller deletes).
 * The HTTP status, or 0 when no answer came (said on stderr). */
long sg_cli_gw_call(const sg_cli_gw_t *c, const char *method, const char *path, const cJSON *body,
                    cJSON **json);
/* A whole command: sets up the HTTP client, opens the gateway (config, url), runs
 * fn(args, gateway), and tidies up; fn's exit status, or the one that stopped it earlier. */
typedef int (*sg_cli_gw_fn)(const void *args, const sg_cli_gw_t *c);
int sg_cli_gw_run(const char *config, const char *url, sg_cli_gw_fn fn, const void *args);
/* The exit status for an answer that is not the one wanted, the gateway's words on stderr:
 * 3 no answer or a 5xx, 2 for 400/401/403 (asked wrongly, or the wrong key), else 1. */
int sg_cli_gw_error(const sg_cli_gw_t *c, long status, const cJSON *j, const char *what);

#endif
