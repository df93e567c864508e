/* scopegate: the command-line entry point. Each command lives in its own function. */
#include "cli.h"
#include "serve.h"
#include "scopegate/config.h"
#include "scopegate/crypto.h"
#include "scopegate/http_client.h"
#include "scopegate/http_server.h"
#include "scopegate/store.h"
#include "scopegate/version.h"

#include <stdio.h>
#include <string.h>

static int usage(FILE *out)
{
    fprintf(out,
            "usage: scopegate COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  serve [--config FILE]\n"
            "             run the gateway (foreground; SIGHUP reloads the policy, SIGTERM\n"
            "             drains and exits); FILE: $SCOPEGATE_CONFIG, then\n"
            "             /etc/scopegate/scopegate.cfg\n"
            "  config check [--config FILE] [--json]\n"
            "             check the deployment config, its policy, files and listeners\n"
            "             without starting anything; every problem as FILE:LINE: error|\n"
            "             warning: ..., then FILE: ok or FILE: N errors; exit 0 ok, 1 errors\n"
            "  config keys\n"
            "             every key the deployment config accepts, one per line\n"
            "  policy check FILE [--strict] [--config DEPLOYMENT] [--json]\n"
            "             check a scope policy; every problem as FILE:LINE: error|warning: ...,\n"
            "             then FILE: ok, N roles, N rules; --strict: warnings are errors\n"
            "  policy explain FILE (--claims JSON | --claims-file PATH) [--text | --json]\n"
            "             the role these claims get and the rule that decided (text on a\n"
            "             terminal, JSON otherwise)\n"
            "  policy test POLICY CASES [--config DEPLOYMENT] [--json]\n"
            "             run a cases file against a policy; exit 0 all pass, 1 one fails\n"
            "  policy diff OLD NEW [--config FILE] [--json]\n"
            "             what changes between two policies and, with --config, which sessions\n"
            "             change role or lifetimes and which stored grants it would affect\n"
            "  grants list --config FILE [--json]\n"
            "             every offline grant: person, org, app, state, cause, uses, expiry\n"
            "  grants check --config FILE [--json]\n"
            "             the running gateway refreshes every live grant once; exit 0 all\n"
            "             well, 1 dead or expiring soon, 2 usage/config, 3 gateway unreachable\n"
            "  grants explain ID --config FILE [--json]\n"
            "             why a grant died: cause, advice, evidence and figures\n"
            "  grants report --config FILE [--format csv|json]\n"
            "             the access review: every grant with its person's role now, and\n"
            "             everyone signed in with theirs; CSV (default) or JSON\n"
            "  grants disconnect (--user ID | --grant ID) --config FILE [--reason TEXT]\n"
            "             revoke a person's grants at the provider (incident response)\n"
            "  sessions list [--user ID | --email E] --config FILE [--json]\n"
            "             who is signed in: session id, person, role, browser, started, last\n"
            "             seen, expires\n"
            "  sessions end (--user ID | --email E | --session-id-prefix P | --all)\n"
            "               --config FILE [--reason TEXT]\n"
            "             sign them out everywhere at once (audited); exit 0 done, 1 no\n"
            "             session matched, 2 usage/config, 3 gateway unreachable\n"
            "  store migrate --config FILE\n"
            "             bring the store's schema up to date (the gateway also does it at\n"
            "             start; safe beside running instances)\n"
            "  doctor [--config FILE]\n"
            "             check a deployment against its providers before the first sign-in:\n"
            "             ok|warn|fail per check with a fix; exit 0 nothing failed, 1 failed\n"
            "  version    the version, and the libraries' it was built with and runs with\n"
            "  help       this text (also -h, --help)\n");
    return out == stderr ? 2 : 0;
}

/* scopegate's version, then one line per library: the version it runs with and the one it
 * was built with ("-" where the library cannot say which runs). */
static int version(void)
{
    void (*const libs[])(sg_lib_version_t *) = {
        sg_http_client_lib_version, sg_crypto_lib_version, sg_version_cjson,
        sg_config_lib_version,      sg_httpd_lib_version,  sg_store_sqlite_lib_version,
        sg_store_pg_lib_version,
    };
    printf("scopegate %s\n", sg_version());
    printf("%-14s %-10s %s\n", "library", "running", "built with");
    for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
        sg_lib_version_t v = {0};
        libs[i](&v);
        printf("%-14s %-10s %s\n", v.name, v.running[0] ? v.running : "-", v.built);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0)
        return version();
    if (strcmp(argv[1], "serve") == 0)
        return sg_cmd_serve(argc - 2, argv + 2);
    if (strcmp(argv[1], "policy") == 0)
        return sg_cli_policy(argc - 1, argv + 1);
    if (strcmp(argv[1], "grants") == 0)
        return sg_cli_grants(argc - 1, argv + 1);
    if (strcmp(argv[1], "sessions") == 0)
        return sg_cli_sessions(argc - 1, argv + 1);
    if (strcmp(argv[1], "config") == 0)
        return sg_cli_config(argc - 1, argv + 1);
    if (strcmp(argv[1], "store") == 0)
        return sg_cli_store(argc - 1, argv + 1);
    if (strcmp(argv[1], "doctor") == 0)
        return sg_cli_doctor(argc - 1, argv + 1);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0)
        return usage(stdout);
    fprintf(stderr, "scopegate: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
