/* Commands of the scopegate binary that live outside main.c, one entry point per group. */
#ifndef SCOPEGATE_CLI_H
#define SCOPEGATE_CLI_H

/* `scopegate policy ...`: argv[0] is "policy". Returns the exit status (2: usage). */
int sg_cli_policy(int argc, char **argv);

/* `scopegate grants list|check|explain ...`: argv[0] is "grants". Exit status 0 fine,
 * 1 unhealthy (check) or no such grant (explain), 2 usage/config, 3 gateway unreachable. */
int sg_cli_grants(int argc, char **argv);

/* `scopegate serve --config FILE`: argv[0] is the first argument after "serve". */
int sg_cmd_serve(int argc, char **argv);

#endif
