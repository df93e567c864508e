/* One status type for every module: callers write `rc = f(...); if (rc) return rc;`. */
#ifndef SCOPEGATE_RC_H
#define SCOPEGATE_RC_H

typedef enum {
    SG_OK = 0,
    SG_ERR_NOMEM,    /* allocation failed */
    SG_ERR_TOO_BIG,  /* a bound was reached (buffer, field count, length) */
    SG_ERR_PARSE,    /* malformed input */
    SG_ERR_DUP,      /* a field that may appear once appeared twice */
    SG_ERR_NOTFOUND, /* lookup missed */
    SG_ERR_CRYPTO,   /* OpenSSL failed or a signature did not verify */
    SG_ERR_IO,       /* file or socket error */
    SG_ERR_CONFIG,   /* configuration is invalid */
    SG_ERR_DENIED,   /* the request is not allowed */
    SG_ERR_BUSY,     /* someone else holds it (a lock not obtained in time) */
} sg_rc;

/* A short, stable name for logs and tests ("nomem", "too_big", ...). */
const char *sg_rc_str(sg_rc rc);

#endif
