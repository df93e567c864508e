/* Commands of the scopegate binary that live outside main.c, one entry point per group. */
#ifndef SCOPEGATE_CLI_H
#define SCOPEGATE_CLI_H

#include <stdio.h>

/* `scopegate policy ...`: argv[0] is "policy". Returns the exit status (2: usage). */
int sg_cli_policy(int argc, char **argv);

/* `scopegate grants list|check|explain|report ...`: argv[0] is "grants". Exit status 0 fine,
 * 1 unhealthy (check), no such grant (explain) or the report not written out (report),
 * 2 usage/config, 3 gateway unreachable. */
int sg_cli_grants(int argc, char **argv);

/* `scopegate store migrate --config FILE`: argv[0] is "store". 0 done, 1 failed, 2 usage. */
int sg_cli_store(int argc, char **argv);

/*
 * Matches "--name VALUE" or "--name=VALUE" at argv[*i] (moving *i past VALUE): 1 with *value
 * set, or NULL when VALUE is missing; 0 when argv[*i] is another argument.
 */
int sg_cli_take_option(int argc, char **argv, int *i, const char *name, const char **value);

/* Says "scopegate: MESSAGE" on stderr, then the command's usage (usage(stderr)), and returns
 * what usage returns: the usage exit status. */
int sg_cli_usage_error(int (*usage)(FILE *out), const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
