/*
 * Header parsing: Cookie lookup and Content-Type matching. The input is "NAME\nHEADER":
 * the first line is the cookie name (or media type) to look for, the rest the header value.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t namelen = nl ? (size_t)(nl - data) : 0;
    const uint8_t *rest = nl ? nl + 1 : data;
    char *name = strndup((const char *)data, namelen);
    char *header = strndup((const char *)rest, size - (size_t)(rest - data));
    if (!name || !header)
        abort();

    char *value = sg_cookie_get(header, name);
    if (value) {
        /* A value is a piece of the header and never crosses a cookie boundary. */
        if (!strstr(header, value) || strchr(value, ';'))
            abort();
        size_t vlen = strlen(value);
        if (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
            abort();
        free(value);
    }
    if (sg_cookie_get(NULL, name) || sg_cookie_get(header, NULL))
        abort();

    (void)sg_content_type_is(header, name);
    if (*name && !strchr(name, ' ') && !sg_content_type_is(name, name))
        abort(); /* a type without spaces always matches itself */

    free(name);
    free(header);
    return 0;
}
