/* The web layer's entry point for the CLI: the daemon, `scopegate serve`. */
#ifndef SCOPEGATE_SERVE_H
#define SCOPEGATE_SERVE_H

/* `scopegate serve --config FILE`: argv[0] is the first argument after "serve". Runs until
 * SIGTERM or SIGINT; the exit status. */
int sg_cmd_serve(int argc, char **argv);

#endif
