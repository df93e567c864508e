#include "scopegate/rc.h"

const char *sg_rc_str(sg_rc rc)
{
    switch (rc) {
    case SG_OK:
        return "ok";
    case SG_ERR_NOMEM:
        return "nomem";
    case SG_ERR_TOO_BIG:
        return "too_big";
    case SG_ERR_PARSE:
        return "parse";
    case SG_ERR_DUP:
        return "duplicate";
    case SG_ERR_NOTFOUND:
        return "not_found";
    case SG_ERR_CRYPTO:
        return "crypto";
    case SG_ERR_IO:
        return "io";
    case SG_ERR_CONFIG:
        return "config";
    case SG_ERR_DENIED:
        return "denied";
    case SG_ERR_BUSY:
        return "busy";
    }
    return "unknown";
}
