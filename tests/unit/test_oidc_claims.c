/*
 * oidc, the parts that need no provider: ID-token claim checks (iss, aud, azp, exp, iat, nbf,
 * nonce, sub) at chosen clock values, token-response shapes (Salesforce's and others'),
 * provider error mapping, client_secret_basic encoding, identity extraction, PKCE, and the
 * options sg_oidc_new refuses. The provider-facing parts are in tests/lib/test_oidc.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oidc_int.h"
#include "scopegate/crypto.h"
#include "scopegate/http.h"

#define ISS    "https://login.example.com"
#define CLIENT "demo-signin"
#define NOW    1800000000LL
#define SKEW   60LL

/* ---- helpers that say what they expected ------------------------------------------------ */

static cJSON *good_claims(void)
{
    cJSON *c = cJSON_CreateObject();
    assert_non_null(c);
    cJSON_AddStringToObject(c, "iss", ISS);
    cJSON_AddStringToObject(c, "sub", ISS "/id/00D000000000001EAA/005000000000001AAA");
    cJSON_AddStringToObject(c, "aud", CLIENT);
    cJSON_AddNumberToObject(c, "exp", (double)(NOW + 120));
    cJSON_AddNumberToObject(c, "iat", (double)NOW);
    cJSON_AddStringToObject(c, "nonce", "n-123");
    return c;
}

static void set_num(cJSON *c, const char *k, double v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(c, k);
    cJSON_AddNumberToObject(c, k, v);
}

static void set_str(cJSON *c, const char *k, const char *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(c, k);
    cJSON_AddStringToObject(c, k, v);
}

static void set_raw(cJSON *c, const char *k, const char *json)
{
    cJSON_DeleteItemFromObjectCaseSensitive(c, k);
    cJSON *v = cJSON_Parse(json);
    assert_non_null(v);
    cJSON_AddItemToObject(c, k, v);
}

static void expect_accepted(cJSON *c, const char *nonce, long long now)
{
    sg_oidc_err_t err = {0};
    sg_rc rc = sg_oidc_check_claims(c, ISS, CLIENT, nonce, now, SKEW, &err);
    if (rc != SG_OK) {
        char *t = cJSON_PrintUnformatted(c);
        fail_msg("expected the claims to pass, got %s (%s: %s) for %s", sg_rc_str(rc), err.error,
                 err.description, t ? t : "?");
    }
    cJSON_Delete(c);
}

/* Rejected with bad_id_token and a description that names `mentions`. */
static void expect_rejected(cJSON *c, const char *nonce, long long now, const char *mentions)
{
    sg_oidc_err_t err = {0};
    sg_rc rc = sg_oidc_check_claims(c, ISS, CLIENT, nonce, now, SKEW, &err);
    char *t = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    if (rc != SG_ERR_DENIED || strcmp(err.error, "bad_id_token") != 0 ||
        !strstr(err.description, mentions)) {
        print_error("claims %s\n", t ? t : "?");
        free(t);
        fail_msg("expected denied/bad_id_token mentioning \"%s\", got %s/%s \"%s\"", mentions,
                 sg_rc_str(rc), err.error, err.description);
    }
    free(t);
}

/* ---- claims ----------------------------------------------------------------------------- */

static void test_claims_from_a_good_token_pass(void **state)
{
    expect_accepted(good_claims(), "n-123", NOW);
}

static void test_claims_pass_without_expected_nonce(void **state)
{
    cJSON *c = good_claims();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "nonce");
    expect_accepted(c, NULL, NOW);
}

static void test_claims_reject_other_issuer(void **state)
{
    cJSON *c = good_claims();
    set_str(c, "iss", "https://evil.example.com");
    expect_rejected(c, "n-123", NOW, "iss");
    c = good_claims();
    set_str(c, "iss", ISS "/"); /* exact match only: no normalising */
    expect_rejected(c, "n-123", NOW, "iss");
    c = good_claims();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "iss");
    expect_rejected(c, "n-123", NOW, "iss");
}

static void test_claims_reject_other_audience(void **state)
{
    cJSON *c = good_claims();
    set_str(c, "aud", "demo-api");
    expect_rejected(c, "n-123", NOW, "aud");
    c = good_claims();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "aud");
    expect_rejected(c, "n-123", NOW, "aud");
    c = good_claims();
    set_raw(c, "aud", "42");
    expect_rejected(c, "n-123", NOW, "aud");
    c = good_claims();
    set_raw(c, "aud", "[\"demo-api\",\"other\"]");
    expect_rejected(c, "n-123", NOW, "aud");
    c = good_claims();
    set_raw(c, "aud", "[\"" CLIENT "\", 7]");
    expect_rejected(c, "n-123", NOW, "aud");
}

static void test_claims_accept_audience_array_containing_client(void **state)
{
    cJSON *c = good_claims();
    set_raw(c, "aud", "[\"" CLIENT "\"]");
    expect_accepted(c, "n-123", NOW);
    c = good_claims();
    set_raw(c, "aud", "[\"other\",\"" CLIENT "\"]");
    set_str(c, "azp", CLIENT);
    expect_accepted(c, "n-123", NOW);
}

static void test_claims_with_several_audiences_need_azp_of_this_client(void **state)
{
    cJSON *c = good_claims();
    set_raw(c, "aud", "[\"other\",\"" CLIENT "\"]");
    expect_rejected(c, "n-123", NOW, "azp");
    c = good_claims();
    set_raw(c, "aud", "[\"other\",\"" CLIENT "\"]");
    set_str(c, "azp", "other");
    expect_rejected(c, "n-123", NOW, "azp");
    c = good_claims();
    set_str(c, "azp", "other"); /* even with one audience, a present azp must be ours */
    expect_rejected(c, "n-123", NOW, "azp");
}

static void test_claims_reject_expired_token_past_the_skew(void **state)
{
    cJSON *c = good_claims();
    set_num(c, "exp", (double)(NOW - SKEW));
    expect_rejected(c, "n-123", NOW, "expired");
    c = good_claims();
    set_num(c, "exp", (double)(NOW - 3600));
    expect_rejected(c, "n-123", NOW, "expired");
}

static void test_claims_accept_expiry_within_the_skew(void **state)
{
    cJSON *c = good_claims();
    set_num(c, "exp", (double)(NOW - SKEW + 1));
    expect_accepted(c, "n-123", NOW);
}

static void test_claims_reject_missing_or_textual_exp(void **state)
{
    cJSON *c = good_claims();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "exp");
    expect_rejected(c, "n-123", NOW, "exp");
    c = good_claims();
    set_str(c, "exp", "1800000120");
    expect_rejected(c, "n-123", NOW, "exp");
}

static void test_claims_reject_iat_in_the_future(void **state)
{
    cJSON *c = good_claims();
    set_num(c, "iat", (double)(NOW + SKEW + 1));
    set_num(c, "exp", (double)(NOW + 600));
    expect_rejected(c, "n-123", NOW, "future");
    c = good_claims();
    set_num(c, "iat", (double)(NOW + SKEW));
    set_num(c, "exp", (double)(NOW + 600));
    expect_accepted(c, "n-123", NOW);
    c = good_claims();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "iat");
    expect_rejected(c, "n-123", NOW, "iat");
}

static void test_claims_reject_nbf_in_the_future(void **state)
{
    cJSON *c = good_claims();
    set_num(c, "nbf", (double)(NOW + SKEW + 10));
    expect_rejected(c, "n-123", NOW, "before");
    c = good_claims();
    set_num(c, "nbf", (double)NOW);
    expect_accepted(c, "n-123", NOW);
}

static void test_claims_reject_nonce_mismatch_or_absence(void **state)
{
    expect_rejected(good_claims(), "n-999", NOW, "nonce");
    expect_rejected(good_claims(), "n-12", NOW, "nonce");
    cJSON *c = good_claims();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "nonce");
    expect_rejected(c, "n-123", NOW, "nonce");
    c = good_claims();
    set_raw(c, "nonce", "123");
    expect_rejected(c, "123", NOW, "nonce");
}

static void test_claims_reject_missing_sub(void **state)
{
    cJSON *c = good_claims();
    cJSON_DeleteItemFromObjectCaseSensitive(c, "sub");
    expect_rejected(c, "n-123", NOW, "sub");
    c = good_claims();
    set_str(c, "sub", "");
    expect_rejected(c, "n-123", NOW, "sub");
}

static void test_claims_reject_non_object(void **state)
{
    cJSON *a = cJSON_CreateArray();
    expect_rejected(a, NULL, NOW, "object");
}

/* ---- token responses -------------------------------------------------------------------- */

static sg_rc parse(long status, const char *body, const char *sent, sg_tokens_t *t,
                   sg_oidc_err_t *err)
{
    memset(err, 0, sizeof *err);
    return sg_oidc_parse_tokens(status, body, strlen(body), sent, NOW, t, err);
}

static void test_tokens_salesforce_shape(void **state)
{
    const char *body =
        "{\"access_token\":\"00D8d000001DeMo!AQ0AQ.x\",\"signature\":\"abc=\","
        "\"scope\":\"openid profile email\",\"id_token\":\"e.y.J\","
        "\"instance_url\":\"https://demo.my.salesforce.com\","
        "\"id\":\"https://login.salesforce.com/id/00D8d000001DeMoEAK/0058d000002AlicEAA\","
        "\"token_type\":\"Bearer\",\"issued_at\":\"1589009375588\"}";
    sg_tokens_t t;
    sg_oidc_err_t err;
    sg_rc rc = parse(200, body, NULL, &t, &err);
    if (rc)
        fail_msg("expected ok, got %s: %s %s", sg_rc_str(rc), err.error, err.description);
    assert_string_equal(t.access_token, "00D8d000001DeMo!AQ0AQ.x");
    assert_null(t.refresh_token);
    assert_string_equal(t.id_token, "e.y.J");
    assert_string_equal(t.scope, "openid profile email");
    assert_string_equal(t.instance_url, "https://demo.my.salesforce.com");
    assert_string_equal(t.id_url,
                        "https://login.salesforce.com/id/00D8d000001DeMoEAK/0058d000002AlicEAA");
    assert_int_equal(t.issued_at, 1589009375LL);
    assert_int_equal(t.expires_in, -1);
    sg_tokens_free(&t);
}

static void test_tokens_standard_shape_with_expires_in(void **state)
{
    sg_tokens_t t;
    sg_oidc_err_t err;
    assert_int_equal(SG_OK, parse(200,
                                  "{\"access_token\":\"at\",\"token_type\":\"bearer\","
                                  "\"expires_in\":3600,\"refresh_token\":\"rt\"}",
                                  NULL, &t, &err));
    assert_int_equal(t.expires_in, 3600);
    assert_int_equal(t.issued_at, NOW);
    assert_string_equal(t.refresh_token, "rt");
    assert_null(t.instance_url);
    assert_null(t.id_url);
    sg_tokens_free(&t);
    assert_int_equal(
        SG_OK, parse(200, "{\"access_token\":\"at\",\"expires_in\":\"300\"}", NULL, &t, &err));
    assert_int_equal(t.expires_in, 300);
    sg_tokens_free(&t);
    /* issued_at in seconds (not Salesforce) stays seconds */
    assert_int_equal(
        SG_OK, parse(200, "{\"access_token\":\"at\",\"issued_at\":1700000000}", NULL, &t, &err));
    assert_int_equal(t.issued_at, 1700000000LL);
    sg_tokens_free(&t);
}

static void test_tokens_refresh_echo_is_not_a_rotation(void **state)
{
    sg_tokens_t t;
    sg_oidc_err_t err;
    assert_int_equal(SG_OK, parse(200, "{\"access_token\":\"at\",\"refresh_token\":\"5Aep-old\"}",
                                  "5Aep-old", &t, &err));
    assert_null(t.refresh_token);
    sg_tokens_free(&t);
    assert_int_equal(SG_OK, parse(200, "{\"access_token\":\"at\",\"refresh_token\":\"5Aep-new\"}",
                                  "5Aep-old", &t, &err));
    assert_string_equal(t.refresh_token, "5Aep-new");
    sg_tokens_free(&t);
}

static void expect_token_error(long status, const char *body, sg_rc want_rc, int want_status,
                               const char *want_error, const char *want_desc)
{
    sg_tokens_t t;
    sg_oidc_err_t err;
    sg_rc rc = parse(status, body, NULL, &t, &err);
    if (rc != want_rc || err.http_status != want_status || strcmp(err.error, want_error) != 0 ||
        (want_desc && !strstr(err.description, want_desc)))
        fail_msg("body %s (HTTP %ld): expected %s %d %s \"%s\", got %s %d %s \"%s\"", body, status,
                 sg_rc_str(want_rc), want_status, want_error, want_desc ? want_desc : "*",
                 sg_rc_str(rc), err.http_status, err.error, err.description);
    assert_null(t.access_token);
    assert_null(t.id_token);
    assert_int_equal(t.expires_in, -1);
}

static void test_tokens_provider_errors_are_mapped(void **state)
{
    expect_token_error(400,
                       "{\"error\":\"invalid_grant\",\"error_description\":\"expired authorization "
                       "code\"}",
                       SG_ERR_DENIED, 400, "invalid_grant", "expired authorization code");
    expect_token_error(500,
                       "{\"error\":\"unknown_error\",\"error_description\":\"retry your "
                       "request\"}",
                       SG_ERR_DENIED, 500, "unknown_error", "retry your request");
    expect_token_error(
        503, "[{\"message\":\"Service Unavailable\",\"errorCode\":\"SERVER_UNAVAILABLE\"}]",
        SG_ERR_DENIED, 503, "http_error", "HTTP 503");
    expect_token_error(401, "", SG_ERR_DENIED, 401, "http_error", "HTTP 401");
    expect_token_error(200, "{\"error\":\"invalid_client\"}", SG_ERR_DENIED, 200, "invalid_client",
                       NULL);
}

static void test_tokens_malformed_answers_are_refused(void **state)
{
    expect_token_error(200, "{\"access_token\":\"00D\",\"instance_url\":\"http://", SG_ERR_PARSE,
                       200, "malformed", "JSON");
    expect_token_error(200, "<html>hello</html>", SG_ERR_PARSE, 200, "malformed", NULL);
    expect_token_error(200, "[1,2]", SG_ERR_PARSE, 200, "malformed", NULL);
    expect_token_error(200, "{\"scope\":\"api\"}", SG_ERR_PARSE, 200, "malformed", "access_token");
    expect_token_error(200, "{\"access_token\":\"\"}", SG_ERR_PARSE, 200, "malformed",
                       "access_token");
    expect_token_error(200, "{\"access_token\":\"a\",\"token_type\":\"MAC\"}", SG_ERR_PARSE, 200,
                       "malformed", "token_type");
    expect_token_error(200, "{\"access_token\":\"a\",\"expires_in\":\"soon\"}", SG_ERR_PARSE, 200,
                       "malformed", "expires_in");
    expect_token_error(200, "{\"access_token\":\"a\",\"id_token\":7}", SG_ERR_PARSE, 200,
                       "malformed", "id_token");
    expect_token_error(200, "{\"access_token\":\"a\"} trailing", SG_ERR_PARSE, 200, "malformed",
                       NULL);
}

/* ---- other error shapes ----------------------------------------------------------------- */

static void test_bearer_challenge_and_plain_word_errors_are_mapped(void **state)
{
    sg_oidc_err_t err;
    sg_oidc_map_error(401, "", 0,
                      "Bearer realm=\"x\", error=\"invalid_token\", error_description=\"The "
                      "access token expired\"",
                      "userinfo", &err);
    assert_int_equal(err.http_status, 401);
    assert_string_equal(err.error, "invalid_token");
    assert_string_equal(err.description, "The access token expired");

    sg_oidc_map_error(403, "Bad_OAuth_Token", 15, NULL, "userinfo", &err);
    assert_int_equal(err.http_status, 403);
    assert_string_equal(err.error, "Bad_OAuth_Token");
    assert_string_equal(err.description, "userinfo answered HTTP 403");

    /* A body that is neither: only the status is reported, the body never copied. */
    const char *page = "<html>00D8d000001DeMo!SECRET</html>";
    sg_oidc_map_error(502, page, strlen(page), NULL, "userinfo", &err);
    assert_string_equal(err.error, "http_error");
    assert_null(strstr(err.description, "SECRET"));
}

static void test_provider_text_loses_control_characters(void **state)
{
    const char *body = "{\"error\":\"bad\\nthing\",\"error_description\":\"line1\\r\\nline2\"}";
    sg_oidc_err_t err;
    sg_oidc_map_error(400, body, strlen(body), NULL, "token endpoint", &err);
    assert_string_equal(err.error, "bad?thing");
    assert_string_equal(err.description, "line1??line2");
}

/* ---- client authentication -------------------------------------------------------------- */

static void test_basic_auth_form_encodes_id_and_secret_first(void **state)
{
    char *h = sg_oidc_basic_auth("my client:id", "s3cr%t+/=");
    assert_non_null(h);
    assert_memory_equal(h, "Basic ", 6);
    unsigned char *raw;
    size_t len;
    assert_int_equal(SG_OK, sg_b64_decode(h + 6, strlen(h + 6), &raw, &len));
    assert_string_equal((char *)raw, "my%20client%3Aid:s3cr%25t%2B%2F%3D");
    free(raw);
    char *user, *pass;
    assert_int_equal(SG_OK, sg_basic_auth_parse(h, &user, &pass));
    assert_string_equal(user, "my client:id");
    assert_string_equal(pass, "s3cr%t+/=");
    free(user);
    free(pass);
    free(h);
}

/* ---- identity --------------------------------------------------------------------------- */

static void expect_identity(const char *json, const char *user, const char *org)
{
    cJSON *c = cJSON_Parse(json);
    assert_non_null(c);
    char *u, *o;
    sg_rc rc = sg_oidc_identity(c, &u, &o);
    cJSON_Delete(c);
    if (rc != SG_OK)
        fail_msg("%s: expected ok, got %s", json, sg_rc_str(rc));
    if (strcmp(u, user) != 0 || (org ? !o || strcmp(o, org) != 0 : o != NULL))
        fail_msg("%s: expected user %s org %s, got user %s org %s", json, user, org ? org : "NULL",
                 u, o ? o : "NULL");
    free(u);
    free(o);
}

static void test_identity_from_salesforce_identity_url(void **state)
{
    expect_identity("{\"sub\":\"https://login.salesforce.com/id/00D8d000001DeMoEAK/"
                    "0058d000002AlicEAA\"}",
                    "0058d000002AlicEAA", "00D8d000001DeMoEAK");
    expect_identity("{\"sub\":\"http://127.0.0.1:4000/id/00D8d000001DeMo/0058d000002Alic\"}",
                    "0058d000002Alic", "00D8d000001DeMo");
}

static void test_identity_prefers_explicit_claims(void **state)
{
    expect_identity("{\"sub\":\"https://login.salesforce.com/id/00D8d000001DeMoEAK/"
                    "0058d000002AlicEAA\",\"user_id\":\"0058d000002OtherAA\","
                    "\"organization_id\":\"00D8d000001OtherAA\"}",
                    "0058d000002OtherAA", "00D8d000001OtherAA");
}

static void test_identity_of_plain_sub_is_the_sub(void **state)
{
    expect_identity("{\"sub\":\"248289761001\"}", "248289761001", NULL);
    expect_identity("{\"sub\":\"https://idp.example/users/42\"}", "https://idp.example/users/42",
                    NULL);
    /* looks like an identity URL but the ids are not Salesforce ids */
    expect_identity("{\"sub\":\"https://idp.example/id/team/alice\"}",
                    "https://idp.example/id/team/alice", NULL);
}

static void test_identity_needs_sub_or_user_id(void **state)
{
    char *u, *o;
    cJSON *c = cJSON_Parse("{\"email\":\"a@b\"}");
    assert_int_equal(SG_ERR_NOTFOUND, sg_oidc_identity(c, &u, &o));
    assert_null(u);
    assert_null(o);
    cJSON_Delete(c);
    assert_int_equal(SG_ERR_PARSE, sg_oidc_identity(NULL, &u, &o));
}

/* ---- PKCE and options ------------------------------------------------------------------- */

static void test_pkce_pair_is_s256_of_a_fresh_verifier(void **state)
{
    char *v1, *c1, *v2, *c2;
    assert_int_equal(SG_OK, sg_oidc_pkce_pair(&v1, &c1));
    assert_int_equal(SG_OK, sg_oidc_pkce_pair(&v2, &c2));
    assert_true(strlen(v1) >= 43 && strlen(v1) <= 128);
    unsigned char d[SG_SHA256_LEN];
    sg_sha256(v1, strlen(v1), d);
    char *want = sg_b64_encode(d, sizeof d, SG_B64_URL);
    assert_string_equal(c1, want);
    assert_string_not_equal(v1, v2);
    free(want);
    free(v1);
    free(c1);
    free(v2);
    free(c2);
}

static void test_new_refuses_http_issuer_unless_allowed(void **state)
{
    sg_oidc_t *op = NULL;
    sg_oidc_opts_t o = {.issuer = "http://127.0.0.1:1", .client_id = CLIENT};
    assert_int_equal(SG_ERR_CONFIG, sg_oidc_new(&o, &op));
    assert_null(op);
    o.allow_http = 1;
    assert_int_equal(SG_OK, sg_oidc_new(&o, &op));
    sg_oidc_free(op);
    o.issuer = "ftp://login.example.com";
    assert_int_equal(SG_ERR_CONFIG, sg_oidc_new(&o, &op));
    o.issuer = ISS "?x=1";
    assert_int_equal(SG_ERR_CONFIG, sg_oidc_new(&o, &op));
    o.issuer = ISS "#f";
    assert_int_equal(SG_ERR_CONFIG, sg_oidc_new(&o, &op));
    o.issuer = ISS;
    o.client_id = "";
    assert_int_equal(SG_ERR_CONFIG, sg_oidc_new(&o, &op));
    o.client_id = CLIENT;
    o.client_secret = "s";
    assert_int_equal(SG_OK, sg_oidc_new(&o, &op));
    sg_oidc_free(op);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claims_from_a_good_token_pass),
        cmocka_unit_test(test_claims_pass_without_expected_nonce),
        cmocka_unit_test(test_claims_reject_other_issuer),
        cmocka_unit_test(test_claims_reject_other_audience),
        cmocka_unit_test(test_claims_accept_audience_array_containing_client),
        cmocka_unit_test(test_claims_with_several_audiences_need_azp_of_this_client),
        cmocka_unit_test(test_claims_reject_expired_token_past_the_skew),
        cmocka_unit_test(test_claims_accept_expiry_within_the_skew),
        cmocka_unit_test(test_claims_reject_missing_or_textual_exp),
        cmocka_unit_test(test_claims_reject_iat_in_the_future),
        cmocka_unit_test(test_claims_reject_nbf_in_the_future),
        cmocka_unit_test(test_claims_reject_nonce_mismatch_or_absence),
        cmocka_unit_test(test_claims_reject_missing_sub),
        cmocka_unit_test(test_claims_reject_non_object),
        cmocka_unit_test(test_tokens_salesforce_shape),
        cmocka_unit_test(test_tokens_standard_shape_with_expires_in),
        cmocka_unit_test(test_tokens_refresh_echo_is_not_a_rotation),
        cmocka_unit_test(test_tokens_provider_errors_are_mapped),
        cmocka_unit_test(test_tokens_malformed_answers_are_refused),
        cmocka_unit_test(test_bearer_challenge_and_plain_word_errors_are_mapped),
        cmocka_unit_test(test_provider_text_loses_control_characters),
        cmocka_unit_test(test_basic_auth_form_encodes_id_and_secret_first),
        cmocka_unit_test(test_identity_from_salesforce_identity_url),
        cmocka_unit_test(test_identity_prefers_explicit_claims),
        cmocka_unit_test(test_identity_of_plain_sub_is_the_sub),
        cmocka_unit_test(test_identity_needs_sub_or_user_id),
        cmocka_unit_test(test_pkce_pair_is_s256_of_a_fresh_verifier),
        cmocka_unit_test(test_new_refuses_http_issuer_unless_allowed),
    };
    return cmocka_run_group_tests_name("oidc_claims", tests, NULL, NULL);
}
