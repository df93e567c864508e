/* sg_textf, sg_text_clean: text from elsewhere in fixed buffers is never cut silently. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "scopegate/text.h"

static void expect_text(const char *got, const char *want)
{
    if (strcmp(got, want) != 0)
        print_error("expected \"%s\", got \"%s\"\n", want, got);
    assert_string_equal(got, want);
}

static void test_text_that_fits_is_whole(void **state)
{
    char b[64];
    assert_int_equal(sg_textf(b, sizeof b, "grant %d: %s", 7, "expired access/refresh token"),
                     SG_TEXT_WHOLE);
    expect_text(b, "grant 7: expired access/refresh token");
    /* exactly cap - 1 bytes still fits */
    char e[5];
    assert_int_equal(sg_textf(e, sizeof e, "%s", "abcd"), SG_TEXT_WHOLE);
    expect_text(e, "abcd");
}

static void test_long_provider_text_is_cut_with_a_mark(void **state)
{
    char b[24];
    assert_int_equal(
        sg_textf(b, sizeof b, "%s: %s", "invalid_grant", "expired access/refresh token"),
        SG_TEXT_CUT);
    assert_int_equal(strlen(b), sizeof b - 1);
    expect_text(b, "invalid_grant: expir...");
    char e[5];
    assert_int_equal(sg_textf(e, sizeof e, "%s", "abcde"), SG_TEXT_CUT);
    expect_text(e, "a...");
}

static void test_cut_never_splits_a_character(void **state)
{
    /* "ééééé": two bytes each; cap 8 leaves room for 4 bytes before "...", which must not end
     * in half a character. */
    char b[8];
    assert_int_equal(sg_textf(b, sizeof b, "%s", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"),
                     SG_TEXT_CUT);
    expect_text(b, "\xc3\xa9\xc3\xa9...");
    char c[9];
    assert_int_equal(sg_textf(c, sizeof c, "x%s", "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"),
                     SG_TEXT_CUT);
    expect_text(c, "x\xe2\x82\xac...");
}

static void test_tiny_buffers_stay_terminated(void **state)
{
    char one[1] = {'z'};
    assert_int_equal(sg_textf(one, sizeof one, "%s", "abc"), SG_TEXT_CUT);
    expect_text(one, "");
    char three[3];
    assert_int_equal(sg_textf(three, sizeof three, "%s", "abc"), SG_TEXT_CUT);
    expect_text(three, "ab");
    char four[4];
    assert_int_equal(sg_textf(four, sizeof four, "%s", "\xc3\xa9\xc3\xa9"), SG_TEXT_CUT);
    expect_text(four, "\xc3\xa9");
    assert_int_equal(sg_textf(NULL, 0, "%s", "abc"), SG_TEXT_CUT);
}

static void test_clean_replaces_control_characters(void **state)
{
    char b[64];
    assert_int_equal(sg_text_clean(b, sizeof b, "bad\r\nLine: 2\x1b[31m\x7f"), SG_TEXT_WHOLE);
    expect_text(b, "bad??Line: 2?[31m?");
    assert_int_equal(sg_text_clean(b, sizeof b, NULL), SG_TEXT_WHOLE);
    expect_text(b, "");
}

static void test_clean_marks_a_cut(void **state)
{
    char b[10];
    assert_int_equal(sg_text_clean(b, sizeof b, "end-user denied authorization"), SG_TEXT_CUT);
    expect_text(b, "end-us...");
    char fit[10];
    assert_int_equal(sg_text_clean(fit, sizeof fit, "123456789"), SG_TEXT_WHOLE);
    expect_text(fit, "123456789");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_that_fits_is_whole),
        cmocka_unit_test(test_long_provider_text_is_cut_with_a_mark),
        cmocka_unit_test(test_cut_never_splits_a_character),
        cmocka_unit_test(test_tiny_buffers_stay_terminated),
        cmocka_unit_test(test_clean_replaces_control_characters),
        cmocka_unit_test(test_clean_marks_a_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
