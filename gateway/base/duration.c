#include "scopegate/duration.h"

#include <stdio.h>

#include <ctype.h>

#define MAX_SECONDS (100LL * 366 * 86400)

sg_rc sg_duration_parse(const char *s, long long *seconds)
{
    if (!s || !isdigit((unsigned char)*s))
        return SG_ERR_PARSE;
    long long v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s - '0');
        if (v > MAX_SECONDS)
            return SG_ERR_PARSE;
        s++;
    }
    long long mult = 1;
    switch (*s) {
    case '\0':
        break;
    case 's':
        s++;
        break;
    case 'm':
        mult = 60, s++;
        break;
    case 'h':
        mult = 3600, s++;
        break;
    case 'd':
        mult = 86400, s++;
        break;
    default:
        return SG_ERR_PARSE;
    }
    if (*s != '\0' || v > MAX_SECONDS / mult)
        return SG_ERR_PARSE;
    *seconds = v * mult;
    return SG_OK;
}

const char *sg_duration_format(long long seconds, char *out, size_t n)
{
    if (seconds != 0 && seconds % 86400 == 0)
        snprintf(out, n, "%lldd", seconds / 86400);
    else if (seconds != 0 && seconds % 3600 == 0)
        snprintf(out, n, "%lldh", seconds / 3600);
    else if (seconds != 0 && seconds % 60 == 0)
        snprintf(out, n, "%lldm", seconds / 60);
    else
        snprintf(out, n, "%llds", seconds);
    return out;
}
