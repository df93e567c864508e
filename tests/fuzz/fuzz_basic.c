/*
 * HTTP Basic credentials (client authentication at the token endpoint). The input is parsed
 * as a header; then, read as "user:pass", encoded the RFC 6749 way and parsed back.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/http.h"

static void check_round_trip(const char *user, const char *pass)
{
    char *eu = sg_url_encode(user), *ep = sg_url_encode(pass);
    sg_buf_t raw, header;
    sg_buf_init(&raw, 1 << 20);
    sg_buf_init(&header, 1 << 20);
    if (!eu || !ep || sg_buf_printf(&raw, "%s:%s", eu, ep))
        abort();
    char *b64 = sg_b64_encode(raw.ptr, raw.len, SG_B64_STD);
    if (!b64 || sg_buf_printf(&header, "Basic %s", b64))
        abort();
    char *u, *p;
    sg_rc rc = sg_basic_auth_parse(header.ptr, &u, &p);
    if (strlen(b64) > 4096) {
        if (rc != SG_ERR_TOO_BIG || u || p)
            abort();
    } else {
        if (rc || strcmp(u, user) != 0 || strcmp(p, pass) != 0)
            abort();
        free(u);
        free(p);
    }
    free(b64);
    sg_buf_free(&raw);
    sg_buf_free(&header);
    free(eu);
    free(ep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = strndup((const char *)data, size);
    if (!s)
        abort();
    char *user = (char *)"x", *pass = (char *)"x";
    if (sg_basic_auth_parse(s, &user, &pass) == SG_OK) {
        if (!user || !pass)
            abort();
        free(user);
        free(pass);
    } else if (user || pass) {
        abort();
    }

    if (!memchr(data, '\0', size)) {
        char *colon = strchr(s, ':');
        if (colon) {
            *colon = '\0';
            check_round_trip(s, colon + 1);
        } else {
            check_round_trip(s, "");
        }
    }
    free(s);
    return 0;
}
