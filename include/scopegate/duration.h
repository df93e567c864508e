/* Durations as people write them in config files: "90s", "30m", "8h", "30d", or bare seconds. */
#ifndef SCOPEGATE_DURATION_H
#define SCOPEGATE_DURATION_H

#include <stddef.h>

#include "scopegate/rc.h"

/*
 * Parses a non-negative duration into seconds. Units: s, m, h, d (one unit, no spaces);
 * no unit means seconds. Rejects empty text, signs, overflow past 100 years, junk.
 */
sg_rc sg_duration_parse(const char *s, long long *seconds);

/* seconds as people write it in the files: the largest unit that divides it evenly ("15m",
 * "4h", "30d", "90m", "45s"; "0s"). out holds at least 24 bytes. Returns out. */
const char *sg_duration_format(long long seconds, char *out, size_t n);

#endif
