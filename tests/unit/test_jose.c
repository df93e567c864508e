/* jose: RS256 sign/verify, strict compact parsing, JWK round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/evp.h>

#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/jose.h"

/* RSA key generation is slow (more so under ASan): the group makes its keys once. */
typedef struct {
    EVP_PKEY *key;   /* signs the tokens */
    EVP_PKEY *other; /* an unrelated RSA key */
    EVP_PKEY *small; /* 1024 bits: too weak to accept from a JWKS */
    EVP_PKEY *ec;    /* not RSA at all */
} keys_t;

static int group_setup(void **state)
{
    keys_t *k = calloc(1, sizeof(*k));
    if (!k)
        return -1;
    k->key = sg_rsa_generate(2048);
    k->other = sg_rsa_generate(2048);
    k->small = sg_rsa_generate(1024);
    k->ec = EVP_EC_gen("P-256");
    *state = k;
    return k->key && k->other && k->small && k->ec ? 0 : -1;
}

static int group_teardown(void **state)
{
    keys_t *k = *state;
    if (k) {
        EVP_PKEY_free(k->key);
        EVP_PKEY_free(k->other);
        EVP_PKEY_free(k->small);
        EVP_PKEY_free(k->ec);
        free(k);
    }
    return 0;
}

static cJSON *claims(void)
{
    cJSON *p = cJSON_Parse("{\"iss\":\"https://login.example\",\"sub\":\"005xx\","
                           "\"aud\":\"demo-signin\",\"exp\":2000000000,\"nonce\":\"n-1\"}");
    assert_non_null(p);
    return p;
}

static char *sign_claims(EVP_PKEY *key, const char *kid)
{
    cJSON *p = claims();
    char *t = sg_jws_sign_rs256(p, key, kid);
    cJSON_Delete(p);
    assert_non_null(t);
    return t;
}

static char *b64url(const char *s)
{
    char *e = sg_b64_encode(s, strlen(s), SG_B64_URL);
    assert_non_null(e);
    return e;
}

/* "b64(header).b64(payload).sig" from raw JSON text and a signature part as given. */
static char *compact(const char *header, const char *payload, const char *sigpart)
{
    char *h = b64url(header), *p = b64url(payload);
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    assert_int_equal(sg_buf_printf(&b, "%s.%s.%s", h, p, sigpart), SG_OK);
    free(h);
    free(p);
    return sg_buf_steal(&b);
}

/*
 * A token whose RS256 signature over its own signing input is genuine, whatever its header
 * says: what an attacker holding a real signing oracle (or a confused verifier) would have.
 */
static char *sign_with_header(EVP_PKEY *key, const char *header, const char *payload)
{
    char *unsigned_token = compact(header, payload, "");
    size_t silen = strlen(unsigned_token) - 1; /* drop the trailing '.' */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    assert_non_null(ctx);
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)unsigned_token, silen), 1);
    EVP_MD_CTX_free(ctx);
    char *s64 = sg_b64_encode(sig, siglen, SG_B64_URL);
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    assert_int_equal(sg_buf_printf(&b, "%s%s", unsigned_token, s64), SG_OK);
    free(s64);
    free(unsigned_token);
    return sg_buf_steal(&b);
}

static sg_rc verify_text(const char *token, EVP_PKEY *key)
{
    sg_jws_t jws;
    sg_rc rc = sg_jws_parse(token, &jws);
    if (rc)
        return rc;
    rc = sg_jws_verify_rs256(&jws, key);
    sg_jws_free(&jws);
    return rc;
}

static void expect_parse_rejected(const char *token, sg_rc want)
{
    sg_jws_t jws;
    sg_rc rc = sg_jws_parse(token, &jws);
    if (rc != want) {
        const char *tk = token ? token : "(null)";
        size_t len = strlen(tk);
        print_error("token \"%.40s...%s\" (%zu bytes): expected %s, got %s\n", tk,
                    tk + (len > 24 ? len - 24 : 0), len, sg_rc_str(want), sg_rc_str(rc));
        sg_jws_free(&jws);
    }
    assert_int_equal(rc, want);
    /* A refused token leaves nothing behind to free or to trust. */
    assert_null(jws.header);
    assert_null(jws.payload);
    assert_null(jws.signing_input);
    assert_null(jws.sig);
    assert_null(jws.alg);
    sg_jws_free(&jws);
}

/* ---- sign and verify ---- */

static void test_jws_signed_token_verifies_with_signing_key(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    assert_int_equal(verify_text(t, k->key), SG_OK);
    free(t);
}

static void test_jws_parse_exposes_header_payload_and_signature(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    sg_jws_t jws;
    assert_int_equal(sg_jws_parse(t, &jws), SG_OK);
    assert_string_equal(jws.alg, "RS256");
    assert_string_equal(jws.kid, "k1");
    assert_string_equal(cJSON_GetObjectItem(jws.payload, "sub")->valuestring, "005xx");
    assert_string_equal(cJSON_GetObjectItem(jws.header, "typ")->valuestring, "JWT");
    assert_int_equal(jws.siglen, 256);
    size_t silen = (size_t)(strrchr(t, '.') - t);
    assert_int_equal(strlen(jws.signing_input), silen);
    assert_memory_equal(jws.signing_input, t, silen);
    sg_jws_free(&jws);
    free(t);
}

static void test_jws_signed_without_kid_has_no_kid(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, NULL);
    sg_jws_t jws;
    assert_int_equal(sg_jws_parse(t, &jws), SG_OK);
    assert_null(jws.kid);
    assert_null(cJSON_GetObjectItem(jws.header, "kid"));
    assert_int_equal(sg_jws_verify_rs256(&jws, k->key), SG_OK);
    sg_jws_free(&jws);
    free(t);
}

static void test_jws_tampered_payload_fails(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    char *d1 = strchr(t, '.'), *d2 = strrchr(t, '.');
    char *evil = b64url("{\"iss\":\"https://login.example\",\"sub\":\"005ADMIN\","
                        "\"aud\":\"demo-signin\",\"exp\":2000000000,\"nonce\":\"n-1\"}");
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    assert_int_equal(sg_buf_printf(&b, "%.*s.%s%s", (int)(d1 - t), t, evil, d2), SG_OK);
    assert_int_equal(verify_text(b.ptr, k->key), SG_ERR_CRYPTO);
    sg_buf_free(&b);
    free(evil);
    free(t);
}

static void test_jws_tampered_signature_fails(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    char *sig = strrchr(t, '.') + 1;
    /* Change a character in the middle: every bit of it is significant. */
    sig[100] = sig[100] == 'A' ? 'B' : 'A';
    assert_int_equal(verify_text(t, k->key), SG_ERR_CRYPTO);
    free(t);
}

static void test_jws_truncated_signature_fails(void **state)
{
    /* Refused either way: by the parser (a cut encoding) or by verification. */
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    t[strlen(t) - 4] = '\0';
    sg_rc rc = verify_text(t, k->key);
    if (rc != SG_ERR_CRYPTO && rc != SG_ERR_PARSE)
        print_error("expected crypto or parse, got %s\n", sg_rc_str(rc));
    assert_true(rc == SG_ERR_CRYPTO || rc == SG_ERR_PARSE);
    free(t);
}

static void test_jws_verify_fails_with_another_key(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    assert_int_equal(verify_text(t, k->other), SG_ERR_CRYPTO);
    free(t);
}

static void test_jws_verify_refuses_missing_or_non_rsa_key(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    assert_int_equal(verify_text(t, NULL), SG_ERR_CRYPTO);
    assert_int_equal(verify_text(t, k->ec), SG_ERR_CRYPTO);
    free(t);
}

static const char payload_json[] = "{\"sub\":\"005xx\",\"exp\":2000000000}";

static void test_jws_header_can_be_rs256_signed_by_hand(void **state)
{
    /* The control for the alg tests below: the hand-made token verifies when it says RS256. */
    keys_t *k = *state;
    char *t = sign_with_header(k->key, "{\"alg\":\"RS256\"}", payload_json);
    assert_int_equal(verify_text(t, k->key), SG_OK);
    free(t);
}

static void test_jws_verify_rejects_alg_none_even_with_valid_signature(void **state)
{
    keys_t *k = *state;
    char *t = sign_with_header(k->key, "{\"alg\":\"none\"}", payload_json);
    assert_int_equal(verify_text(t, k->key), SG_ERR_CRYPTO);
    free(t);
}

static void test_jws_verify_rejects_unsigned_alg_none_token(void **state)
{
    keys_t *k = *state;
    char *t = compact("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload_json, "");
    sg_jws_t jws;
    sg_rc rc = sg_jws_parse(t, &jws);
    if (rc == SG_OK) {
        assert_int_equal(sg_jws_verify_rs256(&jws, k->key), SG_ERR_CRYPTO);
        sg_jws_free(&jws);
    } else {
        assert_int_equal(rc, SG_ERR_PARSE);
    }
    free(t);
}

static void test_jws_verify_rejects_hs256_and_other_algs(void **state)
{
    keys_t *k = *state;
    const char *headers[] = {"{\"alg\":\"HS256\"}", "{\"alg\":\"rs256\"}",  "{\"alg\":\"RS512\"}",
                             "{\"alg\":\"PS256\"}", "{\"alg\":\"RS256 \"}", "{\"alg\":\"\"}"};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char *t = sign_with_header(k->key, headers[i], payload_json);
        sg_rc rc = verify_text(t, k->key);
        if (rc != SG_ERR_CRYPTO)
            print_error("header %s: expected crypto, got %s\n", headers[i], sg_rc_str(rc));
        assert_int_equal(rc, SG_ERR_CRYPTO);
        free(t);
    }
}

static void test_jws_verify_rejects_hs256_keyed_with_public_key(void **state)
{
    /* The classic confusion: HMAC "signed" with the RSA public key's bytes as secret. */
    keys_t *k = *state;
    cJSON *jwk = sg_jwk_from_pkey(k->key, NULL);
    const char *secret = cJSON_GetObjectItem(jwk, "n")->valuestring;
    char *unsigned_token = compact("{\"alg\":\"HS256\"}", payload_json, "");
    size_t silen = strlen(unsigned_token) - 1;
    unsigned char mac[SG_SHA256_LEN];
    assert_int_equal(sg_hmac_sha256(secret, strlen(secret), unsigned_token, silen, mac), SG_OK);
    char *m64 = sg_b64_encode(mac, sizeof(mac), SG_B64_URL);
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    assert_int_equal(sg_buf_printf(&b, "%s%s", unsigned_token, m64), SG_OK);
    assert_int_equal(verify_text(b.ptr, k->key), SG_ERR_CRYPTO);
    sg_buf_free(&b);
    free(m64);
    free(unsigned_token);
    cJSON_Delete(jwk);
}

static void test_jws_sign_refuses_public_only_key(void **state)
{
    keys_t *k = *state;
    cJSON *jwk = sg_jwk_from_pkey(k->key, "k1");
    EVP_PKEY *pub = sg_pkey_from_jwk(jwk);
    assert_non_null(pub);
    cJSON *p = claims();
    assert_null(sg_jws_sign_rs256(p, pub, "k1"));
    cJSON_Delete(p);
    EVP_PKEY_free(pub);
    cJSON_Delete(jwk);
}

/* ---- JWK ---- */

static void test_jwk_from_pkey_describes_an_rs256_signing_key(void **state)
{
    keys_t *k = *state;
    cJSON *jwk = sg_jwk_from_pkey(k->key, "k1");
    assert_non_null(jwk);
    assert_string_equal(cJSON_GetObjectItem(jwk, "kty")->valuestring, "RSA");
    assert_string_equal(cJSON_GetObjectItem(jwk, "alg")->valuestring, "RS256");
    assert_string_equal(cJSON_GetObjectItem(jwk, "use")->valuestring, "sig");
    assert_string_equal(cJSON_GetObjectItem(jwk, "kid")->valuestring, "k1");
    assert_string_equal(cJSON_GetObjectItem(jwk, "e")->valuestring, "AQAB");
    const char *n = cJSON_GetObjectItem(jwk, "n")->valuestring;
    assert_int_equal(strlen(n), 342);           /* 256 bytes, base64url without padding */
    assert_null(cJSON_GetObjectItem(jwk, "d")); /* never the private part */
    assert_null(cJSON_GetObjectItem(jwk, "p"));
    cJSON_Delete(jwk);
    jwk = sg_jwk_from_pkey(k->key, NULL);
    assert_null(cJSON_GetObjectItem(jwk, "kid"));
    cJSON_Delete(jwk);
}

static void test_jwk_round_trip_verifies_the_same_signature(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    cJSON *jwk = sg_jwk_from_pkey(k->key, "k1");
    /* Through text, as a JWKS document arrives over the wire. */
    char *text = cJSON_PrintUnformatted(jwk);
    cJSON *parsed = cJSON_Parse(text);
    EVP_PKEY *pub = sg_pkey_from_jwk(parsed);
    assert_non_null(pub);
    assert_int_equal(verify_text(t, pub), SG_OK);
    assert_int_equal(EVP_PKEY_eq(pub, k->key), 1);
    EVP_PKEY_free(pub);
    cJSON_Delete(parsed);
    free(text);
    cJSON_Delete(jwk);
    free(t);
}

static void test_jwk_of_another_key_does_not_verify(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    cJSON *jwk = sg_jwk_from_pkey(k->other, "k2");
    EVP_PKEY *pub = sg_pkey_from_jwk(jwk);
    assert_non_null(pub);
    assert_int_equal(verify_text(t, pub), SG_ERR_CRYPTO);
    EVP_PKEY_free(pub);
    cJSON_Delete(jwk);
    free(t);
}

static void expect_jwk_rejected(const char *text)
{
    cJSON *jwk = cJSON_Parse(text);
    assert_non_null(jwk);
    EVP_PKEY *key = sg_pkey_from_jwk(jwk);
    if (key)
        print_error("JWK %.80s: expected no key\n", text);
    assert_null(key);
    cJSON_Delete(jwk);
}

static void test_jwk_rejects_non_rsa_and_incomplete_keys(void **state)
{
    keys_t *k = *state;
    cJSON *good = sg_jwk_from_pkey(k->key, "k1");
    const char *n = cJSON_GetObjectItem(good, "n")->valuestring;
    char buf[1024];

    snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"n\":\"%s\",\"e\":\"AQAB\"}", n);
    expect_jwk_rejected(buf);
    snprintf(buf, sizeof(buf), "{\"n\":\"%s\",\"e\":\"AQAB\"}", n);
    expect_jwk_rejected(buf);
    snprintf(buf, sizeof(buf), "{\"kty\":\"rsa\",\"n\":\"%s\",\"e\":\"AQAB\"}", n);
    expect_jwk_rejected(buf);
    snprintf(buf, sizeof(buf), "{\"kty\":\"RSA\",\"n\":\"%s\"}", n);
    expect_jwk_rejected(buf);
    expect_jwk_rejected("{\"kty\":\"RSA\",\"e\":\"AQAB\"}");
    snprintf(buf, sizeof(buf), "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":65537}", n);
    expect_jwk_rejected(buf);
    snprintf(buf, sizeof(buf), "{\"kty\":\"RSA\",\"n\":\"%s!\",\"e\":\"AQAB\"}", n);
    expect_jwk_rejected(buf);
    expect_jwk_rejected("{\"kty\":\"RSA\",\"n\":\"\",\"e\":\"AQAB\"}");
    expect_jwk_rejected("[1,2]");
    cJSON_Delete(good);
}

static void test_jwk_rejects_keys_under_2048_bits(void **state)
{
    keys_t *k = *state;
    cJSON *jwk = sg_jwk_from_pkey(k->small, "weak");
    assert_non_null(jwk);
    assert_null(sg_pkey_from_jwk(jwk));
    cJSON_Delete(jwk);
}

/* The JWK of key with "e" (or, when e is NULL, the last byte of n) replaced. */
static cJSON *jwk_with(EVP_PKEY *key, const char *e, int even_n)
{
    cJSON *jwk = sg_jwk_from_pkey(key, "k1");
    assert_non_null(jwk);
    if (e)
        cJSON_ReplaceItemInObject(jwk, "e", cJSON_CreateString(e));
    if (even_n) {
        unsigned char *raw;
        size_t len;
        const char *n = cJSON_GetObjectItem(jwk, "n")->valuestring;
        assert_int_equal(sg_b64_decode(n, strlen(n), &raw, &len), SG_OK);
        raw[len - 1] &= 0xfe;
        char *n2 = sg_b64_encode(raw, len, SG_B64_URL);
        cJSON_ReplaceItemInObject(jwk, "n", cJSON_CreateString(n2));
        free(n2);
        free(raw);
    }
    return jwk;
}

static void test_jwk_rejects_degenerate_rsa_parameters(void **state)
{
    /*
     * "NULL when it is not a usable RSA key". With e = 1 a signature is just the padded
     * digest, so anyone could forge tokens that verify; e = 0, an even e or an even n is not
     * an RSA key at all.
     */
    keys_t *k = *state;
    const struct {
        const char *e;
        int even_n;
        const char *what;
    } bad[] = {
        {"AA", 0, "e = 0"},       {"AQ", 0, "e = 1"},  {"Ag", 0, "e = 2"},
        {"AQAA", 0, "e = 65536"}, {NULL, 1, "even n"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *jwk = jwk_with(k->key, bad[i].e, bad[i].even_n);
        EVP_PKEY *key = sg_pkey_from_jwk(jwk);
        if (key)
            print_error("JWK with %s: expected no key, got one\n", bad[i].what);
        EVP_PKEY_free(key);
        cJSON_Delete(jwk);
        assert_null(key);
    }
    /* The control: the same modulus with e = 3 or 65537 (with a leading zero byte) is fine. */
    cJSON *jwk = jwk_with(k->key, "Aw", 0);
    EVP_PKEY *key = sg_pkey_from_jwk(jwk);
    assert_non_null(key);
    EVP_PKEY_free(key);
    cJSON_Delete(jwk);
    jwk = jwk_with(k->key, "AAEAAQ", 0);
    key = sg_pkey_from_jwk(jwk);
    assert_non_null(key);
    EVP_PKEY_free(key);
    cJSON_Delete(jwk);
}

/* ---- strict parsing ---- */

static void test_jws_parse_rejects_two_or_four_parts(void **state)
{
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    assert_int_equal(sg_buf_printf(&b, "%.*s", (int)(strrchr(t, '.') - t), t), SG_OK);
    expect_parse_rejected(b.ptr, SG_ERR_PARSE); /* header.payload */
    sg_buf_reset(&b);
    assert_int_equal(sg_buf_printf(&b, "%s.%s", t, "AAAA"), SG_OK);
    expect_parse_rejected(b.ptr, SG_ERR_PARSE); /* four parts */
    sg_buf_reset(&b);
    assert_int_equal(sg_buf_printf(&b, "%s.", t), SG_OK);
    expect_parse_rejected(b.ptr, SG_ERR_PARSE); /* four parts, the last empty */
    sg_buf_free(&b);
    expect_parse_rejected("abc", SG_ERR_PARSE);
    free(t);
}

static void test_jws_parse_rejects_empty_header_or_payload(void **state)
{
    char *p = b64url(payload_json), *h = b64url("{\"alg\":\"RS256\"}");
    char buf[512];
    snprintf(buf, sizeof(buf), ".%s.AAAA", p);
    expect_parse_rejected(buf, SG_ERR_PARSE);
    snprintf(buf, sizeof(buf), "%s..AAAA", h);
    expect_parse_rejected(buf, SG_ERR_PARSE);
    expect_parse_rejected("..", SG_ERR_PARSE);
    expect_parse_rejected("", SG_ERR_PARSE);
    expect_parse_rejected(NULL, SG_ERR_PARSE);
    free(p);
    free(h);
}

static void test_jws_parse_rejects_empty_signature(void **state)
{
    /* No RS256 token has an empty signature: "three base64url parts" means three non-empty. */
    char *t = compact("{\"alg\":\"RS256\"}", payload_json, "");
    expect_parse_rejected(t, SG_ERR_PARSE);
    free(t);
}

static void test_jws_parse_rejects_non_object_json(void **state)
{
    const char *not_objects[] = {"[]", "\"RS256\"", "1", "null", "true", "[{\"alg\":\"RS256\"}]"};
    for (size_t i = 0; i < sizeof(not_objects) / sizeof(not_objects[0]); i++) {
        char *t = compact(not_objects[i], payload_json, "AAAA");
        expect_parse_rejected(t, SG_ERR_PARSE);
        free(t);
        t = compact("{\"alg\":\"RS256\"}", not_objects[i], "AAAA");
        expect_parse_rejected(t, SG_ERR_PARSE);
        free(t);
    }
}

static void test_jws_parse_rejects_malformed_json(void **state)
{
    char *t = compact("{\"alg\":\"RS256\"", payload_json, "AAAA");
    expect_parse_rejected(t, SG_ERR_PARSE);
    free(t);
    t = compact("{\"alg\":\"RS256\"}", "{sub:1}", "AAAA");
    expect_parse_rejected(t, SG_ERR_PARSE);
    free(t);
}

static void test_jws_parse_rejects_trailing_bytes_after_json(void **state)
{
    /* What is signed must be exactly one JSON object, or two parsers may read two things. */
    char *t = compact("{\"alg\":\"RS256\"}", "{\"sub\":\"a\"}{\"sub\":\"b\"}", "AAAA");
    expect_parse_rejected(t, SG_ERR_PARSE);
    free(t);
    t = compact("{\"alg\":\"RS256\"}garbage", payload_json, "AAAA");
    expect_parse_rejected(t, SG_ERR_PARSE);
    free(t);
}

static void test_jws_parse_requires_string_alg(void **state)
{
    const char *headers[] = {"{}", "{\"alg\":256}", "{\"alg\":null}", "{\"ALG\":\"RS256\"}"};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char *t = compact(headers[i], payload_json, "AAAA");
        expect_parse_rejected(t, SG_ERR_PARSE);
        free(t);
    }
}

static void test_jws_parse_rejects_nul_inside_json(void **state)
{
    const char raw[] = "{\"alg\":\"RS256\"}\0{\"alg\":\"none\"}";
    char *h = sg_b64_encode(raw, sizeof(raw) - 1, SG_B64_URL);
    char *p = b64url(payload_json);
    char buf[512];
    snprintf(buf, sizeof(buf), "%s.%s.AAAA", h, p);
    expect_parse_rejected(buf, SG_ERR_PARSE);
    free(h);
    free(p);
}

static void test_jws_parse_rejects_characters_outside_base64url(void **state)
{
    char *h = b64url("{\"alg\":\"RS256\"}"), *p = b64url(payload_json);
    char buf[512];
    snprintf(buf, sizeof(buf), "%s!.%s.AAAA", h, p);
    expect_parse_rejected(buf, SG_ERR_PARSE);
    snprintf(buf, sizeof(buf), "%s.%s.AA AA", h, p);
    expect_parse_rejected(buf, SG_ERR_PARSE);
    free(h);
    free(p);
}

static void test_jws_parse_rejects_other_encodings_of_the_signature(void **state)
{
    /*
     * RFC 7515 allows one encoding only: base64url, no padding. Accepting '=' padding, the
     * '+' '/' alphabet or non-zero spare bits lets one signed token be written many ways.
     */
    keys_t *k = *state;
    char *t = sign_claims(k->key, "k1");
    assert_int_equal(verify_text(t, k->key), SG_OK);
    size_t len = strlen(t);
    sg_buf_t b;
    sg_buf_init(&b, 65536);

    assert_int_equal(sg_buf_printf(&b, "%s==", t), SG_OK);
    expect_parse_rejected(b.ptr, SG_ERR_PARSE);

    /* A signature part that has a '-' or '_' in it, rewritten with '+' or '/'. */
    sg_buf_reset(&b);
    assert_int_equal(sg_buf_adds(&b, t), SG_OK);
    char *sig = strrchr(b.ptr, '.') + 1;
    int changed = 0;
    for (char *c = sig; *c; c++) {
        if (*c == '-' || *c == '_') {
            *c = *c == '-' ? '+' : '/';
            changed = 1;
        }
    }
    if (changed)
        expect_parse_rejected(b.ptr, SG_ERR_PARSE);

    /* 256 bytes end in a 2-character group whose last character carries 4 spare bits. */
    sg_buf_reset(&b);
    assert_int_equal(sg_buf_adds(&b, t), SG_OK);
    static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *last = b.ptr + len - 1;
    int v = (int)(strchr(url, *last) - url);
    *last = url[v ^ 1];
    expect_parse_rejected(b.ptr, SG_ERR_PARSE);

    sg_buf_free(&b);
    free(t);
}

static void test_jws_parse_rejects_oversize_before_decoding(void **state)
{
    /* Junk of SG_JWS_MAX_LEN + 1 bytes is "too big", not "malformed": length comes first. */
    char *junk = malloc(SG_JWS_MAX_LEN + 2);
    memset(junk, '!', SG_JWS_MAX_LEN + 1);
    junk[SG_JWS_MAX_LEN + 1] = '\0';
    expect_parse_rejected(junk, SG_ERR_TOO_BIG);
    free(junk);
}

static void test_jws_parse_accepts_token_of_exactly_max_length(void **state)
{
    keys_t *k = *state;
    /* Base64 never has length 4k+1, so pick a kid that lets the total land on the limit. */
    static const char *kids[] = {"k1", "k12", "k123"};
    const char *kid = NULL;
    size_t n = 0;
    for (size_t i = 0; i < 3 && !kid; i++) {
        char *probe = sign_claims(k->key, kids[i]);
        size_t fixed = (size_t)(strchr(probe, '.') - probe) + 2 + 342; /* h64, dots, sig */
        free(probe);
        /* Payload {"x":"aaa..."}: n filler bytes make 8 + n bytes of JSON. */
        for (n = 0; fixed + ((8 + n) * 4 + 2) / 3 < SG_JWS_MAX_LEN; n++)
            ;
        if (fixed + ((8 + n) * 4 + 2) / 3 == SG_JWS_MAX_LEN)
            kid = kids[i];
    }
    assert_non_null(kid);
    char *filler = malloc(n + 1);
    memset(filler, 'a', n);
    filler[n] = '\0';
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "x", filler);
    char *t = sg_jws_sign_rs256(p, k->key, kid);
    assert_non_null(t);
    assert_int_equal(strlen(t), SG_JWS_MAX_LEN);
    assert_int_equal(verify_text(t, k->key), SG_OK);
    cJSON_Delete(p);
    free(filler);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jws_signed_token_verifies_with_signing_key),
        cmocka_unit_test(test_jws_parse_exposes_header_payload_and_signature),
        cmocka_unit_test(test_jws_signed_without_kid_has_no_kid),
        cmocka_unit_test(test_jws_tampered_payload_fails),
        cmocka_unit_test(test_jws_tampered_signature_fails),
        cmocka_unit_test(test_jws_truncated_signature_fails),
        cmocka_unit_test(test_jws_verify_fails_with_another_key),
        cmocka_unit_test(test_jws_verify_refuses_missing_or_non_rsa_key),
        cmocka_unit_test(test_jws_header_can_be_rs256_signed_by_hand),
        cmocka_unit_test(test_jws_verify_rejects_alg_none_even_with_valid_signature),
        cmocka_unit_test(test_jws_verify_rejects_unsigned_alg_none_token),
        cmocka_unit_test(test_jws_verify_rejects_hs256_and_other_algs),
        cmocka_unit_test(test_jws_verify_rejects_hs256_keyed_with_public_key),
        cmocka_unit_test(test_jws_sign_refuses_public_only_key),
        cmocka_unit_test(test_jwk_from_pkey_describes_an_rs256_signing_key),
        cmocka_unit_test(test_jwk_round_trip_verifies_the_same_signature),
        cmocka_unit_test(test_jwk_of_another_key_does_not_verify),
        cmocka_unit_test(test_jwk_rejects_non_rsa_and_incomplete_keys),
        cmocka_unit_test(test_jwk_rejects_keys_under_2048_bits),
        cmocka_unit_test(test_jwk_rejects_degenerate_rsa_parameters),
        cmocka_unit_test(test_jws_parse_rejects_two_or_four_parts),
        cmocka_unit_test(test_jws_parse_rejects_empty_header_or_payload),
        cmocka_unit_test(test_jws_parse_rejects_empty_signature),
        cmocka_unit_test(test_jws_parse_rejects_non_object_json),
        cmocka_unit_test(test_jws_parse_rejects_malformed_json),
        cmocka_unit_test(test_jws_parse_rejects_trailing_bytes_after_json),
        cmocka_unit_test(test_jws_parse_requires_string_alg),
        cmocka_unit_test(test_jws_parse_rejects_nul_inside_json),
        cmocka_unit_test(test_jws_parse_rejects_characters_outside_base64url),
        cmocka_unit_test(test_jws_parse_rejects_other_encodings_of_the_signature),
        cmocka_unit_test(test_jws_parse_rejects_oversize_before_decoding),
        cmocka_unit_test(test_jws_parse_accepts_token_of_exactly_max_length),
    };
    return cmocka_run_group_tests_name("jose", tests, group_setup, group_teardown);
}
