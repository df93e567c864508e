#include "scopegate/version.h"

const char *sg_version(void)
{
    return SG_VERSION;
}
