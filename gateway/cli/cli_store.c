/*
 * `scopegate store migrate --config FILE`: brings the store's schema up to date by hand (the
 * gateway also does it when it starts). For PostgreSQL it migrates under the same advisory
 * lock as a starting instance, so it is safe beside running instances; for SQLite it opens
 * the database in state_dir, which migrates it.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "scopegate/config.h"
#include "scopegate/store.h"

static int usage(FILE *out)
{
    fprintf(out, "usage: scopegate store migrate --config FILE\n"
                 "  brings the store's schema up to date (the gateway also does it at start)\n");
    return out == stderr ? 2 : 0;
}

static int migrate(const char *config)
{
    sg_config_t cfg;
    char err[4096];
    if (sg_config_load(config, &cfg, err, sizeof(err))) {
        fprintf(stderr, "%s", err);
        return 2;
    }
    int status = 0;
    if (cfg.store) {
        int from = 0, to = 0;
        if (sg_store_migrate_pg(cfg.store, cfg.store_password_file, &from, &to, err, sizeof(err))) {
            fprintf(stderr, "scopegate: store migrate: %s\n", err);
            status = 1;
        } else if (from == to) {
            printf("store: PostgreSQL schema version %d, up to date\n", to);
        } else {
            printf("store: PostgreSQL schema migrated from version %d to %d\n", from, to);
        }
    } else {
        char path[4200];
        snprintf(path, sizeof(path), "%s/scopegate.db", cfg.state_dir);
        sg_store_t *st = NULL;
        if (sg_store_open_sqlite(path, &st, err, sizeof(err))) {
            fprintf(stderr, "scopegate: store migrate: %s: %s\n", path, err);
            status = 1;
        } else {
            st->ops->close(st);
            printf("store: SQLite %s, up to date\n", path);
        }
    }
    sg_config_free(&cfg);
    return status;
}

int sg_cli_store(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(stdout);
    if (strcmp(argv[1], "migrate") != 0)
        return sg_cli_usage_error(usage, "unknown store command '%s'", argv[1]);
    const char *config = NULL;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        int took = sg_cli_take_option(argc, argv, &i, "--config", &v);
        if (took && !v)
            return sg_cli_usage_error(usage, "--config needs a FILE");
        if (!took)
            return sg_cli_usage_error(usage, "unknown option '%s'", argv[i]);
        config = v;
    }
    if (!config)
        return sg_cli_usage_error(usage, "store migrate needs --config FILE");
    return migrate(config);
}
