/* What the routes share: HTML pages, JSON answers, the return-path check, cookies, CSRF. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

/*
 * The one stylesheet of every page, inline and allowed by its hash in the pages'
 * Content-Security-Policy (no 'unsafe-inline', no fetch). Readable at 390 px: tables marked
 * "stack" turn into one block per row with each cell labelled (data-label), long words wrap.
 * The accent colour is the deployment's (branding.accent_color).
 */
static const char page_css_fmt[] =
    ":root{--accent:%s}"
    "*{box-sizing:border-box}"
    "body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    "color:#1d1d1f;background:#f4f5f7}"
    "header{display:flex;flex-wrap:wrap;align-items:center;justify-content:space-between;"
    "gap:.4em 1em;padding:.7em 1em;background:var(--accent);color:#fff}"
    "header a{color:#fff}"
    ".brand{font-weight:600;display:flex;align-items:center;gap:.5em;overflow-wrap:anywhere}"
    ".brand img{height:28px;width:auto;max-width:160px}"
    "main{max-width:54em;margin:1.5em auto;padding:1.5em;background:#fff;border-radius:8px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.1)}"
    "h1{font-size:1.5em;margin:0 0 .6em}h2{font-size:1.15em;margin:1.6em 0 .5em}"
    "p,li,dd,pre{overflow-wrap:anywhere}td,th{overflow-wrap:break-word}"
    "code{font:.9em ui-monospace,Menlo,Consolas,monospace;background:#eef0f3;padding:0 .25em;"
    "border-radius:3px;overflow-wrap:anywhere}"
    "pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.9em;padding:.7em;margin:.5em 0;"
    "border-radius:6px;background:#f6f7f9}"
    "table{border-collapse:collapse;width:100%%}"
    "th,td{text-align:left;padding:.45em .6em;border-bottom:1px solid #e3e5e8;"
    "vertical-align:top}"
    "th{font-weight:600;color:#555}"
    ".notice,.error,.warn{padding:.6em .9em;border-radius:4px;margin:1em 0}"
    ".notice{background:#e7f4e9;border-left:4px solid #2e7d32}"
    ".error{background:#fdecec;border-left:4px solid #c62828}"
    ".warn{background:#fff5dd;border-left:4px solid #a66300}"
    ".muted,small{color:#5f6368}small{font-size:.85em}"
    ".actions{display:flex;flex-wrap:wrap;gap:.6em;align-items:center;margin:1.2em 0}"
    ".button,button{display:inline-block;font:inherit;line-height:1.3;padding:.5em 1.1em;"
    "border-radius:6px;border:1px solid var(--accent);background:var(--accent);color:#fff;"
    "text-decoration:none;cursor:pointer}"
    ".button.secondary,button.secondary{background:#fff;color:var(--accent)}"
    ".button.danger,button.danger{background:#b3261e;border-color:#b3261e;color:#fff}"
    "form{margin:0}"
    "label{display:block;font-weight:600;margin:1em 0 .3em}"
    "input[type=text]{font:inherit;width:100%%;max-width:30em;padding:.45em .6em;"
    "border:1px solid #b8bcc2;border-radius:6px}"
    "ul.sessions{margin:0;padding-left:1.1em}ul.sessions li{margin:.2em 0}"
    ".state{font-weight:600}.state.live{color:#2e7d32}.state.dead{color:#b3261e}"
    "@media (max-width:600px){main{margin:0;border-radius:0;padding:1em}"
    "table.stack,table.stack tbody,table.stack tr,table.stack td,table.stack th{display:block;"
    "width:100%%}"
    "table.stack tr.head{display:none}"
    "table.stack tr{border-bottom:1px solid #e3e5e8;padding:.4em 0}"
    "table.stack td,table.stack th{border:0;padding:.1em 0}"
    "table.stack td[data-label]::before{content:attr(data-label) ': ';font-weight:600;"
    "color:#555}}";

#define DEFAULT_ACCENT  "#0b5cab"
#define DEFAULT_PRODUCT "scopegate"
#define LOGO_FILE_MAX   (256 * 1024)

/* The MIME type of a logo file from its first bytes; NULL when it is none we take. */
static const char *logo_type(const unsigned char *d, size_t n)
{
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (n >= 3 && memcmp(d, "\xff\xd8\xff", 3) == 0)
        return "image/jpeg";
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0))
        return "image/gif";
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0)
        return "image/webp";
    /* SVG is text: an <svg element near the start (after an XML declaration or comments). */
    size_t look = n < 1024 ? n : 1024;
    for (size_t i = 0; i + 4 <= look; i++)
        if (memcmp(d + i, "<svg", 4) == 0)
            return "image/svg+xml";
    return NULL;
}

/* logo_file as a data: URL (heap), or NULL with err set. */
static char *logo_data_url(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "branding.logo_file: cannot read %s", path);
        return NULL;
    }
    sg_buf_t b;
    sg_buf_init(&b, LOGO_FILE_MAX);
    sg_rc rc = sg_buf_add_file(&b, f);
    fclose(f);
    if (rc) {
        snprintf(err, errlen, "branding.logo_file: %s is %s", path,
                 rc == SG_ERR_TOO_BIG ? "larger than 256 KiB" : "unreadable");
        sg_buf_free(&b);
        return NULL;
    }
    const char *type = logo_type((const unsigned char *)b.ptr, b.len);
    if (!type) {
        snprintf(err, errlen, "branding.logo_file: %s is not a PNG, JPEG, GIF, WebP or SVG image",
                 path);
        sg_buf_free(&b);
        return NULL;
    }
    char *b64 = sg_b64_encode(b.ptr ? b.ptr : "", b.len, SG_B64_STD);
    sg_buf_free(&b);
    size_t n = b64 ? strlen(b64) + strlen(type) + 16 : 0;
    char *url = b64 ? malloc(n) : NULL;
    if (url)
        snprintf(url, n, "data:%s;base64,%s", type, b64);
    else
        snprintf(err, errlen, "out of memory");
    free(b64);
    return url;
}

/* "https://host[:port]" of an http(s) URL (heap). */
static char *url_origin(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return NULL;
    p += 3;
    size_t n = strcspn(p, "/?#");
    return strndup(url, (size_t)(p - url) + n);
}

sg_rc sg_look_init(sg_look_t *look, const sg_config_t *cfg, char *err, size_t errlen)
{
    memset(look, 0, sizeof(*look));
    look->product = cfg->product_name ? cfg->product_name : DEFAULT_PRODUCT;
    look->app_url = cfg->app_url ? cfg->app_url : "/";
    char *img_origin = NULL;
    if (cfg->logo_file) {
        look->logo_src = logo_data_url(cfg->logo_file, err, errlen);
        if (!look->logo_src)
            return SG_ERR_CONFIG;
        img_origin = strdup("data:");
    } else if (cfg->logo_url) {
        look->logo_src = strdup(cfg->logo_url);
        img_origin = url_origin(cfg->logo_url);
    }
    size_t n = sizeof(page_css_fmt) + 16;
    look->css = malloc(n);
    if (look->css)
        snprintf(look->css, n, page_css_fmt,
                 cfg->accent_color ? cfg->accent_color : DEFAULT_ACCENT);
    unsigned char h[SG_SHA256_LEN];
    char *hash = NULL;
    if (look->css) {
        sg_sha256(look->css, strlen(look->css), h);
        hash = sg_b64_encode(h, sizeof(h), SG_B64_STD);
    }
    sg_buf_t b;
    sg_buf_init(&b, 4096);
    sg_buf_printf(&b, "default-src 'none'; style-src 'sha256-%s'; ", hash ? hash : "");
    if (img_origin)
        sg_buf_printf(&b, "img-src %s; ", img_origin);
    sg_buf_adds(&b, "form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    look->csp = sg_buf_steal(&b);
    free(hash);
    free(img_origin);
    if (!look->css || !look->csp || ((cfg->logo_url || cfg->logo_file) && !look->logo_src)) {
        snprintf(err, errlen, "out of memory");
        sg_look_free(look);
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

void sg_look_free(sg_look_t *look)
{
    free(look->css);
    free(look->csp);
    free(look->logo_src);
    memset(look, 0, sizeof(*look));
}

/* Status messages after an action, by the code the action's redirect carries in ?notice=.
 * Fixed texts: nothing from the URL is ever shown. */
static const struct {
    const char *code, *text;
} notices[] = {
    {"signed_out", "You have signed out."},
    {"connected", "API access is connected. The application can now use the API for you while "
                  "you are away; you will not be asked again while this grant lives."},
    {"reconnected", "API access is connected again. The grant that stopped working was replaced."},
    {"disconnected", "API access is disconnected: the grant was revoked at the provider, and the "
                     "application can no longer use the API for you."},
    {"disconnected_here", "API access is disconnected here, but the provider could not be told. "
                          "Revoke the app's access at the provider too (in your personal "
                          "settings, under connected apps)."},
    {"session_ended", "That session has ended: the browser it was in is signed out."},
    {"others_ended", "You are signed out everywhere else; this browser stays signed in."},
    {"sessions_ended", "Their sessions have ended: they are signed out in every browser."},
    {"nothing_ended", "There was nothing to end: those sessions had already ended."},
};

static const char *notice_text(const sg_req_t *r)
{
    const char *code = r ? sg_form_get(&r->query, "notice") : NULL;
    for (size_t i = 0; code && i < sizeof(notices) / sizeof(notices[0]); i++)
        if (strcmp(code, notices[i].code) == 0)
            return notices[i].text;
    return NULL;
}

/* The whole document: header (product, way back to the application), the title, the notice,
 * the body, and for error pages the request id. */
static void page_doc(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, unsigned status,
                     const char *title, const char *body_html, int show_rid)
{
    const sg_look_t *look = &gw->look;
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    sg_buf_adds(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                    "<title>");
    sg_buf_add_html(&b, title);
    sg_buf_adds(&b, " - ");
    sg_buf_add_html(&b, look->product);
    sg_buf_printf(&b, "</title><style>%s</style></head><body>\n<header><span class=\"brand\">",
                  look->css);
    if (look->logo_src) {
        sg_buf_adds(&b, "<img alt=\"\" src=\"");
        sg_buf_add_html(&b, look->logo_src);
        sg_buf_adds(&b, "\">");
    }
    sg_buf_adds(&b, "<span id=\"product\">");
    sg_buf_add_html(&b, look->product);
    sg_buf_adds(&b, "</span></span><a id=\"back\" href=\"");
    sg_buf_add_html(&b, look->app_url);
    sg_buf_adds(&b, "\">Back to the application</a></header>\n<main>\n<h1>");
    sg_buf_add_html(&b, title);
    sg_buf_adds(&b, "</h1>\n");
    const char *notice = notice_text(r);
    if (notice) {
        sg_buf_adds(&b, "<p class=\"notice\" id=\"notice\" role=\"status\">");
        sg_buf_add_html(&b, notice);
        sg_buf_adds(&b, "</p>\n");
    }
    sg_buf_adds(&b, body_html);
    if (show_rid && r && r->request_id[0]) {
        sg_buf_adds(&b, "\n<p class=\"muted\" id=\"reference\"><small>Reference <code "
                        "id=\"request-id\">");
        sg_buf_add_html(&b, r->request_id);
        sg_buf_adds(&b, "</code>: give it to your administrators if you ask them for help."
                        "</small></p>");
    }
    sg_buf_adds(&b, "\n</main>\n");
    sg_buf_adds(&b, "</body></html>\n");
    if (b.ptr)
        sg_resp_text(w, status, "text/html;charset=UTF-8", b.ptr);
    else
        sg_resp_text(w, 500, "text/plain", "out of memory while writing a page");
    sg_buf_free(&b);
    w->no_store = 1;
    sg_resp_header(w, "X-Frame-Options", "DENY");
    /* Not no-referrer: browsers then send "Origin: null" with the pages' own forms, which the
     * CSRF check refuses. same-origin tells the provider nothing. */
    sg_resp_header(w, "Referrer-Policy", "same-origin");
    sg_resp_header(w, "X-Content-Type-Options", "nosniff");
    sg_resp_header(w, "Content-Security-Policy", look->csp);
}

void sg_page(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, unsigned status, const char *title,
             const char *body_html)
{
    page_doc(gw, r, w, status, title, body_html, 0);
}

void sg_page_error(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, unsigned status,
                   const char *title, const char *what, const char *todo)
{
    sg_session_view_t v;
    int signed_in = r && sg_gw_current_session(gw, r, &v) == 0;
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_adds(&b, "<p class=\"error\" id=\"what\">");
    sg_buf_add_html(&b, what);
    sg_buf_adds(&b, "</p>\n<p id=\"todo\">");
    sg_buf_add_html(&b, todo);
    sg_buf_adds(&b, "</p>\n<div class=\"actions\">");
    if (signed_in)
        sg_buf_adds(&b, "<a class=\"button\" id=\"account\" href=\"/\">Your account</a>");
    else
        sg_buf_adds(&b, "<a class=\"button\" id=\"signin\" href=\"/login\">Sign in again</a>");
    sg_buf_adds(&b, "<a class=\"button secondary\" href=\"");
    sg_buf_add_html(&b, gw->look.app_url);
    sg_buf_adds(&b, "\">Back to the application</a></div>");
    page_doc(gw, r, w, status, title, b.ptr ? b.ptr : "", 1);
    sg_buf_free(&b);
}

void sg_resp_json_error(sg_resp_t *w, unsigned status, const char *error, const char *desc)
{
    cJSON *j = cJSON_CreateObject();
    if (j && (!cJSON_AddStringToObject(j, "error", error) ||
              !cJSON_AddStringToObject(j, "error_description", desc))) {
        cJSON_Delete(j);
        j = NULL; /* sg_resp_json_body answers the out-of-memory error */
    }
    sg_resp_json_body(w, status, j);
}

int sg_json_add_str(cJSON *o, const char *key, const char *v)
{
    return (v ? cJSON_AddStringToObject(o, key, v) : cJSON_AddNullToObject(o, key)) != NULL;
}

int sg_json_add_num(cJSON *o, const char *key, long long v)
{
    return cJSON_AddNumberToObject(o, key, (double)v) != NULL;
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

/*
 * A return path is safe when it, and each %-decoding of it, is a path on this origin: starts
 * with one '/', not "//" or "/\" (which browsers read as another host), and holds no
 * backslash or control character (CR/LF would split headers). Checking the decoded forms too
 * catches "/%2F%2Fevil.example" and "%5C" tricks that an intermediary might decode.
 */
int sg_rd_is_safe(const char *rd)
{
    char cur[SG_RD_MAX + 1];
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
        char *next = sg_url_decode(cur, strlen(cur)); /* never longer than cur */
        if (!next)
            return 0;
        snprintf(cur, sizeof(cur), "%s", next);
        free(next);
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

int sg_gw_signed_in_form(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const char *back,
                         sg_session_view_t *v, sg_form_t *f)
{
    if (sg_gw_current_session(gw, r, v)) {
        memset(f, 0, sizeof(*f));
        sg_resp_redirect(w, back);
        return -1;
    }
    return sg_gw_check_form(gw, r, w, v, f);
}

int sg_gw_check_form(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_session_view_t *v,
                     sg_form_t *f)
{
    memset(f, 0, sizeof(*f));
    if (!sg_content_type_is(sg_req_header(r, "Content-Type"),
                            "application/x-www-form-urlencoded") ||
        sg_form_parse(r->body.ptr ? r->body.ptr : "", r->body.len, f)) {
        sg_page_error(gw, r, w, 400, "This form could not be used",
                      "The form was not sent properly.", "Go back and use the page's buttons.");
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
        sg_page_error(gw, r, w, 403, "Refused for your safety",
                      "This request did not come from this site's own button, so it was "
                      "refused.",
                      "Go back to the page, reload it and use its button.");
        sg_form_free(f);
        return -1;
    }
    return 0;
}
