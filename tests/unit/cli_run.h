/*
 * Running the built scopegate from a unit test of its commands (test_*_cli.c): arguments,
 * standard input, exit status, standard output and error, and assertions that show all three.
 * Include after <cmocka.h>; main sets scopegate (its first argument, or $SCOPEGATE).
 */
#ifndef SG_CLI_RUN_H
#define SG_CLI_RUN_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *scopegate;

typedef struct {
    int status; /* exit status, or -1 when killed by a signal */
    char *out;
    char *err;
} run_t;

/* A temporary file's whole contents (written up to its current end); the file is closed. */
static inline char *slurp(FILE *f)
{
    fflush(f);
    long size = ftell(f);
    assert_true(size >= 0);
    char *s = malloc((size_t)size + 1);
    assert_non_null(s);
    rewind(f);
    assert_int_equal(fread(s, 1, (size_t)size, f), (size_t)size);
    s[size] = '\0';
    fclose(f);
    return s;
}

/* Runs scopegate with the NULL-terminated arguments; input (may be NULL) on its stdin. */
static inline run_t run(const char *input, ...)
{
    const char *argv[16] = {scopegate};
    va_list ap;
    va_start(ap, input);
    for (size_t i = 1; i < 15; i++) {
        argv[i] = va_arg(ap, const char *);
        if (!argv[i])
            break;
    }
    va_end(ap);
    FILE *out = tmpfile(), *err = tmpfile(), *in = tmpfile();
    assert_non_null(out);
    assert_non_null(err);
    assert_non_null(in);
    if (input)
        fputs(input, in);
    fflush(in);
    rewind(in);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fileno(in), STDIN_FILENO);
        dup2(fileno(out), STDOUT_FILENO);
        dup2(fileno(err), STDERR_FILENO);
        execv(scopegate, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    fclose(in);
    fseek(out, 0, SEEK_END);
    fseek(err, 0, SEEK_END);
    run_t r = {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
    return r;
}

static inline void run_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

static inline void expect_status(const run_t *r, int want)
{
    if (r->status != want)
        print_error("expected exit %d, got %d\nstdout:\n%s\nstderr:\n%s\n", want, r->status, r->out,
                    r->err);
    assert_int_equal(r->status, want);
}

static inline void expect_text(const char *what, const char *got, const char *want)
{
    if (strcmp(got, want) != 0)
        print_error("expected %s\n%s\ngot\n%s\n", what, want, got);
    assert_string_equal(got, want);
}

static inline void expect_contains(const char *what, const char *text, const char *want)
{
    if (!strstr(text, want))
        print_error("expected %s to contain\n  %s\ngot:\n%s\n", what, want, text);
    assert_non_null(strstr(text, want));
}

#endif
