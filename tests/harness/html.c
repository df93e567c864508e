/*
 * The harness's HTML form scraper (see harness_int.h): enough of HTML to find the forms of
 * sfsim's login and approval pages and of the gateway's pages (inputs, buttons, textareas,
 * entities, comments), submit one as a browser would, and read a link.
 */
#include "harness_int.h"

#include "scopegate/buf.h"
#include "scopegate/http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- tags and entities ---------------------------------------------------------------- */

typedef struct {
    char *name;
    char *value;
} attr_t;

#define MAX_ATTRS 32

typedef struct {
    attr_t a[MAX_ATTRS];
    size_t n;
} tag_t;

static void tag_free(tag_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->a[i].name);
        free(t->a[i].value);
    }
    t->n = 0;
}

static const char *tag_get(const tag_t *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcasecmp(t->a[i].name, name) == 0)
            return t->a[i].value ? t->a[i].value : "";
    return NULL;
}

void th_form_free(th_form_t *f)
{
    free(f->action);
    free(f->method);
    sg_form_free(&f->fields);
    for (size_t i = 0; i < f->nsubmit; i++) {
        free(f->submit[i].name);
        free(f->submit[i].value);
        free(f->submit[i].label);
    }
    memset(f, 0, sizeof *f);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Appends the UTF-8 encoding of code point cp. */
static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the HTML entities of s[0..len) (named: amp quot apos lt gt; numeric: &#N; &#xH;). */
static char *entity_decode(const char *s, size_t len)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"quot", '"'}, {"apos", '\''}, {"lt", '<'}, {"gt", '>'}};
    char *out = malloc(len + 1); /* a decoded entity is never longer than its text */
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] != '&') {
            out[o++] = s[i++];
            continue;
        }
        const char *semi = memchr(s + i, ';', len - i);
        size_t elen = semi ? (size_t)(semi - (s + i)) - 1 : 0; /* between & and ; */
        int done = 0;
        if (semi && elen > 1 && elen < 10 && s[i + 1] == '#') {
            unsigned long cp = 0;
            int ok = 1;
            size_t k = i + 2;
            int hex = (s[k] == 'x' || s[k] == 'X');
            if (hex)
                k++;
            if (k >= (size_t)(semi - s))
                ok = 0;
            for (; ok && k < (size_t)(semi - s); k++) {
                int d = hex ? hexval((unsigned char)s[k])
                            : (isdigit((unsigned char)s[k]) ? s[k] - '0' : -1);
                if (d < 0)
                    ok = 0;
                else
                    cp = cp * (hex ? 16 : 10) + (unsigned long)d;
            }
            if (ok && cp > 0 && cp <= 0x10FFFF) { /* "&#N;" is 4+ bytes, UTF-8 at most 4 */
                o += put_utf8(out + o, cp);
                i = (size_t)(semi - s) + 1;
                done = 1;
            }
        } else if (semi && elen > 0) {
            for (size_t k = 0; k < sizeof named / sizeof named[0]; k++) {
                if (strlen(named[k].name) == elen && strncmp(s + i + 1, named[k].name, elen) == 0) {
                    out[o++] = named[k].c;
                    i = (size_t)(semi - s) + 1;
                    done = 1;
                    break;
                }
            }
        }
        if (!done)
            out[o++] = s[i++];
    }
    out[o] = '\0';
    return out;
}

/*
 * Parses the attributes of the tag whose name ends at p (p points just after the tag name)
 * up to its closing '>'. Returns a pointer after the '>' or NULL when the tag never closes.
 */
static const char *parse_attrs(const char *p, tag_t *t)
{
    t->n = 0;
    for (;;) {
        while (*p && (isspace((unsigned char)*p) || *p == '/'))
            p++;
        if (!*p)
            return NULL;
        if (*p == '>')
            return p + 1;
        const char *ns = p;
        while (*p && !isspace((unsigned char)*p) && *p != '=' && *p != '>' && *p != '/')
            p++;
        size_t nlen = (size_t)(p - ns);
        while (*p && isspace((unsigned char)*p))
            p++;
        char *value = NULL;
        if (*p == '=') {
            p++;
            while (*p && isspace((unsigned char)*p))
                p++;
            const char *vs;
            size_t vlen;
            if (*p == '"' || *p == '\'') {
                char q = *p++;
                vs = p;
                while (*p && *p != q)
                    p++;
                if (!*p)
                    return NULL;
                vlen = (size_t)(p - vs);
                p++;
            } else {
                vs = p;
                while (*p && !isspace((unsigned char)*p) && *p != '>')
                    p++;
                vlen = (size_t)(p - vs);
            }
            value = entity_decode(vs, vlen);
            if (!value)
                return NULL;
        }
        if (nlen == 0) { /* stray character: skip it */
            free(value);
            if (*p && *p != '>')
                p++;
            continue;
        }
        if (t->n >= MAX_ATTRS) {
            free(value);
            continue;
        }
        char *name = strndup(ns, nlen);
        if (!name) {
            free(value);
            return NULL;
        }
        t->a[t->n].name = name;
        t->a[t->n].value = value;
        t->n++;
    }
}

/* Case-insensitive search for needle in [s, end). */
static const char *find_ci(const char *s, const char *end, const char *needle)
{
    size_t nl = strlen(needle);
    for (; s + nl <= end; s++)
        if (strncasecmp(s, needle, nl) == 0)
            return s;
    return NULL;
}

/* Is the tag name at p (after '<') exactly name? */
static int tag_is(const char *p, const char *name)
{
    size_t nl = strlen(name);
    return strncasecmp(p, name, nl) == 0 &&
           (isspace((unsigned char)p[nl]) || p[nl] == '>' || p[nl] == '/');
}

/* Inner text of an element from p to its closing tag, tags stripped, trimmed, decoded. */
static char *inner_text(const char *p, const char *end)
{
    sg_buf_t b;
    sg_buf_init(&b, 4096);
    int in_tag = 0;
    for (; p < end; p++) {
        if (*p == '<')
            in_tag = 1;
        else if (*p == '>')
            in_tag = 0;
        else if (!in_tag && sg_buf_add(&b, p, 1))
            return NULL;
    }
    char *raw = sg_buf_steal(&b);
    if (!raw)
        return NULL;
    const char *s = raw;
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    char *out = entity_decode(s, len);
    free(raw);
    return out;
}

static int add_submit(th_form_t *f, const char *name, const char *value, char *label)
{
    if (f->nsubmit >= TH_FORM_MAX_SUBMITS) {
        free(label);
        return 0;
    }
    size_t i = f->nsubmit;
    f->submit[i].name = name ? strdup(name) : NULL;
    f->submit[i].value = value ? strdup(value) : NULL;
    f->submit[i].label = label;
    if ((name && !f->submit[i].name) || (value && !f->submit[i].value) || !label) {
        free(f->submit[i].name);
        free(f->submit[i].value);
        free(label);
        f->submit[i].name = f->submit[i].value = f->submit[i].label = NULL;
        return -1;
    }
    f->nsubmit++;
    return 0;
}

/* ---- forms ------------------------------------------------------------------------------ */

/* Parses the form starting at the '<' of "<form"; *next is set after it. 0 on success. */
static int parse_form(const char *start, const char **next, th_form_t *f)
{
    memset(f, 0, sizeof *f);
    tag_t t = {.n = 0};
    const char *p = parse_attrs(start + 5, &t);
    if (!p) {
        tag_free(&t);
        return -1;
    }
    const char *action = tag_get(&t, "action");
    const char *method = tag_get(&t, "method");
    f->action = strdup(action ? action : "");
    f->method = strdup(method && *method ? method : "get");
    tag_free(&t);
    if (!f->action || !f->method)
        goto fail;
    for (char *m = f->method; *m; m++)
        *m = (char)tolower((unsigned char)*m);

    const char *end = find_ci(p, p + strlen(p), "</form");
    if (!end)
        end = p + strlen(p);
    *next = end;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt)
            break;
        if (strncmp(lt, "<!--", 4) == 0) {
            const char *ce = strstr(lt + 4, "-->");
            p = ce ? ce + 3 : end;
            continue;
        }
        if (tag_is(lt + 1, "input")) {
            const char *after = parse_attrs(lt + 6, &t);
            if (!after) {
                tag_free(&t);
                break;
            }
            const char *type = tag_get(&t, "type");
            const char *name = tag_get(&t, "name");
            const char *value = tag_get(&t, "value");
            if (!type)
                type = "text";
            int rc = 0;
            if (strcasecmp(type, "submit") == 0 || strcasecmp(type, "image") == 0) {
                char *label = strdup(value ? value : "");
                rc = add_submit(f, name, value, label);
            } else if (name &&
                       (strcasecmp(type, "checkbox") == 0 || strcasecmp(type, "radio") == 0)) {
                if (tag_get(&t, "checked"))
                    rc = sg_form_add(&f->fields, name, value ? value : "on") ? -1 : 0;
            } else if (name && strcasecmp(type, "button") != 0 && strcasecmp(type, "reset") != 0 &&
                       strcasecmp(type, "file") != 0) {
                if (strcmp(name, "pw") == 0 || strcasecmp(type, "password") == 0)
                    f->has_pw = 1;
                if (strcmp(name, "username") == 0)
                    f->has_username = 1;
                rc = sg_form_add(&f->fields, name, value ? value : "") ? -1 : 0;
            }
            tag_free(&t);
            if (rc)
                goto fail;
            p = after;
        } else if (tag_is(lt + 1, "button")) {
            const char *after = parse_attrs(lt + 7, &t);
            if (!after) {
                tag_free(&t);
                break;
            }
            const char *type = tag_get(&t, "type");
            const char *close = find_ci(after, end, "</button");
            const char *text_end = close ? close : end;
            if (!type || strcasecmp(type, "submit") == 0) {
                char *label = inner_text(after, text_end);
                if (add_submit(f, tag_get(&t, "name"), tag_get(&t, "value"), label)) {
                    tag_free(&t);
                    goto fail;
                }
            }
            tag_free(&t);
            p = close ? close + 1 : end;
        } else if (tag_is(lt + 1, "textarea")) {
            const char *after = parse_attrs(lt + 9, &t);
            if (!after) {
                tag_free(&t);
                break;
            }
            const char *close = find_ci(after, end, "</textarea");
            const char *name = tag_get(&t, "name");
            if (name) {
                char *text = entity_decode(after, (size_t)((close ? close : end) - after));
                int rc = !text || sg_form_add(&f->fields, name, text);
                free(text);
                if (rc) {
                    tag_free(&t);
                    goto fail;
                }
            }
            tag_free(&t);
            p = close ? close + 1 : end;
        } else {
            p = lt + 1;
        }
    }
    return 0;
fail:
    fprintf(stderr, "harness: out of memory parsing a form\n");
    th_form_free(f);
    return -1;
}

/* Is label (or value) the word want ("Allow"/"Deny"), ignoring case and spaces? */
static int label_is(const char *label, const char *want)
{
    if (!label)
        return 0;
    while (isspace((unsigned char)*label))
        label++;
    size_t wl = strlen(want);
    if (strncasecmp(label, want, wl) != 0)
        return 0;
    label += wl;
    while (isspace((unsigned char)*label))
        label++;
    return *label == '\0';
}

static int submit_index(const th_form_t *f, const char *want)
{
    for (size_t i = 0; i < f->nsubmit; i++)
        if (label_is(f->submit[i].label, want) || label_is(f->submit[i].value, want))
            return (int)i;
    return -1;
}

/* Finds the login form (one with a pw field) or the form holding the wanted button. */
th_page_kind th_scrape(const char *html, const char *button, th_form_t *out, int *submit)
{
    const char *p = html;
    *submit = -1;
    while (p && *p) {
        const char *start = strchr(p, '<');
        if (!start)
            break;
        if (strncmp(start, "<!--", 4) == 0) { /* a form in a comment is no form */
            const char *end = strstr(start + 4, "-->");
            p = end ? end + 3 : NULL;
            continue;
        }
        if (!tag_is(start + 1, "form")) {
            p = start + 1;
            continue;
        }
        th_form_t f;
        const char *next = NULL;
        if (parse_form(start, &next, &f))
            break;
        if (f.has_pw) {
            *out = f;
            *submit = f.nsubmit ? 0 : -1;
            return TH_PAGE_LOGIN;
        }
        int idx = submit_index(&f, button);
        if (idx >= 0) {
            *out = f;
            *submit = idx;
            return TH_PAGE_APPROVAL;
        }
        th_form_free(&f);
        p = next;
    }
    return TH_PAGE_OTHER;
}

/* ---- submitting a form ------------------------------------------------------------------ */

/* Serialises the form's fields, with username/pw replaced and the chosen submit added. */
static char *form_body(const th_form_t *f, int submit, const char *username, const char *password)
{
    sg_buf_t b;
    sg_buf_init(&b, TH_BODY_MAX);
    int first = 1;
    int saw_user = 0, saw_pw = 0;
    for (size_t i = 0; i < f->fields.n + 3; i++) {
        const char *k, *v;
        if (i < f->fields.n) {
            k = f->fields.item[i].key;
            v = f->fields.item[i].value;
            if (username && strcmp(k, "username") == 0) {
                v = username;
                saw_user = 1;
            } else if (password && strcmp(k, "pw") == 0) {
                v = password;
                saw_pw = 1;
            }
        } else if (i == f->fields.n) {
            if (!username || saw_user)
                continue;
            k = "username";
            v = username;
        } else if (i == f->fields.n + 1) {
            if (!password || saw_pw)
                continue;
            k = "pw";
            v = password;
        } else {
            if (submit < 0 || !f->submit[submit].name)
                continue;
            k = f->submit[submit].name;
            v = f->submit[submit].value ? f->submit[submit].value : f->submit[submit].label;
        }
        char *ek = sg_url_encode(k), *ev = sg_url_encode(v ? v : "");
        int rc = !ek || !ev || sg_buf_printf(&b, "%s%s=%s", first ? "" : "&", ek, ev);
        free(ek);
        free(ev);
        if (rc) {
            sg_buf_free(&b);
            return NULL;
        }
        first = 0;
    }
    return sg_buf_steal(&b);
}

/* Submits form f (found on page_url) and puts the answer in *resp. */
int th_form_submit(th_client_t *c, const char *page_url, const th_form_t *f, int submit,
                   const char *username, const char *password, th_resp_t *resp, char **target_out)
{
    char *body = form_body(f, submit, username, password);
    char *target = th_resolve_url(page_url, f->action);
    int rc = -1;
    memset(resp, 0, sizeof *resp); /* th_http fills it; until then it is all zero */
    if (!body || !target) {
        fprintf(stderr, "harness: out of memory submitting a form\n");
        goto done;
    }
    if (strcmp(f->method, "post") == 0) {
        rc = th_post_form(c, target, body, resp);
    } else {
        size_t q = strcspn(target, "?#");
        char *url = th_fmt("%.*s?%s", (int)q, target, body);
        if (!url)
            goto done;
        free(target);
        target = url;
        rc = th_get(c, target, resp);
    }
done:
    free(body);
    if (rc == 0 && target_out) {
        *target_out = target;
        target = NULL;
    }
    free(target);
    return rc;
}

/* ---- the gateway's pages: a link, a form's body ------------------------------------------ */

char *th_html_link(const char *html, const char *href_prefix)
{
    size_t plen = strlen(href_prefix);
    for (const char *p = html ? strchr(html, '<') : NULL; p; p = strchr(p + 1, '<')) {
        if (!tag_is(p + 1, "a"))
            continue;
        tag_t t = {.n = 0};
        if (!parse_attrs(p + 2, &t))
            return NULL;
        const char *href = tag_get(&t, "href");
        char *found = href && strncmp(href, href_prefix, plen) == 0 ? strdup(href) : NULL;
        tag_free(&t);
        if (found)
            return found;
    }
    return NULL;
}

char *th_html_form(const char *html, const char *action)
{
    const char *p = html;
    while (p && *p) {
        const char *start = strchr(p, '<');
        if (!start)
            break;
        if (strncmp(start, "<!--", 4) == 0) {
            const char *end = strstr(start + 4, "-->");
            p = end ? end + 3 : NULL;
            continue;
        }
        if (!tag_is(start + 1, "form")) {
            p = start + 1;
            continue;
        }
        th_form_t f;
        const char *next = NULL;
        if (parse_form(start, &next, &f))
            return NULL;
        if (strcmp(f.action, action) == 0) {
            char *body = form_body(&f, -1, NULL, NULL);
            th_form_free(&f);
            return body;
        }
        th_form_free(&f);
        p = next;
    }
    return NULL;
}
