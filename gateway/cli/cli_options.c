/* Option parsing shared by the commands (cli.h): below main.c and every cli_*.c. */
#include "cli.h"

#include <stdarg.h>
#include <string.h>

/*
 * Matches "--name VALUE" or "--name=VALUE" at argv[*i] (moving *i past VALUE): 1 with *value
 * set, or NULL when VALUE is missing; 0 when argv[*i] is another argument.
 */
int sg_cli_take_option(int argc, char **argv, int *i, const char *name, const char **value)
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

int sg_cli_is_option(const char *arg)
{
    return arg[0] == '-' && arg[1] != '\0';
}

int sg_cli_usage_error(int (*usage)(FILE *out), const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "scopegate: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return usage(stderr);
}
