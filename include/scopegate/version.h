#ifndef SCOPEGATE_VERSION_H
#define SCOPEGATE_VERSION_H

#include <stddef.h>

/* Set by meson from project(version:). */
const char *sg_version(void);

/* A library the binary uses: the version its headers had when built, and the one it runs
 * with (a shared library may have been upgraded since). Each module fills in its own. */
typedef struct {
    const char *name;
    char built[32];
    char running[32]; /* "" when the library cannot say */
} sg_lib_version_t;

/* cJSON's (base uses it for every JSON text). */
void sg_version_cjson(sg_lib_version_t *v);

#endif
