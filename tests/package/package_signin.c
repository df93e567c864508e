/*
 * The packaged binary signs people in: run by test_package.sh with SCOPEGATE naming the
 * /usr/bin/scopegate extracted from the .deb, against the built sfsim. A person signs in,
 * /auth answers 200 with the policy's role, a browser without a session gets 401, and the
 * gateway stops cleanly at SIGTERM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"
#include "gw_test.h"

static void test_packaged_binary_signs_in_and_answers_auth(void **state)
{
    (void)state;
    th_client_t *c = browser();
    sign_in(c, "/", TH_ADMIN, "admin");
    th_resp_t *r = gw_get(c, "/auth");
    expect_status(r, 200, "/auth after signing in through the packaged binary");
    const char *role = keep_str(th_resp_header(r, "X-Auth-Request-Role"));
    CHECK(role && strcmp(role, "admin") == 0, "expected X-Auth-Request-Role admin, got %s",
          role ? role : "(none)");
    expect_signed_out(browser(), "a browser that never signed in");
}

static int group_setup(void **state)
{
    (void)state;
    if (th_stack_start(&GW, NULL)) {
        fprintf(stderr, "the stack (sfsim and the packaged gateway) did not start\n");
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_packaged_binary_signs_in_and_answers_auth, gw_setup,
                                        gw_teardown),
    };
    return cmocka_run_group_tests_name("packaged binary", tests, group_setup, gw_group_teardown);
}
