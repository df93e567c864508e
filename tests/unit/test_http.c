/* http helpers: form parsing, percent-encoding, cookies, Basic credentials, Content-Type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/http.h"

static sg_rc parse(const char *s, sg_form_t *form)
{
    return sg_form_parse(s, strlen(s), form);
}

static void expect_form_rejected(const char *s, size_t len, sg_rc want)
{
    sg_form_t form;
    sg_rc rc = sg_form_parse(s, len, &form);
    if (rc != want)
        print_error("form \"%.*s\": expected %s, got %s\n", (int)len, s, sg_rc_str(want),
                    sg_rc_str(rc));
    assert_int_equal(rc, want);
    assert_int_equal(form.n, 0); /* on error the form is empty */
    sg_form_free(&form);
}

/* ---- forms ---- */

static void test_form_parses_pairs_in_order(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("code=abc&state=xyz&iss=https%3A%2F%2Fsf", &form), SG_OK);
    assert_int_equal(form.n, 3);
    assert_string_equal(form.item[0].key, "code");
    assert_string_equal(form.item[0].value, "abc");
    assert_string_equal(form.item[1].key, "state");
    assert_string_equal(form.item[1].value, "xyz");
    assert_string_equal(sg_form_get(&form, "iss"), "https://sf");
    assert_false(form.has_dup);
    sg_form_free(&form);
}

static void test_form_plus_is_space(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("q=a+b++c&k+1=v", &form), SG_OK);
    assert_string_equal(sg_form_get(&form, "q"), "a b  c");
    assert_string_equal(sg_form_get(&form, "k 1"), "v");
    sg_form_free(&form);
}

static void test_form_decodes_escapes_in_both_cases(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("a=%41%6a%6A&b=%2B%26%3d%25&c=%C3%A9", &form), SG_OK);
    assert_string_equal(sg_form_get(&form, "a"), "Ajj");
    assert_string_equal(sg_form_get(&form, "b"), "+&=%");
    assert_string_equal(sg_form_get(&form, "c"), "\xc3\xa9");
    sg_form_free(&form);
}

static void test_form_escaped_separators_do_not_split(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("k%3Dx=v%26w=z", &form), SG_OK);
    assert_int_equal(form.n, 1);
    assert_string_equal(form.item[0].key, "k=x");
    assert_string_equal(form.item[0].value, "v&w=z");
    sg_form_free(&form);
}

static void test_form_rejects_nul_escape(void **state)
{
    expect_form_rejected("user=admin%00evil", strlen("user=admin%00evil"), SG_ERR_PARSE);
    expect_form_rejected("a%00=1", strlen("a%00=1"), SG_ERR_PARSE);
}

static void test_form_rejects_raw_nul_byte(void **state)
{
    static const char s[] = "a=1&b=x\0y&c=3";
    expect_form_rejected(s, sizeof(s) - 1, SG_ERR_PARSE);
}

static void test_form_rejects_bad_escapes(void **state)
{
    const char *bad[] = {"a=%", "a=%4", "a=%zz", "a=%4g", "a=%g4", "a=%%41", "%=1", "a=1&b=%2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_form_rejected(bad[i], strlen(bad[i]), SG_ERR_PARSE);
}

static void test_form_bad_escape_after_good_fields_empties_form(void **state)
{
    expect_form_rejected("a=1&b=2&c=%zz", strlen("a=1&b=2&c=%zz"), SG_ERR_PARSE);
}

static void test_form_skips_empty_pairs(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("&&a=1&&&b=2&", &form), SG_OK);
    assert_int_equal(form.n, 2);
    assert_string_equal(sg_form_get(&form, "a"), "1");
    assert_string_equal(sg_form_get(&form, "b"), "2");
    sg_form_free(&form);
}

static void test_form_empty_input_is_empty_form(void **state)
{
    sg_form_t form;
    assert_int_equal(sg_form_parse("", 0, &form), SG_OK);
    assert_int_equal(form.n, 0);
    assert_int_equal(parse("&&&", &form), SG_OK);
    assert_int_equal(form.n, 0);
    sg_form_free(&form);
}

static void test_form_key_without_equals_has_empty_value(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("flag&x=&y=1", &form), SG_OK);
    assert_int_equal(form.n, 3);
    assert_string_equal(sg_form_get(&form, "flag"), "");
    assert_string_equal(sg_form_get(&form, "x"), "");
    assert_string_equal(sg_form_get(&form, "y"), "1");
    sg_form_free(&form);
}

static void test_form_value_keeps_later_equals_signs(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("a=b=c==", &form), SG_OK);
    assert_string_equal(sg_form_get(&form, "a"), "b=c==");
    sg_form_free(&form);
}

static void test_form_duplicates_are_flagged_and_kept(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("state=1&code=x&state=2", &form), SG_OK);
    assert_true(form.has_dup);
    assert_int_equal(form.n, 3);
    assert_int_equal(sg_form_count(&form, "state"), 2);
    assert_int_equal(sg_form_count(&form, "code"), 1);
    assert_int_equal(sg_form_count(&form, "nope"), 0);
    assert_string_equal(sg_form_get(&form, "state"), "1"); /* the first one */
    sg_form_free(&form);
}

static void test_form_duplicate_found_after_decoding(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("a+b=1&a%20b=2", &form), SG_OK);
    assert_true(form.has_dup);
    assert_int_equal(sg_form_count(&form, "a b"), 2);
    sg_form_free(&form);
}

static void test_form_missing_key_is_null(void **state)
{
    sg_form_t form;
    assert_int_equal(parse("a=1", &form), SG_OK);
    assert_null(sg_form_get(&form, "b"));
    assert_null(sg_form_get(&form, "A"));
    sg_form_free(&form);
}

static char *fields(size_t n)
{
    sg_buf_t b;
    sg_buf_init(&b, 4096);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sg_buf_printf(&b, "%sk%zu=v", i ? "&" : "", i), SG_OK);
    return sg_buf_steal(&b);
}

static void test_form_accepts_exactly_the_field_limit(void **state)
{
    char *s = fields(SG_FORM_MAX_FIELDS);
    sg_form_t form;
    assert_int_equal(parse(s, &form), SG_OK);
    assert_int_equal(form.n, SG_FORM_MAX_FIELDS);
    assert_string_equal(sg_form_get(&form, "k63"), "v");
    sg_form_free(&form);
    free(s);
}

static void test_form_rejects_one_field_over_limit(void **state)
{
    char *s = fields(SG_FORM_MAX_FIELDS + 1);
    expect_form_rejected(s, strlen(s), SG_ERR_TOO_BIG);
    free(s);
}

static void test_form_reads_only_len_bytes(void **state)
{
    sg_form_t form;
    assert_int_equal(sg_form_parse("a=1&b=2", 3, &form), SG_OK);
    assert_int_equal(form.n, 1);
    assert_string_equal(sg_form_get(&form, "a"), "1");
    sg_form_free(&form);
    /* An escape cut by len is incomplete, not completed from bytes past the end. */
    expect_form_rejected("a=%41", 4, SG_ERR_PARSE);
}

static void test_form_add_copies_and_flags_duplicates(void **state)
{
    sg_form_t form = {.n = 0};
    char key[] = "k", value[] = "v";
    assert_int_equal(sg_form_add(&form, key, value), SG_OK);
    key[0] = 'X';
    value[0] = 'Y';
    assert_string_equal(sg_form_get(&form, "k"), "v");
    assert_false(form.has_dup);
    assert_int_equal(sg_form_add(&form, "k", NULL), SG_OK);
    assert_true(form.has_dup);
    assert_string_equal(form.item[1].value, "");
    sg_form_free(&form);
}

static void test_form_add_refuses_past_the_field_limit(void **state)
{
    sg_form_t form = {.n = 0};
    for (int i = 0; i < SG_FORM_MAX_FIELDS; i++)
        assert_int_equal(sg_form_add(&form, "k", "v"), SG_OK);
    assert_int_equal(sg_form_add(&form, "k", "v"), SG_ERR_TOO_BIG);
    assert_int_equal(form.n, SG_FORM_MAX_FIELDS);
    sg_form_free(&form);
    assert_int_equal(form.n, 0);
    assert_false(form.has_dup);
}

/* ---- url_encode ---- */

static void test_url_encode_keeps_unreserved_characters(void **state)
{
    const char *u = "ABCXYZabcxyz0189-._~";
    char *e = sg_url_encode(u);
    assert_string_equal(e, u);
    free(e);
}

static void test_url_encode_escapes_reserved_and_space(void **state)
{
    char *e = sg_url_encode("a b&c=d+e/f?g#h%i:j@k");
    assert_string_equal(e, "a%20b%26c%3Dd%2Be%2Ff%3Fg%23h%25i%3Aj%40k");
    free(e);
}

static void test_url_encode_escapes_utf8_bytes_upper_hex(void **state)
{
    char *e = sg_url_encode("caf\xc3\xa9\x7f\x01");
    assert_string_equal(e, "caf%C3%A9%7F%01");
    free(e);
    e = sg_url_encode("");
    assert_string_equal(e, "");
    free(e);
}

static void test_url_encode_round_trips_through_form_parse(void **state)
{
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    char *e = sg_url_encode(all);
    sg_buf_t b;
    sg_buf_init(&b, 4096);
    assert_int_equal(sg_buf_printf(&b, "%s=%s", e, e), SG_OK);
    sg_form_t form;
    assert_int_equal(sg_form_parse(b.ptr, b.len, &form), SG_OK);
    assert_int_equal(form.n, 1);
    assert_string_equal(form.item[0].key, all);
    assert_string_equal(form.item[0].value, all);
    sg_form_free(&form);
    sg_buf_free(&b);
    free(e);
}

/* ---- cookies ---- */

static void expect_cookie(const char *header, const char *name, const char *want)
{
    char *got = sg_cookie_get(header, name);
    const char *h = header ? header : "(null)";
    if (!want) {
        if (got)
            print_error("cookie %s in \"%s\": expected none, got \"%s\"\n", name, h, got);
        assert_null(got);
        return;
    }
    if (!got)
        print_error("cookie %s in \"%s\": expected \"%s\", got none\n", name, h, want);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_cookie_finds_each_of_several(void **state)
{
    const char *h = "a=1; sg=sess; c=3";
    expect_cookie(h, "a", "1");
    expect_cookie(h, "sg", "sess");
    expect_cookie(h, "c", "3");
    expect_cookie("a=1;b=2", "b", "2");
    expect_cookie("a=1;\tb=2", "b", "2");
}

static void test_cookie_name_must_match_whole(void **state)
{
    const char *h = "sg_state=st; xsg=x; sgx=y";
    expect_cookie(h, "sg", NULL);
    expect_cookie(h, "sg_state", "st");
    expect_cookie("sg_state=st; sg=real", "sg", "real");
    expect_cookie("SG=upper", "sg", NULL);
}

static void test_cookie_name_in_a_value_is_not_a_match(void **state)
{
    expect_cookie("a=sg=fake; sg=real", "sg", "real");
    expect_cookie("a=sg; b=2", "sg", NULL);
}

static void test_cookie_value_may_hold_equals_and_be_empty(void **state)
{
    expect_cookie("t=YWJj==; e=", "t", "YWJj==");
    expect_cookie("t=YWJj==; e=", "e", "");
}

static void test_cookie_trailing_whitespace_is_trimmed(void **state)
{
    expect_cookie("a=1 ; b=2\t", "a", "1");
    expect_cookie("a=1 ; b=2\t", "b", "2");
    expect_cookie("  a=1;;; ;b=2;", "b", "2");
}

static void test_cookie_first_of_duplicates_wins(void **state)
{
    expect_cookie("sg=first; sg=second", "sg", "first");
}

static void test_cookie_absent_or_null_is_null(void **state)
{
    expect_cookie("", "sg", NULL);
    expect_cookie(";;; ", "sg", NULL);
    expect_cookie("sg", "sg", NULL); /* no '=' */
    expect_cookie(NULL, "sg", NULL);
    assert_null(sg_cookie_get("sg=1", NULL));
}

/* ---- Basic credentials ---- */

static char *basic(const char *raw)
{
    char *b64 = sg_b64_encode(raw, strlen(raw), SG_B64_STD);
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    assert_int_equal(sg_buf_printf(&b, "Basic %s", b64), SG_OK);
    free(b64);
    return sg_buf_steal(&b);
}

static void expect_basic(const char *raw, const char *want_user, const char *want_pass)
{
    char *h = basic(raw), *user = NULL, *pass = NULL;
    sg_rc rc = sg_basic_auth_parse(h, &user, &pass);
    if (rc != SG_OK)
        print_error("credentials \"%s\": got %s\n", raw, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
    assert_string_equal(user, want_user);
    assert_string_equal(pass, want_pass);
    free(user);
    free(pass);
    free(h);
}

static void expect_basic_header_rejected(const char *h, sg_rc want)
{
    char *user = (char *)"sentinel", *pass = (char *)"sentinel";
    sg_rc rc = sg_basic_auth_parse(h, &user, &pass);
    if (rc != want)
        print_error("header \"%.60s\": expected %s, got %s\n", h ? h : "(null)", sg_rc_str(want),
                    sg_rc_str(rc));
    assert_int_equal(rc, want);
    assert_null(user);
    assert_null(pass);
}

static void expect_basic_rejected(const char *raw)
{
    char *h = basic(raw);
    expect_basic_header_rejected(h, SG_ERR_PARSE);
    free(h);
}

static void test_basic_splits_user_and_password(void **state)
{
    expect_basic("demo-api:demo-api-secret", "demo-api", "demo-api-secret");
}

static void test_basic_splits_at_first_colon(void **state)
{
    expect_basic("client:pa:ss", "client", "pa:ss");
    expect_basic("client:", "client", "");
    expect_basic(":secret", "", "secret");
}

static void test_basic_decodes_percent_encoded_credentials(void **state)
{
    /* RFC 6749 2.3.1: client id and secret are form-urlencoded before base64. */
    expect_basic("my%40client%3Aid:p%3Ass+w%25rd", "my@client:id", "p:ss w%rd");
}

static void test_basic_scheme_is_case_insensitive(void **state)
{
    char *b64 = sg_b64_encode("u:p", 3, SG_B64_STD);
    char h[64];
    snprintf(h, sizeof(h), "bAsIc   %s", b64);
    char *user, *pass;
    assert_int_equal(sg_basic_auth_parse(h, &user, &pass), SG_OK);
    assert_string_equal(user, "u");
    assert_string_equal(pass, "p");
    free(user);
    free(pass);
    free(b64);
}

static void test_basic_rejects_other_schemes_and_null(void **state)
{
    expect_basic_header_rejected("Bearer dTpw", SG_ERR_PARSE);
    expect_basic_header_rejected("Basic", SG_ERR_PARSE);
    expect_basic_header_rejected("BasicdTpw", SG_ERR_PARSE);
    expect_basic_header_rejected("", SG_ERR_PARSE);
    expect_basic_header_rejected(NULL, SG_ERR_PARSE);
}

static void test_basic_rejects_bad_base64(void **state)
{
    expect_basic_header_rejected("Basic dTpw!", SG_ERR_PARSE);
    expect_basic_header_rejected("Basic dTpw dTpw", SG_ERR_PARSE);
    expect_basic_header_rejected("Basic d", SG_ERR_PARSE);
}

static void test_basic_rejects_missing_colon(void **state)
{
    expect_basic_rejected("justauser");
    expect_basic_rejected("");
}

static void test_basic_rejects_nul_raw_or_escaped(void **state)
{
    const char raw[] = "u\0x:p";
    char *b64 = sg_b64_encode(raw, sizeof(raw) - 1, SG_B64_STD);
    char h[64];
    snprintf(h, sizeof(h), "Basic %s", b64);
    free(b64);
    expect_basic_header_rejected(h, SG_ERR_PARSE);
    expect_basic_rejected("u%00:p");
    expect_basic_rejected("u:p%00");
}

static void test_basic_rejects_bad_escapes(void **state)
{
    expect_basic_rejected("u%zz:p");
    expect_basic_rejected("u:p%4");
}

static void test_basic_rejects_oversize_header(void **state)
{
    char *h = malloc(6 + 4100 + 1);
    memcpy(h, "Basic ", 6);
    memset(h + 6, 'A', 4100);
    h[6 + 4100] = '\0';
    expect_basic_header_rejected(h, SG_ERR_TOO_BIG);
    free(h);
}

/* ---- Content-Type ---- */

static void test_content_type_matches_media_type_with_parameters(void **state)
{
    const char *form = "application/x-www-form-urlencoded";
    assert_true(sg_content_type_is(form, form));
    assert_true(sg_content_type_is("application/x-www-form-urlencoded; charset=UTF-8", form));
    assert_true(sg_content_type_is("application/x-www-form-urlencoded;charset=UTF-8", form));
    assert_true(sg_content_type_is("application/x-www-form-urlencoded ;charset=UTF-8", form));
    assert_true(sg_content_type_is("  application/json", "application/json"));
}

static void test_content_type_is_case_insensitive(void **state)
{
    assert_true(sg_content_type_is("Application/JSON", "application/json"));
    assert_true(sg_content_type_is("application/json", "APPLICATION/JSON"));
}

static void test_content_type_rejects_prefixes_and_others(void **state)
{
    assert_false(sg_content_type_is("application/jsonp", "application/json"));
    assert_false(sg_content_type_is("application/json-seq", "application/json"));
    assert_false(sg_content_type_is("application/jso", "application/json"));
    assert_false(sg_content_type_is("text/html", "application/json"));
    assert_false(sg_content_type_is("", "application/json"));
    assert_false(sg_content_type_is(NULL, "application/json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_parses_pairs_in_order),
        cmocka_unit_test(test_form_plus_is_space),
        cmocka_unit_test(test_form_decodes_escapes_in_both_cases),
        cmocka_unit_test(test_form_escaped_separators_do_not_split),
        cmocka_unit_test(test_form_rejects_nul_escape),
        cmocka_unit_test(test_form_rejects_raw_nul_byte),
        cmocka_unit_test(test_form_rejects_bad_escapes),
        cmocka_unit_test(test_form_bad_escape_after_good_fields_empties_form),
        cmocka_unit_test(test_form_skips_empty_pairs),
        cmocka_unit_test(test_form_empty_input_is_empty_form),
        cmocka_unit_test(test_form_key_without_equals_has_empty_value),
        cmocka_unit_test(test_form_value_keeps_later_equals_signs),
        cmocka_unit_test(test_form_duplicates_are_flagged_and_kept),
        cmocka_unit_test(test_form_duplicate_found_after_decoding),
        cmocka_unit_test(test_form_missing_key_is_null),
        cmocka_unit_test(test_form_accepts_exactly_the_field_limit),
        cmocka_unit_test(test_form_rejects_one_field_over_limit),
        cmocka_unit_test(test_form_reads_only_len_bytes),
        cmocka_unit_test(test_form_add_copies_and_flags_duplicates),
        cmocka_unit_test(test_form_add_refuses_past_the_field_limit),
        cmocka_unit_test(test_url_encode_keeps_unreserved_characters),
        cmocka_unit_test(test_url_encode_escapes_reserved_and_space),
        cmocka_unit_test(test_url_encode_escapes_utf8_bytes_upper_hex),
        cmocka_unit_test(test_url_encode_round_trips_through_form_parse),
        cmocka_unit_test(test_cookie_finds_each_of_several),
        cmocka_unit_test(test_cookie_name_must_match_whole),
        cmocka_unit_test(test_cookie_name_in_a_value_is_not_a_match),
        cmocka_unit_test(test_cookie_value_may_hold_equals_and_be_empty),
        cmocka_unit_test(test_cookie_trailing_whitespace_is_trimmed),
        cmocka_unit_test(test_cookie_first_of_duplicates_wins),
        cmocka_unit_test(test_cookie_absent_or_null_is_null),
        cmocka_unit_test(test_basic_splits_user_and_password),
        cmocka_unit_test(test_basic_splits_at_first_colon),
        cmocka_unit_test(test_basic_decodes_percent_encoded_credentials),
        cmocka_unit_test(test_basic_scheme_is_case_insensitive),
        cmocka_unit_test(test_basic_rejects_other_schemes_and_null),
        cmocka_unit_test(test_basic_rejects_bad_base64),
        cmocka_unit_test(test_basic_rejects_missing_colon),
        cmocka_unit_test(test_basic_rejects_nul_raw_or_escaped),
        cmocka_unit_test(test_basic_rejects_bad_escapes),
        cmocka_unit_test(test_basic_rejects_oversize_header),
        cmocka_unit_test(test_content_type_matches_media_type_with_parameters),
        cmocka_unit_test(test_content_type_is_case_insensitive),
        cmocka_unit_test(test_content_type_rejects_prefixes_and_others),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
