/*
 * The OIDC client's one HTTP request (see oidc_int.h): libcurl easy handle per call, no
 * redirects, http/https only, a timeout on everything, a bounded body and no signals (the
 * gateway calls this from many threads at once).
 */
#include "oidc_int.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "scopegate/text.h"
#include "scopegate/version.h"

/* Lives here, below everything else in the client: the HTTP call reports with it too. */
void sg_oidc_err_set(sg_oidc_err_t *err, int http_status, const char *error, const char *fmt, ...)
{
    if (!err)
        return;
    err->http_status = http_status;
    sg_text_clean(err->error, sizeof err->error, error);
    va_list ap;
    va_start(ap, fmt);
    sg_vtextf(err->description, sizeof err->description, fmt, ap);
    va_end(ap);
}

typedef struct {
    sg_oidc_resp_t *resp;
    sg_rc body_rc; /* why the body stopped growing, or SG_OK */
} ctx_t;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    ctx_t *c = ud;
    size_t len = size * n;
    sg_rc rc = sg_buf_add(&c->resp->body, data, len);
    if (rc) {
        c->body_rc = rc;
        return 0; /* anything but len makes curl stop with CURLE_WRITE_ERROR */
    }
    return len;
}

/* Copies the value of a "Name: value" line into out when the name matches. */
static void keep_header(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
        return;
    const char *v = line + nlen + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vlen = (size_t)(end - v);
    if (vlen >= cap)
        vlen = cap - 1;
    memcpy(out, v, vlen);
    out[vlen] = '\0';
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    ctx_t *c = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new status line (after a 1xx): forget the headers of the one before. */
        c->resp->content_type[0] = '\0';
        c->resp->www_authenticate[0] = '\0';
        return len;
    }
    keep_header(data, len, "Content-Type", c->resp->content_type, sizeof c->resp->content_type);
    keep_header(data, len, "WWW-Authenticate", c->resp->www_authenticate,
                sizeof c->resp->www_authenticate);
    return len;
}

static void transport_error(CURLcode code, long timeout_ms, sg_oidc_err_t *err)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        sg_oidc_err_set(err, 0, "timeout", "no answer within %ld ms", timeout_ms);
        break;
    case CURLE_GOT_NOTHING:
        sg_oidc_err_set(err, 0, "transport", "connection closed without a response");
        break;
    case CURLE_COULDNT_CONNECT:
        sg_oidc_err_set(err, 0, "transport", "connection refused");
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        sg_oidc_err_set(err, 0, "transport", "host name not found");
        break;
    default:
        sg_oidc_err_set(err, 0, "transport", "%s", curl_easy_strerror(code));
        break;
    }
}

sg_rc sg_oidc_http(const sg_oidc_req_t *req, sg_oidc_resp_t *resp, sg_oidc_err_t *err)
{
    memset(resp, 0, sizeof *resp);
    sg_buf_init(&resp->body, SG_OIDC_MAX_BODY);
    ctx_t c = {.resp = resp, .body_rc = SG_OK};
    struct curl_slist *headers = NULL, *h;
    char *auth = NULL;
    char ua[64];
    sg_rc rc = SG_ERR_NOMEM;
    int performed = 0;

    CURL *curl = curl_easy_init();
    if (!curl) {
        sg_oidc_err_set(err, 0, "transport", "libcurl could not start a request");
        return SG_ERR_NOMEM;
    }
    h = curl_slist_append(headers, "Accept: application/json");
    if (!h)
        goto fail;
    headers = h;
    if (req->form) {
        char ctype[160];
        snprintf(ctype, sizeof(ctype), "Content-Type: %s",
                 req->content_type ? req->content_type : "application/x-www-form-urlencoded");
        h = curl_slist_append(headers, ctype);
        if (!h)
            goto fail;
        headers = h;
        h = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
        if (!h)
            goto fail;
        headers = h;
    }
    if (req->authorization) {
        size_t alen = strlen("Authorization: ") + strlen(req->authorization) + 1;
        auth = malloc(alen);
        if (!auth)
            goto fail;
        snprintf(auth, alen, "Authorization: %s", req->authorization);
        h = curl_slist_append(headers, auth);
        if (!h)
            goto fail;
        headers = h;
    }
    snprintf(ua, sizeof ua, "scopegate/%s", sg_version());

    long timeout = req->timeout_ms > 0 ? req->timeout_ms : 10000;
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)SG_OIDC_MAX_BODY);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &c);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &c);
    if (req->form) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->form);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(req->form));
    }

    CURLcode code = curl_easy_perform(curl);
    performed = 1;
    if (code == CURLE_FILESIZE_EXCEEDED ||
        (code == CURLE_WRITE_ERROR && c.body_rc == SG_ERR_TOO_BIG)) {
        sg_oidc_err_set(err, 0, "malformed", "response body larger than %d bytes (refused)",
                        SG_OIDC_MAX_BODY);
        rc = SG_ERR_TOO_BIG;
        goto fail;
    }
    if (code == CURLE_WRITE_ERROR && c.body_rc == SG_ERR_NOMEM) {
        sg_oidc_err_set(err, 0, "transport", "out of memory reading the response");
        rc = SG_ERR_NOMEM;
        goto fail;
    }
    if (code != CURLE_OK) {
        transport_error(code, timeout, err);
        rc = SG_ERR_IO;
        goto fail;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (!resp->body.ptr && sg_buf_add(&resp->body, "", 0)) {
        sg_oidc_err_set(err, 0, "transport", "out of memory reading the response");
        rc = SG_ERR_NOMEM;
        goto fail;
    }
    rc = SG_OK;
    goto done;

fail:
    if (!performed)
        sg_oidc_err_set(err, 0, "transport", "out of memory");
    sg_buf_free(&resp->body);
    resp->status = 0;
done:
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    if (auth) {
        OPENSSL_cleanse(auth, strlen(auth)); /* held a client secret */
        free(auth);
    }
    return rc;
}
