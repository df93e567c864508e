/*
 * The harness's HTTP (see harness.h): a libcurl client per browser (its own cookie jar,
 * redirects never followed), responses captured whole, URLs resolved and their parameters
 * read, cookies from the jar and from Set-Cookie, and Prometheus samples summed.
 */
#include "harness_int.h"

#include "scopegate/buf.h"
#include "scopegate/http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HEADERS_MAX ((size_t)1 << 20)

/* ---- HTTP ----------------------------------------------------------------------------- */

struct th_client {
    CURLSH *share; /* holds the cookie jar; each request uses a fresh easy handle */
};

static void global_init(void)
{
    static int done;
    if (!done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {
            done = 1;
            atexit(curl_global_cleanup);
        }
    }
}

th_client_t *th_client_new(void)
{
    global_init();
    th_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "harness: out of memory\n");
        return NULL;
    }
    c->share = curl_share_init();
    if (!c->share || curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE)) {
        fprintf(stderr, "harness: curl_share_init failed\n");
        if (c->share)
            curl_share_cleanup(c->share);
        free(c);
        return NULL;
    }
    return c;
}

void th_client_free(th_client_t *c)
{
    if (!c)
        return;
    curl_share_cleanup(c->share);
    free(c);
}

typedef struct {
    sg_buf_t body;
    sg_buf_t headers;
    int too_big;
} capture_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    capture_t *cap = ud;
    size_t n = size * nmemb;
    if (sg_buf_add(&cap->body, data, n)) {
        cap->too_big = 1;
        return 0;
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    capture_t *cap = ud;
    size_t n = size * nmemb;
    /* A new status line starts a new header block (after "100 Continue"): keep the last. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        sg_buf_reset(&cap->headers);
    if (sg_buf_add(&cap->headers, data, n)) {
        cap->too_big = 1;
        return 0;
    }
    return n;
}

char *th_resp_header(const th_resp_t *r, const char *name)
{
    if (!r || !r->headers || !name)
        return NULL;
    size_t nl = strlen(name);
    const char *line = r->headers;
    while (*line) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            eol = line + strlen(line);
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\n'))
                ve--;
            return strndup(v, (size_t)(ve - v));
        }
        line = *eol ? eol + 2 : eol;
    }
    return NULL;
}

void th_resp_free(th_resp_t *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->headers);
    free(r->location);
    free(r->content_type);
    memset(r, 0, sizeof *r);
}

void th_resp_empty(th_resp_t *out)
{
    memset(out, 0, sizeof *out);
    out->body = calloc(1, 1);
    out->headers = calloc(1, 1);
}

int th_http(th_client_t *c, const char *method, const char *url, const char *content_type,
            const char *body, const char *const *extra_headers, th_resp_t *out)
{
    global_init();
    th_resp_empty(out);
    if (!out->body || !out->headers) {
        fprintf(stderr, "harness: out of memory\n");
        return -1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(stderr, "harness: curl_easy_init failed\n");
        return -1;
    }
    capture_t cap;
    sg_buf_init(&cap.body, TH_BODY_MAX);
    sg_buf_init(&cap.headers, HEADERS_MAX);
    cap.too_big = 0;
    struct curl_slist *hdrs = NULL;
    char *ct_line = NULL;
    int rc = -1;
    int oom = 0;

    if (content_type) {
        ct_line = th_fmt("Content-Type: %s", content_type);
        struct curl_slist *t = ct_line ? curl_slist_append(hdrs, ct_line) : NULL;
        if (!t)
            oom = 1;
        else
            hdrs = t;
    }
    for (size_t i = 0; extra_headers && extra_headers[i] && !oom; i++) {
        struct curl_slist *t = curl_slist_append(hdrs, extra_headers[i]);
        if (!t)
            oom = 1;
        else
            hdrs = t;
    }
    if (oom) {
        fprintf(stderr, "harness: out of memory building headers\n");
        goto done;
    }

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &cap);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &cap);
    if (c) {
        curl_easy_setopt(h, CURLOPT_SHARE, c->share);
        curl_easy_setopt(h, CURLOPT_COOKIEFILE, "");
    }
    if (hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

    if (!method || strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        if (body) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
        }
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        const char *b = body ? body : "";
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, b);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(b));
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode cr = curl_easy_perform(h);
    double secs = 0;
    curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &secs);
    out->seconds = secs;
    if (cr != CURLE_OK) {
        fprintf(stderr, "harness: %s %s: %s%s\n", method ? method : "GET", url,
                curl_easy_strerror(cr), cap.too_big ? " (response too big)" : "");
        goto done;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    free(out->body);
    free(out->headers);
    out->body_len = cap.body.len;
    out->body = sg_buf_steal(&cap.body);
    out->headers = sg_buf_steal(&cap.headers);
    if (!out->body || !out->headers) {
        fprintf(stderr, "harness: out of memory\n");
        free(out->body);
        free(out->headers);
        th_resp_empty(out);
        goto done;
    }
    out->status = status;
    out->location = th_resp_header(out, "Location");
    out->content_type = th_resp_header(out, "Content-Type");
    rc = 0;
done:
    sg_buf_free(&cap.body);
    sg_buf_free(&cap.headers);
    curl_slist_free_all(hdrs);
    free(ct_line);
    curl_easy_cleanup(h);
    return rc;
}

int th_get(th_client_t *c, const char *url, th_resp_t *out)
{
    return th_http(c, "GET", url, NULL, NULL, NULL, out);
}

int th_post_form(th_client_t *c, const char *url, const char *form, th_resp_t *out)
{
    return th_http(c, "POST", url, "application/x-www-form-urlencoded", form ? form : "", NULL,
                   out);
}

cJSON *th_resp_json(const th_resp_t *r)
{
    if (!r || !r->body || !r->body_len)
        return NULL;
    return cJSON_ParseWithLength(r->body, r->body_len);
}

/* ---- URLs ----------------------------------------------------------------------------- */

/* Length of "scheme://authority" at the start of url, or 0 when url is not absolute. */
static size_t origin_len(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return 0;
    for (const char *s = url; s < p; s++)
        if (!isalnum((unsigned char)*s) && *s != '+' && *s != '-' && *s != '.')
            return 0;
    p += 3;
    p += strcspn(p, "/?#");
    return (size_t)(p - url);
}

int th_same_origin(const char *a, const char *b)
{
    size_t la = origin_len(a), lb = origin_len(b);
    return la && la == lb && strncasecmp(a, b, la) == 0;
}

static char *resolve_raw(const char *base, const char *ref);

/* RFC 3986 5.2.4 on the path of an absolute URL (query and fragment kept as they are). */
static char *remove_dot_segments(char *url)
{
    if (!url)
        return NULL;
    size_t ol = origin_len(url);
    char *path = url + ol;
    size_t plen = strcspn(path, "?#");
    char *out = malloc(plen + 2);
    if (!out) {
        free(url);
        return NULL;
    }
    size_t o = 0;
    const char *in = path, *end = path + plen;
    while (in < end) {
        if (end - in >= 3 && strncmp(in, "../", 3) == 0) {
            in += 3;
        } else if (end - in >= 2 && strncmp(in, "./", 2) == 0) {
            in += 2;
        } else if (end - in >= 3 && strncmp(in, "/./", 3) == 0) {
            in += 2;
        } else if (end - in == 2 && strncmp(in, "/.", 2) == 0) {
            in += 1;
            out[o++] = '/';
            in = end;
        } else if ((end - in >= 4 && strncmp(in, "/../", 4) == 0) ||
                   (end - in == 3 && strncmp(in, "/..", 3) == 0)) {
            int last = end - in == 3;
            in += 3;
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
            if (last) {
                out[o++] = '/';
                in = end;
            }
        } else if ((end - in == 1 && *in == '.') || (end - in == 2 && strncmp(in, "..", 2) == 0)) {
            in = end;
        } else {
            do {
                out[o++] = *in++;
            } while (in < end && *in != '/');
        }
    }
    out[o] = '\0';
    char *r = th_fmt("%.*s%s%s", (int)ol, url, out, path + plen);
    free(out);
    free(url);
    return r;
}

/* ref resolved against base (absolute, absolute-path, query-only or relative-path refs). */
char *th_resolve_url(const char *base, const char *ref)
{
    char *resolved = resolve_raw(base, ref);
    return remove_dot_segments(resolved);
}

static char *resolve_raw(const char *base, const char *ref)
{
    if (origin_len(ref))
        return strdup(ref);
    size_t ol = origin_len(base);
    if (!ol)
        return strdup(ref);
    if (ref[0] == '/' && ref[1] == '/') {
        size_t sl = (size_t)(strstr(base, "://") - base);
        return th_fmt("%.*s:%s", (int)sl, base, ref);
    }
    if (ref[0] == '/')
        return th_fmt("%.*s%s", (int)ol, base, ref);
    /* path part of base, without query and fragment */
    size_t plen = strcspn(base + ol, "?#");
    if (ref[0] == '\0')
        return th_fmt("%.*s", (int)(ol + plen), base);
    if (ref[0] == '?')
        return th_fmt("%.*s%s", (int)(ol + plen), base, ref);
    if (ref[0] == '#')
        return th_fmt("%.*s%s", (int)(ol + plen), base, ref);
    /* relative path: drop the last segment of base's path */
    size_t dir = plen;
    while (dir > 0 && base[ol + dir - 1] != '/')
        dir--;
    if (dir == 0)
        return th_fmt("%.*s/%s", (int)ol, base, ref);
    return th_fmt("%.*s%s", (int)(ol + dir), base, ref);
}

char *th_enc(const char *s)
{
    char *e = sg_url_encode(s ? s : "");
    if (!e)
        fprintf(stderr, "harness: out of memory percent-encoding\n");
    return e;
}

/* Percent-decodes s[0..len) with '+' as a space; text with a bad escape is kept as it is. */
static char *pct_decode(const char *s, size_t len)
{
    char *d = sg_url_decode(s, len);
    return d ? d : strndup(s, len);
}

char *th_url_param(const char *url, const char *name)
{
    if (!url || !name)
        return NULL;
    const char *q = strchr(url, '?');
    if (!q)
        return NULL;
    q++;
    const char *end = strchr(q, '#');
    if (!end)
        end = q + strlen(q);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *kend = eq ? eq : stop;
        char *key = pct_decode(q, (size_t)(kend - q));
        if (!key)
            return NULL;
        int match = strcmp(key, name) == 0;
        free(key);
        if (match)
            return eq ? pct_decode(eq + 1, (size_t)(stop - eq - 1)) : strdup("");
        q = stop + 1;
    }
    return NULL;
}

/* ---- cookies and metrics ------------------------------------------------------------------ */

char *th_client_cookie(th_client_t *c, const char *name)
{
    if (!c || !name)
        return NULL;
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_COOKIEFILE, "");
    struct curl_slist *list = NULL;
    char *value = NULL;
    if (curl_easy_getinfo(h, CURLINFO_COOKIELIST, &list) == CURLE_OK) {
        /* Netscape format: domain, tailmatch, path, secure, expires, name, value (tabs). */
        for (struct curl_slist *it = list; it && !value; it = it->next) {
            const char *f = it->data;
            for (int i = 0; i < 5 && f; i++) {
                f = strchr(f, '\t');
                if (f)
                    f++;
            }
            if (!f)
                continue;
            const char *tab = strchr(f, '\t');
            if (!tab || (size_t)(tab - f) != strlen(name) || strncmp(f, name, strlen(name)) != 0)
                continue;
            value = strdup(tab + 1);
        }
    }
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
    return value;
}

char *th_resp_set_cookie(const th_resp_t *r, const char *name)
{
    if (!r || !r->headers || !name)
        return NULL;
    static const char hname[] = "Set-Cookie:";
    size_t nl = strlen(name);
    const char *line = r->headers;
    while (*line) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            eol = line + strlen(line);
        if ((size_t)(eol - line) > sizeof hname - 1 &&
            strncasecmp(line, hname, sizeof hname - 1) == 0) {
            const char *v = line + sizeof hname - 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            if ((size_t)(eol - v) > nl && strncmp(v, name, nl) == 0 && v[nl] == '=') {
                const char *val = v + nl + 1;
                const char *end = val;
                while (end < eol && *end != ';')
                    end++;
                while (end > val && (end[-1] == ' ' || end[-1] == '\t'))
                    end--;
                return strndup(val, (size_t)(end - val));
            }
        }
        line = *eol ? eol + 2 : eol;
    }
    return NULL;
}

double th_metric(const char *text, const char *name, const char *const *labels)
{
    double sum = -1;
    size_t nl = strlen(name);
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            eol = line + strlen(line);
        if (*line != '#' && (size_t)(eol - line) > nl && strncmp(line, name, nl) == 0 &&
            (line[nl] == '{' || line[nl] == ' ')) {
            const char *lab = line + nl, *lab_end = lab;
            if (*lab == '{') {
                lab_end = memchr(lab, '}', (size_t)(eol - lab));
                if (!lab_end)
                    lab_end = lab;
            }
            int match = 1;
            for (size_t i = 0; labels && labels[i] && match; i++) {
                size_t ll = strlen(labels[i]);
                match = 0;
                for (const char *p = lab; p + ll <= lab_end && !match; p++)
                    match = strncmp(p, labels[i], ll) == 0;
            }
            if (match) {
                const char *v = lab_end == lab ? lab : lab_end + 1;
                char *end = NULL;
                double d = strtod(v, &end);
                if (end && end != v)
                    sum = (sum < 0 ? 0 : sum) + d;
            }
        }
        line = *eol ? eol + 1 : eol;
    }
    return sum;
}
