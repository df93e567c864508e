/* What the routes share: HTML pages, JSON answers, the return-path check, cookies, CSRF. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

static const char page_style[] =
    "body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.5em}.muted{color:#666}table{border-collapse:collapse}"
    "th,td{text-align:left;padding:.3em .8em .3em 0;vertical-align:top}"
    "code{background:#f3f3f3;padding:0 .2em}.error{color:#a00}"
    "button,a.button{font-size:1em;padding:.4em 1em}";

void sg_page(sg_resp_t *w, unsigned status, const char *title, const char *body_html)
{
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    sg_buf_adds(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                    "<meta name=\"viewport\" content=\"width=device-width\"><title>");
    sg_buf_add_html(&b, title);
    sg_buf_printf(&b, " | scopegate</title><style>%s</style></head><body>\n<h1>", page_style);
    sg_buf_add_html(&b, title);
    sg_buf_adds(&b, "</h1>\n");
    sg_buf_adds(&b, body_html);
    sg_buf_adds(&b, "\n</body></html>\n");
    if (b.ptr)
        sg_resp_text(w, status, "text/html;charset=UTF-8", b.ptr);
    else
        sg_resp_text(w, 500, "text/plain", "out of memory while writing a page");
    sg_buf_free(&b);
    w->no_store = 1;
    sg_resp_header(w, "X-Frame-Options", "DENY");
    sg_resp_header(w, "Content-Security-Policy",
                   "default-src 'none'; style-src 'unsafe-inline'; "
                   "form-action 'self'; frame-ancestors 'none'");
}

void sg_page_error(sg_resp_t *w, unsigned status, const char *what, const char *todo)
{
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_adds(&b, "<p class=\"error\">");
    sg_buf_add_html(&b, what);
    sg_buf_adds(&b, "</p>\n<p>");
    sg_buf_add_html(&b, todo);
    sg_buf_adds(&b, "</p>\n<p><a href=\"/login\">Sign in again</a></p>");
    const char *title = status >= 500   ? "Sign-in is not working right now"
                        : status == 403 ? "Not allowed"
                                        : "Sign-in failed";
    sg_page(w, status, title, b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}

void sg_resp_json_body(sg_resp_t *w, unsigned status, cJSON *json)
{
    char *txt = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (txt)
        sg_resp_text(w, status, "application/json", txt);
    else
        sg_resp_text(w, 500, "application/json",
                     "{\"error\":\"server_error\",\"error_description\":\"out of memory\"}");
    free(txt);
    w->no_store = 1;
}

static int unsafe_char(unsigned char c)
{
    return c < 0x20 || c == 0x7f || c == '\\';
}

/* One round of %-decoding into out (same size or smaller); -1 on a bad escape. */
static int pct_decode_once(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; in[i]; i++) {
        if (o + 1 >= outlen)
            return -1;
        if (in[i] == '%') {
            char hex[3] = {in[i + 1], in[i + 1] ? in[i + 2] : '\0', '\0'};
            char *end;
            long v = strtol(hex, &end, 16);
            if (!hex[0] || !hex[1] || *end)
                return -1;
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
    return 0;
}

/*
 * A return path is safe when it, and each %-decoding of it, is a path on this origin: starts
 * with one '/', not "//" or "/\" (which browsers read as another host), and holds no
 * backslash or control character (CR/LF would split headers). Checking the decoded forms too
 * catches "/%2F%2Fevil.example" and "%5C" tricks that an intermediary might decode.
 */
int sg_rd_is_safe(const char *rd)
{
    char cur[SG_RD_MAX + 1], next[SG_RD_MAX + 1];
    if (!rd || strlen(rd) > SG_RD_MAX)
        return 0;
    snprintf(cur, sizeof(cur), "%s", rd);
    for (int round = 0; round < 3; round++) {
        if (cur[0] != '/' || cur[1] == '/' || cur[1] == '\\')
            return 0;
        for (const char *p = cur; *p; p++)
            if (unsafe_char((unsigned char)*p))
                return 0;
        if (!strchr(cur, '%'))
            return 1;
        if (pct_decode_once(cur, next, sizeof(next)))
            return 0;
        memcpy(cur, next, sizeof(cur));
    }
    return 0; /* still encoded after three rounds: nobody needs that */
}

const char *sg_gw_session_cookie(sg_gateway_t *gw, const sg_req_t *r, char *buf, size_t buflen)
{
    size_t len = 0;
    const char *v = sg_cookie_find(sg_req_header(r, "Cookie"), gw->cfg.cookie_name, &len);
    if (!v || len == 0 || len >= buflen)
        return NULL;
    memcpy(buf, v, len);
    buf[len] = '\0';
    return buf;
}

void sg_csrf_token(sg_gateway_t *gw, const char *id_hash, char *out, size_t outlen)
{
    unsigned char mac[32];
    out[0] = '\0';
    if (sg_hmac_sha256(gw->csrf_key, sizeof(gw->csrf_key), id_hash, strlen(id_hash), mac))
        return;
    char *t = sg_b64_encode(mac, sizeof(mac), SG_B64_URL);
    if (t)
        snprintf(out, outlen, "%s", t);
    free(t);
}

void sg_fmt_time(long long t, char *out, size_t n)
{
    if (t <= 0) {
        snprintf(out, n, "never");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

long long sg_gw_now(void)
{
    return (long long)time(NULL);
}

int sg_gw_current_session(sg_gateway_t *gw, const sg_req_t *r, sg_session_view_t *v)
{
    char sid[SG_SESSION_ID_LEN + 8];
    if (!sg_gw_session_cookie(gw, r, sid, sizeof(sid)))
        return -1;
    return sg_session_lookup(gw->sessions, sid, sg_gw_now(), v) == SG_OK ? 0 : -1;
}

int sg_gw_check_form(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_session_view_t *v,
                     sg_form_t *f)
{
    memset(f, 0, sizeof(*f));
    if (!sg_content_type_is(sg_req_header(r, "Content-Type"),
                            "application/x-www-form-urlencoded") ||
        sg_form_parse(r->body.ptr ? r->body.ptr : "", r->body.len, f)) {
        sg_page_error(w, 400, "The form was not sent properly.",
                      "Use the buttons on this site's pages.");
        return -1;
    }
    /* A cross-site POST carries another site's Origin: refuse it before anything else. Not
     * every client sends one; the CSRF token still guards those. */
    const char *origin = sg_req_header(r, "Origin");
    char expect[64];
    sg_csrf_token(gw, v->id_hash, expect, sizeof(expect));
    const char *got = sg_form_get(f, "csrf");
    if ((origin && strcmp(origin, gw->cfg.public_url) != 0) || !got || !expect[0] ||
        !sg_ct_streq(got, expect) || sg_form_first_dup(f)) {
        sg_log(SG_LOG_WARN, "csrf", "rid=%s %s %s refused: missing or wrong CSRF token",
               r->request_id, r->method, r->path);
        sg_page_error(w, 403,
                      "This request did not come from this site's own button, so it was "
                      "refused.",
                      "Go back to the page and use its button.");
        sg_form_free(f);
        return -1;
    }
    return 0;
}
