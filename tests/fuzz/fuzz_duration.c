/* Durations from config files, checked against a plain reference reading of the grammar. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/duration.h"

#define MAX_SECONDS (100LL * 366 * 86400)

/* digits, then at most one of s m h d, then the end; at most 100 years. */
static int reference(const char *s, long long *out)
{
    size_t digits = strspn(s, "0123456789");
    if (digits == 0)
        return 0;
    long long mult = 1;
    const char *unit = s + digits;
    if (*unit && strchr("smhd", *unit) && unit[1] == '\0')
        mult = *unit == 's' ? 1 : *unit == 'm' ? 60 : *unit == 'h' ? 3600 : 86400;
    else if (*unit)
        return 0;
    while (digits > 1 && *s == '0')
        s++, digits--;
    if (digits > 12) /* more than 10^12 seconds is far past the limit */
        return 0;
    long long v = 0;
    for (size_t i = 0; i < digits; i++)
        v = v * 10 + (s[i] - '0');
    if (v > MAX_SECONDS / mult)
        return 0;
    *out = v * mult;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = strndup((const char *)data, size);
    if (!s)
        abort();
    long long got = -1, want = -1;
    sg_rc rc = sg_duration_parse(s, &got);
    int ok = reference(s, &want);
    if ((rc == SG_OK) != ok)
        abort();
    if (ok && got != want)
        abort();
    if (!ok && (rc != SG_ERR_PARSE || got != -1))
        abort();
    free(s);
    return 0;
}
