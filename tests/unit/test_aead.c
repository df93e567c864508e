/* crypto: AES-256-GCM for the vault (sg_aead_seal/open) and the key id stored beside records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "scopegate/crypto.h"

static const char token[] = "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJrmSz1ud2X1uz4uWFXeLmO1xsR"
                            "4tqGtsnNTmJNo1FgmTM8U3ea";

static void key_of(unsigned char key[SG_AEAD_KEY_LEN], unsigned char fill)
{
    for (size_t i = 0; i < SG_AEAD_KEY_LEN; i++)
        key[i] = (unsigned char)(fill + i);
}

static void seal(const unsigned char *key, const void *plain, size_t len, const char *aad,
                 unsigned char **ct, size_t *ctlen)
{
    sg_rc rc = sg_aead_seal(key, plain, len, aad, aad ? strlen(aad) : 0, ct, ctlen);
    if (rc)
        print_error("sealing %zu bytes: expected ok, got %s\n", len, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
    assert_non_null(*ct);
    assert_int_equal(*ctlen, len + SG_AEAD_OVERHEAD);
}

/* Opening must fail with SG_ERR_CRYPTO and hand back nothing. */
static void expect_open_refused(const unsigned char *key, const unsigned char *ct, size_t ctlen,
                                const char *aad, const char *what)
{
    unsigned char *out = (unsigned char *)"sentinel";
    size_t outlen = 99;
    sg_rc rc = sg_aead_open(key, ct, ctlen, aad, aad ? strlen(aad) : 0, &out, &outlen);
    if (rc != SG_ERR_CRYPTO)
        print_error("%s: expected crypto, got %s\n", what, sg_rc_str(rc));
    assert_int_equal(rc, SG_ERR_CRYPTO);
    assert_null(out);
    assert_int_equal(outlen, 0);
}

static void test_seal_then_open_returns_the_plaintext(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 1);
    unsigned char *ct = NULL, *pt = NULL;
    size_t ctlen = 0, ptlen = 0;
    seal(key, token, strlen(token), "005000000000001AAA\napi", &ct, &ctlen);
    assert_null(memmem(ct, ctlen, token, 16)); /* not the token in clear, not even a prefix */
    assert_int_equal(sg_aead_open(key, ct, ctlen, "005000000000001AAA\napi", 22, &pt, &ptlen),
                     SG_OK);
    assert_int_equal(ptlen, strlen(token));
    assert_memory_equal(pt, token, ptlen);
    assert_int_equal(pt[ptlen], '\0'); /* NUL-terminated, as the header promises */
    OPENSSL_cleanse(pt, ptlen);
    free(pt);
    free(ct);
}

static void test_seal_without_aad_opens_without_aad(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 2);
    unsigned char *ct = NULL, *pt = NULL;
    size_t ctlen = 0, ptlen = 0;
    seal(key, "x", 1, NULL, &ct, &ctlen);
    assert_int_equal(sg_aead_open(key, ct, ctlen, NULL, 0, &pt, &ptlen), SG_OK);
    assert_int_equal(ptlen, 1);
    assert_int_equal(pt[0], 'x');
    free(pt);
    /* No aad and empty aad are the same thing to GCM. */
    assert_int_equal(sg_aead_open(key, ct, ctlen, "", 0, &pt, &ptlen), SG_OK);
    free(pt);
    expect_open_refused(key, ct, ctlen, "a", "aad added at open");
    free(ct);
}

static void test_every_tampered_byte_is_refused(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 3);
    unsigned char *ct = NULL;
    size_t ctlen = 0;
    seal(key, token, strlen(token), "aad", &ct, &ctlen);
    /* Nonce (0..11), ciphertext, tag (last 16): each byte, each single-bit flip of it. */
    for (size_t i = 0; i < ctlen; i++) {
        for (int bit = 0; bit < 8; bit++) {
            ct[i] ^= (unsigned char)(1u << bit);
            char what[64];
            snprintf(what, sizeof(what), "byte %zu bit %d flipped (of %zu)", i, bit, ctlen);
            expect_open_refused(key, ct, ctlen, "aad", what);
            ct[i] ^= (unsigned char)(1u << bit);
        }
    }
    /* Truncated, extended, and shorter than nonce + tag. */
    expect_open_refused(key, ct, ctlen - 1, "aad", "last byte cut");
    unsigned char *longer = malloc(ctlen + 1);
    assert_non_null(longer);
    memcpy(longer, ct, ctlen);
    longer[ctlen] = 0;
    expect_open_refused(key, longer, ctlen + 1, "aad", "a byte appended");
    free(longer);
    expect_open_refused(key, ct, SG_AEAD_OVERHEAD - 1, "aad", "shorter than nonce and tag");
    expect_open_refused(key, ct, 0, "aad", "empty input");

    unsigned char *pt = NULL;
    size_t ptlen = 0;
    assert_int_equal(sg_aead_open(key, ct, ctlen, "aad", 3, &pt, &ptlen), SG_OK); /* restored */
    free(pt);
    free(ct);
}

static void test_wrong_key_is_refused(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN], other[SG_AEAD_KEY_LEN];
    key_of(key, 4);
    memcpy(other, key, sizeof(other));
    other[SG_AEAD_KEY_LEN - 1] ^= 1;
    unsigned char *ct = NULL;
    size_t ctlen = 0;
    seal(key, token, strlen(token), "aad", &ct, &ctlen);
    expect_open_refused(other, ct, ctlen, "aad", "key with one bit changed");
    free(ct);
}

/* AAD binds a ciphertext to its grant: another person's or app's record does not open. */
static void test_wrong_aad_is_refused(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 5);
    unsigned char *ct = NULL;
    size_t ctlen = 0;
    seal(key, token, strlen(token), "005000000000001AAA\napi", &ct, &ctlen);
    expect_open_refused(key, ct, ctlen, "005000000000002AAA\napi", "another user's aad");
    expect_open_refused(key, ct, ctlen, "005000000000001AAA\napi2", "another app's aad");
    expect_open_refused(key, ct, ctlen, "005000000000001AAA\nap", "aad cut short");
    expect_open_refused(key, ct, ctlen, NULL, "aad left out");
    free(ct);
}

static void test_empty_plaintext_round_trips(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 6);
    unsigned char *ct = NULL, *pt = NULL;
    size_t ctlen = 0, ptlen = 99;
    seal(key, NULL, 0, "aad", &ct, &ctlen);
    assert_int_equal(ctlen, SG_AEAD_OVERHEAD);
    assert_int_equal(sg_aead_open(key, ct, ctlen, "aad", 3, &pt, &ptlen), SG_OK);
    assert_non_null(pt);
    assert_int_equal(ptlen, 0);
    assert_int_equal(pt[0], '\0');
    free(pt);
    ct[SG_AEAD_OVERHEAD - 1] ^= 0x80; /* the tag still guards an empty message */
    expect_open_refused(key, ct, ctlen, "aad", "empty plaintext, tag changed");
    free(ct);
}

static void test_two_seals_of_the_same_text_differ(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 7);
    unsigned char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    seal(key, token, strlen(token), "aad", &a, &alen);
    seal(key, token, strlen(token), "aad", &b, &blen);
    assert_int_equal(alen, blen);
    if (memcmp(a, b, 12) == 0)
        print_error("expected fresh nonces, got the same 12 bytes twice\n");
    assert_memory_not_equal(a, b, 12);                                /* nonce */
    assert_memory_not_equal(a + 12, b + 12, alen - SG_AEAD_OVERHEAD); /* ciphertext */
    assert_memory_not_equal(a + alen - 16, b + blen - 16, 16);        /* tag */
    free(a);
    free(b);
}

/* Interoperates with plain EVP: nonce in front, tag behind, nothing else in the format. */
static void test_format_is_nonce_ciphertext_tag(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 8);
    unsigned char *ct = NULL;
    size_t ctlen = 0;
    seal(key, "hello", 5, "ad", &ct, &ctlen);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    assert_non_null(ctx);
    unsigned char out[16];
    int n = 0, m = 0;
    assert_int_equal(EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, ct), 1);
    assert_int_equal(EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)"ad", 2), 1);
    assert_int_equal(EVP_DecryptUpdate(ctx, out, &n, ct + 12, 5), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, ct + 12 + 5), 1);
    assert_int_equal(EVP_DecryptFinal_ex(ctx, out + n, &m), 1);
    EVP_CIPHER_CTX_free(ctx);
    assert_int_equal(n + m, 5);
    assert_memory_equal(out, "hello", 5);
    free(ct);
}

static void test_bad_arguments_are_refused(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN];
    key_of(key, 9);
    unsigned char *out = (unsigned char *)"sentinel";
    size_t outlen = 99;
    assert_int_equal(sg_aead_seal(key, NULL, 5, NULL, 0, &out, &outlen), SG_ERR_PARSE);
    assert_null(out);
    assert_int_equal(sg_aead_seal(key, "x", 1, NULL, 3, &out, &outlen), SG_ERR_PARSE);
    assert_int_equal(sg_aead_seal(NULL, "x", 1, NULL, 0, &out, &outlen), SG_ERR_PARSE);
    assert_int_equal(sg_aead_seal(key, "x", 1, NULL, 0, NULL, &outlen), SG_ERR_PARSE);
    assert_int_equal(sg_aead_open(key, NULL, 40, NULL, 0, &out, &outlen), SG_ERR_PARSE);
    assert_null(out);
}

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static void test_key_id_is_16_hex_stable_and_per_key(void **state)
{
    (void)state;
    unsigned char key[SG_AEAD_KEY_LEN], other[SG_AEAD_KEY_LEN];
    key_of(key, 10);
    key_of(other, 11);
    char a[17], b[17], c[17];
    memset(a, 'Z', sizeof(a));
    sg_aead_key_id(key, a);
    sg_aead_key_id(key, b);
    sg_aead_key_id(other, c);
    assert_int_equal(strlen(a), 16);
    if (!is_lower_hex(a, 16))
        print_error("expected 16 lower-case hex digits, got \"%s\"\n", a);
    assert_true(is_lower_hex(a, 16));
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);

    /* The definition: SHA-256("scopegate-vault" || key), first 8 bytes in hex. */
    unsigned char buf[15 + SG_AEAD_KEY_LEN], md[SG_SHA256_LEN];
    memcpy(buf, "scopegate-vault", 15);
    memcpy(buf + 15, key, SG_AEAD_KEY_LEN);
    sg_sha256(buf, sizeof(buf), md);
    char want[17];
    for (size_t i = 0; i < 8; i++)
        snprintf(want + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(a, want);

    /* Not a plain hash of the key: the label separates it from any other use of the key. */
    char *plain = sg_sha256_hex(key, SG_AEAD_KEY_LEN);
    assert_non_null(plain);
    assert_memory_not_equal(plain, a, 16);
    free(plain);

    /* A known answer (Python: sha256(b"scopegate-vault" + bytes(32)).hexdigest()[:16]), so
     * ids written by one build are read by the next. */
    unsigned char zero[SG_AEAD_KEY_LEN] = {0};
    char z[17];
    sg_aead_key_id(zero, z);
    assert_string_equal(z, "c74d75e9ea009d69");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_then_open_returns_the_plaintext),
        cmocka_unit_test(test_seal_without_aad_opens_without_aad),
        cmocka_unit_test(test_every_tampered_byte_is_refused),
        cmocka_unit_test(test_wrong_key_is_refused),
        cmocka_unit_test(test_wrong_aad_is_refused),
        cmocka_unit_test(test_empty_plaintext_round_trips),
        cmocka_unit_test(test_two_seals_of_the_same_text_differ),
        cmocka_unit_test(test_format_is_nonce_ciphertext_tag),
        cmocka_unit_test(test_bad_arguments_are_refused),
        cmocka_unit_test(test_key_id_is_16_hex_stable_and_per_key),
    };
    return cmocka_run_group_tests_name("aead", tests, NULL, NULL);
}
