/* scopegate's version, and cJSON's (version.h). */
#include "scopegate/version.h"

#include <cjson/cJSON.h>
#include <stdio.h>

const char *sg_version(void)
{
    return SG_VERSION;
}

void sg_version_cjson(sg_lib_version_t *v)
{
    v->name = "cJSON";
    snprintf(v->built, sizeof(v->built), "%d.%d.%d", CJSON_VERSION_MAJOR, CJSON_VERSION_MINOR,
             CJSON_VERSION_PATCH);
    snprintf(v->running, sizeof(v->running), "%s", cJSON_Version());
}
