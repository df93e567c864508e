/*
 * The outbound HTTP client (scopegate/http_client.h): a libcurl easy handle per call, no
 * redirects, http/https only, a timeout on everything, a bounded body and no signals (the
 * gateway calls this from many threads at once).
 */
#include "scopegate/http_client.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "scopegate/text.h"
#include "scopegate/version.h"

static void err_set(sg_http_err_t *err, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void err_set(sg_http_err_t *err, const char *error, const char *fmt, ...)
{
    if (!err)
        return;
    snprintf(err->error, sizeof err->error, "%s", error);
    va_list ap;
    va_start(ap, fmt);
    sg_vtextf(err->description, sizeof err->description, fmt, ap);
    va_end(ap);
}

typedef struct {
    sg_http_resp_t *resp;
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
        c->resp->location[0] = '\0';
        c->resp->date[0] = '\0';
        return len;
    }
    keep_header(data, len, "Content-Type", c->resp->content_type, sizeof c->resp->content_type);
    keep_header(data, len, "WWW-Authenticate", c->resp->www_authenticate,
                sizeof c->resp->www_authenticate);
    keep_header(data, len, "Location", c->resp->location, sizeof c->resp->location);
    keep_header(data, len, "Date", c->resp->date, sizeof c->resp->date);
    return len;
}

static void transport_error(CURLcode code, long timeout_ms, sg_http_err_t *err)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        err_set(err, "timeout", "no answer within %ld ms", timeout_ms);
        break;
    case CURLE_GOT_NOTHING:
        err_set(err, "transport", "connection closed without a response");
        break;
    case CURLE_COULDNT_CONNECT:
        err_set(err, "transport", "connection refused");
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        err_set(err, "transport", "host name not found");
        break;
    default:
        err_set(err, "transport", "%s", curl_easy_strerror(code));
        break;
    }
}

sg_rc sg_http_call(const sg_http_req_t *req, sg_http_resp_t *resp, sg_http_err_t *err)
{
    memset(resp, 0, sizeof *resp);
    if (err)
        memset(err, 0, sizeof *err);
    size_t max_body = req->max_body ? req->max_body : SG_HTTP_MAX_BODY;
    sg_buf_init(&resp->body, max_body);
    ctx_t c = {.resp = resp, .body_rc = SG_OK};
    struct curl_slist *headers = NULL, *h;
    char *auth = NULL;
    char ua[64];
    sg_rc rc = SG_ERR_NOMEM;
    int performed = 0;

    CURL *curl = curl_easy_init();
    if (!curl) {
        err_set(err, "transport", "libcurl could not start a request");
        return SG_ERR_NOMEM;
    }
    h = curl_slist_append(headers, "Accept: application/json");
    if (!h)
        goto fail;
    headers = h;
    if (req->body) {
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

    long timeout = req->timeout_ms > 0 ? req->timeout_ms : SG_HTTP_TIMEOUT_MS;
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
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &c);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &c);
    if (req->no_proxy)
        curl_easy_setopt(curl, CURLOPT_PROXY, "");
    const char *method = req->method ? req->method : req->body ? "POST" : "GET";
    if (strcmp(method, "POST") == 0) {
        const char *body = req->body ? req->body : "";
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L); /* else curl waits for a body */
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }

    CURLcode code = curl_easy_perform(curl);
    performed = 1;
    if (code == CURLE_FILESIZE_EXCEEDED ||
        (code == CURLE_WRITE_ERROR && c.body_rc == SG_ERR_TOO_BIG)) {
        err_set(err, "too_big", "response body larger than %zu bytes (refused)", max_body);
        rc = SG_ERR_TOO_BIG;
        goto fail;
    }
    if (code == CURLE_WRITE_ERROR && c.body_rc == SG_ERR_NOMEM) {
        err_set(err, "transport", "out of memory reading the response");
        rc = SG_ERR_NOMEM;
        goto fail;
    }
    if (code != CURLE_OK) {
        transport_error(code, timeout, err);
        rc = SG_ERR_IO;
        goto fail;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (resp->date[0]) {
        time_t t = curl_getdate(resp->date, NULL);
        resp->date_s = t > 0 ? (long long)t : 0;
    }
    if (!resp->body.ptr && sg_buf_add(&resp->body, "", 0)) {
        err_set(err, "transport", "out of memory reading the response");
        rc = SG_ERR_NOMEM;
        goto fail;
    }
    rc = SG_OK;
    goto done;

fail:
    if (!performed)
        err_set(err, "transport", "out of memory");
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

void sg_http_resp_free(sg_http_resp_t *resp)
{
    if (resp)
        sg_buf_free(&resp->body);
}

sg_rc sg_http_client_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? SG_OK : SG_ERR_IO;
}

void sg_http_client_cleanup(void)
{
    curl_global_cleanup();
}

void sg_http_client_lib_version(sg_lib_version_t *v)
{
    v->name = "libcurl";
    snprintf(v->built, sizeof(v->built), "%s", LIBCURL_VERSION);
    const curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);
    snprintf(v->running, sizeof(v->running), "%s", d && d->version ? d->version : "");
}
