/*
 * HTTP helpers shared by the gateway and the simulator: bounded form and query parsing,
 * percent-encoding, cookies and Basic credentials. The server is scopegate/http_server.h.
 */
#ifndef SCOPEGATE_HTTP_H
#define SCOPEGATE_HTTP_H

#include <stddef.h>
#include "scopegate/buf.h"
#include "scopegate/rc.h"

#define SG_FORM_MAX_FIELDS 64

typedef struct {
    char *key;
    char *value;
} sg_kv_t;

typedef struct {
    sg_kv_t item[SG_FORM_MAX_FIELDS];
    size_t n;
    int has_dup; /* some key appeared more than once (all copies are kept) */
} sg_form_t;

/*
 * Parses application/x-www-form-urlencoded text (also a query string without '?').
 * '+' is a space; malformed %-escapes and embedded NULs are SG_ERR_PARSE;
 * more than SG_FORM_MAX_FIELDS fields is SG_ERR_TOO_BIG. On error the form is empty.
 */
sg_rc sg_form_parse(const char *s, size_t len, sg_form_t *form);
/* Adds an already-decoded pair (copies both). */
sg_rc sg_form_add(sg_form_t *form, const char *key, const char *value);
const char *sg_form_get(const sg_form_t *form, const char *key);
/* The first key that appears more than once, or NULL. */
const char *sg_form_first_dup(const sg_form_t *form);
/* How many times key appears. */
size_t sg_form_count(const sg_form_t *form, const char *key);
void sg_form_free(sg_form_t *form);

/* Percent-encodes everything but unreserved characters (RFC 3986). */
char *sg_url_encode(const char *s);
/* Percent-decodes s[0..len) into a new string, '+' as a space; NULL on a bad escape, an
 * encoded NUL or a NUL byte (nothing half-decoded escapes). */
char *sg_url_decode(const char *s, size_t len);
/* Value of cookie name in a Cookie header, copied; NULL when absent. */
char *sg_cookie_get(const char *header, const char *name);
/* The same without copying: a pointer into header and the value's length (hot paths). */
const char *sg_cookie_find(const char *header, const char *name, size_t *len);

/* Splits "Basic base64(user:pass)"; both outputs are heap strings. */
sg_rc sg_basic_auth_parse(const char *header, char **user, char **pass);

/* Case-insensitive: does the Content-Type header name this media type (parameters ignored)? */
int sg_content_type_is(const char *header, const char *media_type);

#endif
