#include "scopegate/salesforce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "scopegate/http.h"

/* The REST API version of the queries (OauthToken needs API 32 or later: salesforce.md 7). */
#define QUERY_API_VERSION "v62.0"

/* clang-format off */
const char *const sg_salesforce_scopes[] = {
    "openid", "id", "profile", "email", "address", "phone", "api", "web", "full",
    "refresh_token", "offline_access", "visualforce", "chatter_api", "custom_permissions",
    "content", "lightning", "wave_api", "eclair_api", "pardot_api", "interaction_api",
    "chatbot_api", "cdp_profile_api", "cdp_query_api", "cdp_ingest_api", "cdp_segment_api",
    "cdp_identityresolution_api", "cdp_calculated_insight_api", "cdp_api", "einstein_gpt_api",
    "sfap_api", "mcp_api", "user_registration_api", "pwdless_login_api", "forgot_password",
    "data_cloud_user_claims", NULL,
};

const char *const sg_salesforce_claims[] = {
    "active", "address", "email", "email_verified", "family_name", "given_name",
    "is_app_installed", "language", "locale", "name", "nickname", "organization_id",
    "phone_number", "phone_number_verified", "photos", "picture", "preferred_username",
    "profile", "sub", "updated_at", "urls", "user_id", "user_type", "zoneinfo", NULL,
};
/* clang-format on */

int sg_salesforce_scope_known(const char *scope)
{
    for (size_t i = 0; scope && sg_salesforce_scopes[i]; i++)
        if (strcmp(sg_salesforce_scopes[i], scope) == 0)
            return 1;
    return 0;
}

/* "2026-11-27T10:00:00.000+0000" (or Z, +hh:mm) as epoch seconds; -1 when unreadable. */
static long long parse_datetime(const char *s)
{
    int y, mo, d, h, mi, se, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) != 6)
        return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    long long t = (long long)timegm(&tm);
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    if (*p == '+' || *p == '-') {
        int sign = *p == '+' ? 1 : -1, oh = 0, om = 0;
        if (sscanf(p + 1, "%2d", &oh) != 1)
            return t;
        const char *q = p + 3;
        if (*q == ':')
            q++;
        if (sscanf(q, "%2d", &om) != 1)
            om = 0;
        t -= sign * (oh * 3600LL + om * 60LL);
    }
    return t;
}

/* s with SOQL's string escapes (heap). */
static char *soql_quote(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(2 * n + 1), *p = o;
    if (!o)
        return NULL;
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p = '\0';
    return o;
}

int sg_salesforce_oauthtoken_soql(char *out, size_t outlen, const char *user_id,
                                  const char *app_name)
{
    char *uq = soql_quote(user_id), *aq = app_name ? soql_quote(app_name) : NULL;
    int ret = -1;
    if (!uq || (app_name && !aq))
        goto out;
    if (aq)
        snprintf(out, outlen,
                 "SELECT Id, UserId, AppName, CreatedDate FROM OauthToken WHERE UserId = '%s' "
                 "AND AppName = '%s'",
                 uq, aq);
    else
        snprintf(out, outlen,
                 "SELECT Id, UserId, AppName, CreatedDate FROM OauthToken WHERE UserId = '%s'", uq);
    ret = 0;
out:
    free(uq);
    free(aq);
    return ret;
}

char *sg_salesforce_query_url(const char *instance_url, const char *soql)
{
    char *enc = sg_url_encode(soql);
    size_t ulen = strlen(instance_url) + (enc ? strlen(enc) : 0) + 64;
    char *url = malloc(ulen);
    if (!enc || !url) {
        free(enc);
        free(url);
        return NULL;
    }
    size_t bl = strlen(instance_url);
    snprintf(url, ulen, "%.*s/services/data/" QUERY_API_VERSION "/query?q=%s",
             (int)(bl && instance_url[bl - 1] == '/' ? bl - 1 : bl), instance_url, enc);
    free(enc);
    return url;
}

int sg_salesforce_count_since(const char *body, size_t len, long long since, long long *count,
                              long long *rows)
{
    cJSON *j = cJSON_ParseWithLength(body ? body : "", len);
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(j, "records");
    if (!cJSON_IsArray(recs)) {
        cJSON_Delete(j);
        return -1;
    }
    long long n = 0, total = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        total++;
        const cJSON *cd = cJSON_GetObjectItemCaseSensitive(r, "CreatedDate");
        long long t = cJSON_IsString(cd) ? parse_datetime(cd->valuestring) : -1;
        if (t >= since)
            n++;
    }
    cJSON_Delete(j);
    *count = n;
    *rows = total;
    return 0;
}
