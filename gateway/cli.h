/* Commands of the scopegate binary that live outside main.c, one entry point per group. */
#ifndef SCOPEGATE_CLI_H
#define SCOPEGATE_CLI_H

/* `scopegate policy ...`: argv[0] is "policy". Returns the exit status (2: usage). */
int sg_cli_policy(int argc, char **argv);

/* `scopegate serve --config FILE`: argv[0] is the first argument after "serve". */
int sg_cmd_serve(int argc, char **argv);

#endif
