/* log: one valid JSON object per line on stderr, whatever the message holds; masks hide secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

/* ---- capturing stderr ---- */

static int saved_stderr = -1;
static FILE *capture_file;

static void capture_begin(void)
{
    capture_file = tmpfile();
    assert_non_null(capture_file);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

/* Restores stderr and returns everything written meanwhile (heap, NUL-terminated). */
static char *capture_end(size_t *lenp)
{
    fflush(stderr);
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    saved_stderr = -1;
    /* stderr wrote through a duplicate of the file's descriptor: ask the descriptor. */
    off_t size = lseek(fileno(capture_file), 0, SEEK_END);
    assert_true(size >= 0);
    char *out = malloc((size_t)size + 1);
    assert_non_null(out);
    assert_int_equal(pread(fileno(capture_file), out, (size_t)size, 0), size);
    out[size] = '\0';
    fclose(capture_file);
    capture_file = NULL;
    if (lenp)
        *lenp = (size_t)size;
    return out;
}

static int teardown(void **state)
{
    if (saved_stderr >= 0) { /* a failed test left stderr redirected */
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        saved_stderr = -1;
    }
    if (capture_file) {
        fclose(capture_file);
        capture_file = NULL;
    }
    sg_log_set_level(SG_LOG_INFO);
    return 0;
}

/* Offset of the first byte that breaks strict UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing past U+10FFFF), or len when all of it is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, cp = c & 0x07;
        } else {
            return i;
        }
        if (len - i <= n)
            return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += n + 1;
    }
    return len;
}

/*
 * Logs one line and checks it is exactly one valid JSON object (UTF-8, no raw control
 * characters, one trailing newline). Returns the parsed object.
 */
static cJSON *log_one(sg_log_level level, const char *event, const char *msg)
{
    size_t len;
    capture_begin();
    sg_log(level, event, "%s", msg);
    char *line = capture_end(&len);
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len) != line + len - 1)
        print_error("expected one line ending in a newline, got %zu bytes: %.200s\n", len, line);
    assert_true(len > 0);
    assert_int_equal(line[len - 1], '\n');
    assert_ptr_equal(memchr(line, '\n', len), line + len - 1);
    for (size_t i = 0; i + 1 < len; i++) {
        if ((unsigned char)line[i] < 0x20)
            print_error("raw control byte 0x%02x at offset %zu\n", (unsigned char)line[i], i);
        assert_true((unsigned char)line[i] >= 0x20);
    }
    size_t bad = utf8_invalid_at((const unsigned char *)line, len);
    if (bad != len)
        print_error("log line is not valid UTF-8: byte 0x%02x at offset %zu of %zu\n",
                    (unsigned char)line[bad], bad, len);
    assert_int_equal(bad, len);
    cJSON *j = cJSON_ParseWithOpts(line, NULL, 1);
    if (!cJSON_IsObject(j))
        print_error("log line is not a JSON object: %.100s ... %s", line,
                    line + (len > 100 ? len - 100 : 0));
    assert_true(cJSON_IsObject(j));
    free(line);
    return j;
}

static const char *field(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!cJSON_IsString(v))
        print_error("field \"%s\" missing or not a string\n", name);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

/* ---- log lines ---- */

static void test_log_line_is_one_json_object_with_the_four_fields(void **state)
{
    cJSON *j = log_one(SG_LOG_INFO, "listening", "on 127.0.0.1:8080");
    assert_string_equal(field(j, "level"), "info");
    assert_string_equal(field(j, "event"), "listening");
    assert_string_equal(field(j, "msg"), "on 127.0.0.1:8080");
    const char *ts = field(j, "ts");
    /* 2026-11-27T08:00:00.123Z */
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[4], '-');
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], '.');
    assert_int_equal(ts[23], 'Z');
    cJSON_Delete(j);
}

static void test_log_printf_formats_the_message(void **state)
{
    size_t len;
    capture_begin();
    sg_log(SG_LOG_WARN, "refresh_failed", "grant %d for %s", 7, "ops@demo.example");
    char *line = capture_end(&len);
    cJSON *j = cJSON_Parse(line);
    assert_string_equal(field(j, "msg"), "grant 7 for ops@demo.example");
    assert_string_equal(field(j, "level"), "warn");
    cJSON_Delete(j);
    free(line);
}

static void test_log_escapes_control_characters_quotes_and_backslashes(void **state)
{
    const char *msg = "a\"b\\c\nd\re\tf\x01g\x1f\x7fh";
    cJSON *j = log_one(SG_LOG_ERROR, "ev\"en\nt", msg);
    assert_string_equal(field(j, "msg"), msg);
    assert_string_equal(field(j, "event"), "ev\"en\nt");
    assert_string_equal(field(j, "level"), "error");
    cJSON_Delete(j);
}

static void test_log_message_cannot_forge_a_second_line(void **state)
{
    const char *msg = "x\"}\n{\"ts\":\"2026-01-01T00:00:00.000Z\",\"level\":\"error\","
                      "\"event\":\"forged\",\"msg\":\"y";
    cJSON *j = log_one(SG_LOG_INFO, "login_failed", msg);
    assert_string_equal(field(j, "event"), "login_failed");
    assert_string_equal(field(j, "msg"), msg);
    cJSON_Delete(j);
}

static void test_log_keeps_valid_utf8(void **state)
{
    const char *msg = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91";
    cJSON *j = log_one(SG_LOG_INFO, "utf8", msg);
    assert_string_equal(field(j, "msg"), msg);
    cJSON_Delete(j);
}

static void test_log_long_message_is_truncated_but_stays_json(void **state)
{
    char *msg = malloc(5001);
    memset(msg, 'a', 5000);
    msg[5000] = '\0';
    cJSON *j = log_one(SG_LOG_INFO, "long", msg);
    const char *got = field(j, "msg");
    size_t n = strlen(got);
    assert_true(n >= 512);
    assert_true(n < 5000);
    /* cut visibly: the message ends in "...", everything before it is the message's */
    assert_string_equal(got + n - 3, "...");
    assert_int_equal(strspn(got, "a"), n - 3);
    cJSON_Delete(j);
    free(msg);
}

static void test_log_message_of_control_characters_stays_one_json_object(void **state)
{
    /* Each byte becomes a 6-byte \u00XX escape: 1000 of them outgrow a 4 KiB line buffer. */
    char msg[1001];
    memset(msg, '\x01', 1000);
    msg[1000] = '\0';
    cJSON *j = log_one(SG_LOG_WARN, "bad_request", msg);
    assert_string_equal(field(j, "event"), "bad_request");
    assert_string_equal(field(j, "level"), "warn");
    const char *got = field(j, "msg");
    assert_true(strlen(got) > 0);
    assert_int_equal(strspn(got, "\x01"), strlen(got));
    cJSON_Delete(j);
}

static void test_log_truncation_never_splits_a_utf8_character(void **state)
{
    /* 1022 ASCII bytes, then 2-byte characters: the 1023-byte cut lands inside one. */
    char msg[1200];
    memset(msg, 'a', 1022);
    for (size_t i = 1022; i + 2 < sizeof(msg); i += 2)
        memcpy(msg + i, "\xc3\xa9", 2);
    msg[sizeof(msg) - 2] = '\0';
    cJSON *j = log_one(SG_LOG_INFO, "utf8_cut", msg);
    cJSON_Delete(j);
}

static void test_log_invalid_utf8_in_message_still_gives_valid_json(void **state)
{
    /* Request data (paths, user agents) is not guaranteed UTF-8. */
    cJSON *j = log_one(SG_LOG_INFO, "bad_bytes", "user \xff\xfe agent \xc3( \xed\xa0\x80");
    assert_string_equal(field(j, "event"), "bad_bytes");
    cJSON_Delete(j);
}

static void test_log_below_min_level_is_dropped(void **state)
{
    size_t len;
    sg_log_set_level(SG_LOG_WARN);
    capture_begin();
    sg_log(SG_LOG_DEBUG, "d", "debug");
    sg_log(SG_LOG_INFO, "i", "info");
    char *out = capture_end(&len);
    assert_int_equal(len, 0);
    free(out);

    cJSON *j = log_one(SG_LOG_WARN, "w", "warn");
    assert_string_equal(field(j, "level"), "warn");
    cJSON_Delete(j);
    j = log_one(SG_LOG_ERROR, "e", "error");
    assert_string_equal(field(j, "level"), "error");
    cJSON_Delete(j);

    sg_log_set_level(SG_LOG_DEBUG);
    j = log_one(SG_LOG_DEBUG, "d", "debug");
    assert_string_equal(field(j, "level"), "debug");
    cJSON_Delete(j);
}

static void test_log_level_names_parse(void **state)
{
    assert_int_equal(sg_log_level_parse("debug"), SG_LOG_DEBUG);
    assert_int_equal(sg_log_level_parse("info"), SG_LOG_INFO);
    assert_int_equal(sg_log_level_parse("warn"), SG_LOG_WARN);
    assert_int_equal(sg_log_level_parse("error"), SG_LOG_ERROR);
    assert_int_equal(sg_log_level_parse("verbose"), -1);
    assert_int_equal(sg_log_level_parse(""), -1);
    assert_int_equal(sg_log_level_parse(NULL), -1);
}

/* ---- masks ---- */

static void expect_mask_hides(const char *secret)
{
    char mask[32];
    sg_log_mask(secret, mask, sizeof(mask));
    if (strstr(mask, secret))
        print_error("mask \"%s\" contains the secret it masks\n", mask);
    assert_null(strstr(mask, secret));
    /* "sha256:" and the first 8 hex digits of SHA-256(secret), nothing else. */
    char *h = sg_sha256_hex(secret, strlen(secret));
    char want[32];
    snprintf(want, sizeof(want), "sha256:%.8s", h);
    assert_string_equal(mask, want);
    free(h);
}

static void test_log_mask_never_contains_the_secret(void **state)
{
    expect_mask_hides("5Aep861TSESvWeug_zt9BeHmh0Sf8o1Mp6uWf2BvMI3xNp1RS5NP7HU3c0Sc");
    expect_mask_hides("demo-api-secret");
    expect_mask_hides("00Dxx0000001gPL!AQ4AQFqHnCZy3d1.eAz8tYw");
    for (int i = 0; i < 200; i++) {
        char *t = sg_random_token(24);
        assert_non_null(t);
        expect_mask_hides(t);
        free(t);
    }
}

static void test_log_mask_is_stable_and_tells_secrets_apart(void **state)
{
    char a1[17], a2[17], b[17];
    sg_log_mask("refresh-token-a", a1, sizeof(a1));
    sg_log_mask("refresh-token-a", a2, sizeof(a2));
    sg_log_mask("refresh-token-b", b, sizeof(b));
    assert_string_equal(a1, a2);
    assert_string_not_equal(a1, b);
    assert_int_equal(strlen(a1), 15);
}

static void test_log_mask_gives_empty_for_null_or_small_buffer(void **state)
{
    char out[32];
    memset(out, 'x', sizeof(out));
    sg_log_mask(NULL, out, sizeof(out));
    assert_string_equal(out, "");
    memset(out, 'x', sizeof(out));
    sg_log_mask("secret-value", out, 16);
    assert_string_equal(out, "");
    assert_int_equal(out[1], 'x');       /* nothing written past what was allowed */
    sg_log_mask("secret-value", out, 0); /* must not write at all */
    assert_int_equal(out[0], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_log_line_is_one_json_object_with_the_four_fields, teardown),
        cmocka_unit_test_teardown(test_log_printf_formats_the_message, teardown),
        cmocka_unit_test_teardown(test_log_escapes_control_characters_quotes_and_backslashes,
                                  teardown),
        cmocka_unit_test_teardown(test_log_message_cannot_forge_a_second_line, teardown),
        cmocka_unit_test_teardown(test_log_keeps_valid_utf8, teardown),
        cmocka_unit_test_teardown(test_log_long_message_is_truncated_but_stays_json, teardown),
        cmocka_unit_test_teardown(test_log_message_of_control_characters_stays_one_json_object,
                                  teardown),
        cmocka_unit_test_teardown(test_log_truncation_never_splits_a_utf8_character, teardown),
        cmocka_unit_test_teardown(test_log_invalid_utf8_in_message_still_gives_valid_json,
                                  teardown),
        cmocka_unit_test_teardown(test_log_below_min_level_is_dropped, teardown),
        cmocka_unit_test(test_log_level_names_parse),
        cmocka_unit_test(test_log_mask_never_contains_the_secret),
        cmocka_unit_test(test_log_mask_is_stable_and_tells_secrets_apart),
        cmocka_unit_test(test_log_mask_gives_empty_for_null_or_small_buffer),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
