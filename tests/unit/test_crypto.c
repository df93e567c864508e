/* crypto: base64 (RFC 4648), SHA-256, HMAC-SHA256 (RFC 4231), constant-time compare, tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scopegate/crypto.h"

static char *hex(const unsigned char *p, size_t n)
{
    static char out[2 * 64 + 1];
    static const char digits[] = "0123456789abcdef";
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

/* Decodes text that must be valid and checks the bytes. */
static void expect_decode(const char *text, const void *want, size_t wantlen)
{
    unsigned char *out = NULL;
    size_t outlen = 99;
    sg_rc rc = sg_b64_decode(text, strlen(text), &out, &outlen);
    if (rc != SG_OK)
        print_error("decoding \"%s\": got %s\n", text, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
    assert_int_equal(outlen, wantlen);
    assert_memory_equal(out, want, wantlen);
    assert_int_equal(out[outlen], '\0');
    free(out);
}

static void expect_decode_rejected(const char *text, size_t len)
{
    unsigned char *out = (unsigned char *)"sentinel";
    size_t outlen = 99;
    sg_rc rc = sg_b64_decode(text, len, &out, &outlen);
    if (rc == SG_OK)
        print_error("decoding \"%.*s\" should fail but gave %zu bytes\n", (int)len, text, outlen);
    assert_int_equal(rc, SG_ERR_PARSE);
    assert_null(out);
    assert_int_equal(outlen, 0);
}

/* RFC 4648 section 10. */
static const struct {
    const char *plain, *std, *url;
} rfc4648[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

static void test_b64_encodes_rfc4648_vectors_in_both_alphabets(void **state)
{
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        const char *p = rfc4648[i].plain;
        char *s = sg_b64_encode(p, strlen(p), SG_B64_STD);
        char *u = sg_b64_encode(p, strlen(p), SG_B64_URL);
        assert_string_equal(s, rfc4648[i].std);
        assert_string_equal(u, rfc4648[i].url);
        free(s);
        free(u);
    }
}

static void test_b64_decodes_rfc4648_vectors_with_and_without_padding(void **state)
{
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        const char *p = rfc4648[i].plain;
        expect_decode(rfc4648[i].std, p, strlen(p));
        expect_decode(rfc4648[i].url, p, strlen(p));
    }
}

static void test_b64_alphabets_differ_only_in_62_and_63(void **state)
{
    const unsigned char raw[] = {0xfb, 0xff};
    char *s = sg_b64_encode(raw, sizeof(raw), SG_B64_STD);
    char *u = sg_b64_encode(raw, sizeof(raw), SG_B64_URL);
    assert_string_equal(s, "+/8=");
    assert_string_equal(u, "-_8");
    expect_decode(s, raw, sizeof(raw));
    expect_decode(u, raw, sizeof(raw));
    free(s);
    free(u);
}

static void test_b64_round_trips_every_byte_value_at_every_length(void **state)
{
    unsigned char raw[300];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof(raw); len++) {
        for (int alpha = SG_B64_STD; alpha <= SG_B64_URL; alpha++) {
            char *t = sg_b64_encode(raw, len, (sg_b64_alphabet)alpha);
            assert_non_null(t);
            size_t want = alpha == SG_B64_STD ? (len + 2) / 3 * 4 : (len * 4 + 2) / 3;
            assert_int_equal(strlen(t), want);
            expect_decode(t, raw, len);
            free(t);
        }
    }
}

static void test_b64_url_output_has_no_padding_or_std_characters(void **state)
{
    unsigned char raw[256];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)i;
    char *u = sg_b64_encode(raw, sizeof(raw), SG_B64_URL);
    assert_int_equal(strspn(u, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     strlen(u));
    free(u);
}

static void test_b64_rejects_characters_outside_both_alphabets(void **state)
{
    expect_decode_rejected("Zm9v!", 5);
    expect_decode_rejected("Zm 9v", 5);
    expect_decode_rejected("Zm9v\n", 5);
    expect_decode_rejected("Zm9.", 4);
    expect_decode_rejected("Zm\0v", 4);
    expect_decode_rejected("Zm9v\xc3\xa9", 6);
}

static void test_b64_rejects_padding_inside_the_text(void **state)
{
    expect_decode_rejected("Zg==Zg==", 8);
    expect_decode_rejected("Z=m9", 4);
}

static void test_b64_rejects_impossible_length(void **state)
{
    /* One leftover character carries only 6 bits: no byte can end there. */
    expect_decode_rejected("Zm9vY", 5);
    expect_decode_rejected("Z", 1);
    expect_decode_rejected("Z===", 4);
}

static void test_b64_decode_honours_the_length_argument(void **state)
{
    unsigned char *out;
    size_t outlen;
    assert_int_equal(sg_b64_decode("Zm9vYmFy!!!", 8, &out, &outlen), SG_OK);
    assert_int_equal(outlen, 6);
    assert_memory_equal(out, "foobar", 6);
    free(out);
}

/* FIPS 180-2 examples. */
static void test_sha256_matches_known_digests(void **state)
{
    char *h = sg_sha256_hex("abc", 3);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    free(h);
    h = sg_sha256_hex("", 0);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    free(h);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    unsigned char md[SG_SHA256_LEN];
    sg_sha256(two, strlen(two), md);
    assert_string_equal(hex(md, sizeof(md)),
                        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void fill(unsigned char *p, size_t n, unsigned char v)
{
    memset(p, v, n);
}

/* RFC 4231 section 4: test cases 1 to 7 (case 5 is truncated to 128 bits). */
static void test_hmac_sha256_matches_rfc4231_vectors(void **state)
{
    unsigned char key[131], data[50], md[SG_SHA256_LEN];

    fill(key, 20, 0x0b);
    assert_int_equal(sg_hmac_sha256(key, 20, "Hi There", 8, md), SG_OK);
    assert_string_equal(hex(md, 32),
                        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    const char *q = "what do ya want for nothing?";
    assert_int_equal(sg_hmac_sha256("Jefe", 4, q, strlen(q), md), SG_OK);
    assert_string_equal(hex(md, 32),
                        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    fill(key, 20, 0xaa);
    fill(data, 50, 0xdd);
    assert_int_equal(sg_hmac_sha256(key, 20, data, 50, md), SG_OK);
    assert_string_equal(hex(md, 32),
                        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

    for (int i = 0; i < 25; i++)
        key[i] = (unsigned char)(i + 1);
    fill(data, 50, 0xcd);
    assert_int_equal(sg_hmac_sha256(key, 25, data, 50, md), SG_OK);
    assert_string_equal(hex(md, 32),
                        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

    fill(key, 20, 0x0c);
    assert_int_equal(sg_hmac_sha256(key, 20, "Test With Truncation", 20, md), SG_OK);
    assert_string_equal(hex(md, 16), "a3b6167473100ee06e0c796c2955552b");

    fill(key, 131, 0xaa);
    const char *big = "Test Using Larger Than Block-Size Key - Hash Key First";
    assert_int_equal(sg_hmac_sha256(key, 131, big, strlen(big), md), SG_OK);
    assert_string_equal(hex(md, 32),
                        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

    const char *both = "This is a test using a larger than block-size key and a larger than "
                       "block-size data. The key needs to be hashed before being used by the "
                       "HMAC algorithm.";
    assert_int_equal(sg_hmac_sha256(key, 131, both, strlen(both), md), SG_OK);
    assert_string_equal(hex(md, 32),
                        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void test_hmac_sha256_accepts_empty_message(void **state)
{
    unsigned char md[SG_SHA256_LEN];
    /* HMAC-SHA256(key="key", "") */
    assert_int_equal(sg_hmac_sha256("key", 3, "", 0, md), SG_OK);
    assert_string_equal(hex(md, 32),
                        "5d5d139563c95b5967b9bd9a8c9b233a9dedb45072794cd232dc1b74832607d0");
}

static void test_ct_equal_compares_content_and_length(void **state)
{
    assert_true(sg_ct_equal("abc", 3, "abc", 3));
    assert_false(sg_ct_equal("abc", 3, "abd", 3));
    assert_false(sg_ct_equal("abc", 3, "abcd", 4));
    assert_false(sg_ct_equal("abc", 3, "ab", 2));
    assert_true(sg_ct_equal("a\0b", 3, "a\0b", 3));
    assert_false(sg_ct_equal("a\0b", 3, "a\0c", 3));
    assert_true(sg_ct_equal("", 0, "", 0));
}

static void test_ct_equal_null_never_equals_anything(void **state)
{
    assert_false(sg_ct_equal(NULL, 0, NULL, 0));
    assert_false(sg_ct_equal(NULL, 0, "", 0));
    assert_false(sg_ct_equal("", 0, NULL, 0));
    assert_false(sg_ct_streq(NULL, NULL));
    assert_false(sg_ct_streq(NULL, ""));
    assert_false(sg_ct_streq("", NULL));
}

static void test_ct_streq_compares_whole_strings(void **state)
{
    assert_true(sg_ct_streq("state-123", "state-123"));
    assert_true(sg_ct_streq("", ""));
    assert_false(sg_ct_streq("state-123", "state-12"));
    assert_false(sg_ct_streq("state-12", "state-123"));
    assert_false(sg_ct_streq("state-123", "State-123"));
}

static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void test_random_token_length_follows_entropy(void **state)
{
    const size_t sizes[] = {1, 2, 3, 16, 32, 33, 64, 256};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *t = sg_random_token(sizes[i]);
        assert_non_null(t);
        assert_int_equal(strlen(t), (sizes[i] * 4 + 2) / 3);
        assert_int_equal(strspn(t, url_alphabet), strlen(t));
        unsigned char *raw;
        size_t rawlen;
        assert_int_equal(sg_b64_decode(t, strlen(t), &raw, &rawlen), SG_OK);
        assert_int_equal(rawlen, sizes[i]);
        free(raw);
        free(t);
    }
}

static void test_random_token_refuses_zero_and_oversize(void **state)
{
    assert_null(sg_random_token(0));
    assert_null(sg_random_token(257));
}

static void test_random_tokens_differ(void **state)
{
    char *a = sg_random_token(32), *b = sg_random_token(32);
    assert_string_not_equal(a, b);
    free(a);
    free(b);
}

static void test_random_string_uses_only_the_alphabet(void **state)
{
    char *s = sg_random_string("abc", 1000);
    assert_non_null(s);
    assert_int_equal(strlen(s), 1000);
    assert_int_equal(strspn(s, "abc"), 1000);
    /* With 1000 draws every letter shows up (the chance it does not is about 3 * (2/3)^1000). */
    assert_non_null(strchr(s, 'a'));
    assert_non_null(strchr(s, 'b'));
    assert_non_null(strchr(s, 'c'));
    free(s);
    s = sg_random_string("x", 0);
    assert_string_equal(s, "");
    free(s);
    assert_null(sg_random_string("", 10));
    assert_null(sg_random_string("ab", 1024));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_encodes_rfc4648_vectors_in_both_alphabets),
        cmocka_unit_test(test_b64_decodes_rfc4648_vectors_with_and_without_padding),
        cmocka_unit_test(test_b64_alphabets_differ_only_in_62_and_63),
        cmocka_unit_test(test_b64_round_trips_every_byte_value_at_every_length),
        cmocka_unit_test(test_b64_url_output_has_no_padding_or_std_characters),
        cmocka_unit_test(test_b64_rejects_characters_outside_both_alphabets),
        cmocka_unit_test(test_b64_rejects_padding_inside_the_text),
        cmocka_unit_test(test_b64_rejects_impossible_length),
        cmocka_unit_test(test_b64_decode_honours_the_length_argument),
        cmocka_unit_test(test_sha256_matches_known_digests),
        cmocka_unit_test(test_hmac_sha256_matches_rfc4231_vectors),
        cmocka_unit_test(test_hmac_sha256_accepts_empty_message),
        cmocka_unit_test(test_ct_equal_compares_content_and_length),
        cmocka_unit_test(test_ct_equal_null_never_equals_anything),
        cmocka_unit_test(test_ct_streq_compares_whole_strings),
        cmocka_unit_test(test_random_token_length_follows_entropy),
        cmocka_unit_test(test_random_token_refuses_zero_and_oversize),
        cmocka_unit_test(test_random_tokens_differ),
        cmocka_unit_test(test_random_string_uses_only_the_alphabet),
    };
    return cmocka_run_group_tests_name("crypto", tests, NULL, NULL);
}
