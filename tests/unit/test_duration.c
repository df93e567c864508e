/* sg_duration_parse: "90s", "30m", "8h", "30d", bare seconds; everything else refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "scopegate/duration.h"

#define MAX_SECONDS (100LL * 366 * 86400)

static void expect_seconds(const char *text, long long want)
{
    long long got = -1;
    sg_rc rc = sg_duration_parse(text, &got);
    if (rc != SG_OK)
        print_error("\"%s\": expected %lld seconds, got error %s\n", text, want, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
    assert_int_equal(got, want);
}

static void expect_rejected(const char *text)
{
    long long got = -12345;
    sg_rc rc = sg_duration_parse(text, &got);
    if (rc != SG_ERR_PARSE)
        print_error("\"%s\": expected parse error, got %s (%lld)\n", text ? text : "(null)",
                    sg_rc_str(rc), got);
    assert_int_equal(rc, SG_ERR_PARSE);
    assert_int_equal(got, -12345); /* the output is left alone on error */
}

static void test_duration_parses_each_unit(void **state)
{
    expect_seconds("90s", 90);
    expect_seconds("30m", 30 * 60);
    expect_seconds("8h", 8 * 3600);
    expect_seconds("30d", 30 * 86400);
}

static void test_duration_bare_number_is_seconds(void **state)
{
    expect_seconds("45", 45);
    expect_seconds("0", 0);
    expect_seconds("0s", 0);
    expect_seconds("007m", 7 * 60);
}

static void test_duration_accepts_the_hundred_year_limit(void **state)
{
    expect_seconds("36600d", MAX_SECONDS);
    expect_seconds("3162240000", MAX_SECONDS);
}

static void test_duration_rejects_past_the_hundred_year_limit(void **state)
{
    expect_rejected("36601d");
    expect_rejected("3162240001");
    expect_rejected("878401h");
    expect_rejected("52704001m");
}

static void test_duration_rejects_values_that_would_overflow(void **state)
{
    expect_rejected("9223372036854775807");
    expect_rejected("9223372036854775808s");
    expect_rejected("99999999999999999999999999999999d");
}

static void test_duration_rejects_empty_and_null(void **state)
{
    expect_rejected("");
    expect_rejected(NULL);
}

static void test_duration_rejects_signs(void **state)
{
    expect_rejected("-5m");
    expect_rejected("+5m");
    expect_rejected("-0");
}

static void test_duration_rejects_spaces(void **state)
{
    expect_rejected(" 5m");
    expect_rejected("5m ");
    expect_rejected("5 m");
    expect_rejected("\t5");
}

static void test_duration_rejects_unknown_or_repeated_units(void **state)
{
    expect_rejected("5x");
    expect_rejected("5ms");
    expect_rejected("5mm");
    expect_rejected("1h30m");
    expect_rejected("5M");
    expect_rejected("5H");
    expect_rejected("5w");
    expect_rejected("m");
    expect_rejected("s5");
}

static void test_duration_rejects_fractions_and_junk(void **state)
{
    expect_rejected("1.5h");
    expect_rejected("1,5h");
    expect_rejected("0x10");
    expect_rejected("1e3");
    expect_rejected("5s\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_parses_each_unit),
        cmocka_unit_test(test_duration_bare_number_is_seconds),
        cmocka_unit_test(test_duration_accepts_the_hundred_year_limit),
        cmocka_unit_test(test_duration_rejects_past_the_hundred_year_limit),
        cmocka_unit_test(test_duration_rejects_values_that_would_overflow),
        cmocka_unit_test(test_duration_rejects_empty_and_null),
        cmocka_unit_test(test_duration_rejects_signs),
        cmocka_unit_test(test_duration_rejects_spaces),
        cmocka_unit_test(test_duration_rejects_unknown_or_repeated_units),
        cmocka_unit_test(test_duration_rejects_fractions_and_junk),
    };
    return cmocka_run_group_tests_name("duration", tests, NULL, NULL);
}
