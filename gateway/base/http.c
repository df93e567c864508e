#include "scopegate/http.h"
#include "scopegate/crypto.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

char *sg_url_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            out[o++] = ' ';
        } else if (c == '%') {
            if (len - i < 3)
                goto bad;
            int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                goto bad;
            out[o++] = (char)(h << 4 | l);
            i += 2;
        } else if (c == '\0') {
            goto bad;
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

void sg_form_free(sg_form_t *form)
{
    for (size_t i = 0; i < form->n; i++) {
        free(form->item[i].key);
        free(form->item[i].value);
    }
    form->n = 0;
    form->has_dup = 0;
}

sg_rc sg_form_add(sg_form_t *form, const char *key, const char *value)
{
    if (form->n >= SG_FORM_MAX_FIELDS)
        return SG_ERR_TOO_BIG;
    char *k = strdup(key), *v = strdup(value ? value : "");
    if (!k || !v) {
        free(k);
        free(v);
        return SG_ERR_NOMEM;
    }
    if (sg_form_count(form, k))
        form->has_dup = 1;
    form->item[form->n].key = k;
    form->item[form->n].value = v;
    form->n++;
    return SG_OK;
}

sg_rc sg_form_parse(const char *s, size_t len, sg_form_t *form)
{
    form->n = 0;
    form->has_dup = 0;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && s[end] != '&')
            end++;
        if (end > i) {
            const char *eq = memchr(s + i, '=', end - i);
            size_t klen = eq ? (size_t)(eq - (s + i)) : end - i;
            char *k = sg_url_decode(s + i, klen);
            char *v = eq ? sg_url_decode(eq + 1, (size_t)(s + end - eq - 1)) : strdup("");
            sg_rc rc = (!k || !v) ? SG_ERR_PARSE : sg_form_add(form, k, v);
            free(k);
            free(v);
            if (rc) {
                sg_form_free(form);
                return rc;
            }
        }
        i = end + 1;
    }
    return SG_OK;
}

const char *sg_form_get(const sg_form_t *form, const char *key)
{
    for (size_t i = 0; i < form->n; i++)
        if (strcmp(form->item[i].key, key) == 0)
            return form->item[i].value;
    return NULL;
}

const char *sg_form_first_dup(const sg_form_t *form)
{
    if (!form->has_dup)
        return NULL;
    for (size_t i = 0; i < form->n; i++)
        if (sg_form_count(form, form->item[i].key) > 1)
            return form->item[i].key;
    return NULL;
}

size_t sg_form_count(const sg_form_t *form, const char *key)
{
    size_t n = 0;
    for (size_t i = 0; i < form->n; i++)
        if (strcmp(form->item[i].key, key) == 0)
            n++;
    return n;
}

char *sg_url_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(s);
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

const char *sg_cookie_find(const char *header, const char *name, size_t *len)
{
    if (!header || !name)
        return NULL;
    size_t nlen = strlen(name);
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == ';' || *p == '\t')
            p++;
        const char *end = strchr(p, ';');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (plen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1;
            size_t vlen = plen - nlen - 1;
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            *len = vlen;
            return v;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return NULL;
}

char *sg_cookie_get(const char *header, const char *name)
{
    size_t len;
    const char *v = sg_cookie_find(header, name, &len);
    return v ? strndup(v, len) : NULL;
}

sg_rc sg_basic_auth_parse(const char *header, char **user, char **pass)
{
    *user = NULL;
    *pass = NULL;
    if (!header || strncasecmp(header, "Basic ", 6) != 0)
        return SG_ERR_PARSE;
    const char *b64 = header + 6;
    while (*b64 == ' ')
        b64++;
    size_t blen = strnlen(b64, 4097);
    if (blen > 4096)
        return SG_ERR_TOO_BIG;
    unsigned char *raw;
    size_t rawlen;
    if (sg_b64_decode(b64, blen, &raw, &rawlen))
        return SG_ERR_PARSE;
    char *colon = memchr(raw, ':', rawlen);
    if (!colon || memchr(raw, '\0', rawlen)) {
        free(raw);
        return SG_ERR_PARSE;
    }
    /* RFC 6749 2.3.1: both halves are form-urlencoded before base64. */
    *user = sg_url_decode((char *)raw, (size_t)(colon - (char *)raw));
    *pass = sg_url_decode(colon + 1, rawlen - (size_t)(colon + 1 - (char *)raw));
    free(raw);
    if (!*user || !*pass) {
        free(*user);
        free(*pass);
        *user = *pass = NULL;
        return SG_ERR_PARSE;
    }
    return SG_OK;
}

int sg_content_type_is(const char *header, const char *media_type)
{
    if (!header)
        return 0;
    while (*header == ' ')
        header++;
    size_t n = strlen(media_type);
    if (strncasecmp(header, media_type, n) != 0)
        return 0;
    char c = header[n];
    return c == '\0' || c == ';' || c == ' ';
}
