/* Durations as people write them in config files: "90s", "30m", "8h", "30d", or bare seconds. */
#ifndef SCOPEGATE_DURATION_H
#define SCOPEGATE_DURATION_H

#include "scopegate/rc.h"

/*
 * Parses a non-negative duration into seconds. Units: s, m, h, d (one unit, no spaces);
 * no unit means seconds. Rejects empty text, signs, overflow past 100 years, junk.
 */
sg_rc sg_duration_parse(const char *s, long long *seconds);

#endif
