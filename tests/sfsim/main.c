/*
 * sfsim: a simulated Salesforce org for scopegate's tests and demo.
 * Usage: sfsim --config FILE --listen 127.0.0.1:PORT   (PORT 0: any free port)
 * The first line on stdout is "sfsim listening on http://127.0.0.1:NNNN".
 */
#include "sim.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/jose.h"
#include "scopegate/log.h"

EVP_PKEY *sim_key;
const char *sim_config_path;
char sim_listen_url[128];

static int usage(void)
{
    fprintf(stderr, "usage: sfsim --config FILE --listen 127.0.0.1:PORT [--log-level LEVEL]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *listen = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            int lvl = sg_log_level_parse(argv[++i]);
            if (lvl < 0)
                return usage();
            sg_log_set_level((sg_log_level)lvl);
        } else {
            return usage();
        }
    }
    if (!config || !listen)
        return usage();

    char err[1024];
    if (sim_config_load(config, &sim_cfg, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    sim_config_path = config;
    sim_state_clear();

    if (sim_cfg.key_file && *sim_cfg.key_file) {
        sim_key = sg_pem_load_private(sim_cfg.key_file);
        if (!sim_key) {
            fprintf(stderr, "%s: error: cannot read key_file '%s'\n", config, sim_cfg.key_file);
            sim_config_free(&sim_cfg);
            return 1;
        }
    } else {
        sim_key = sg_rsa_generate(2048);
    }
    if (!sim_key) {
        fprintf(stderr, "sfsim: cannot create a signing key\n");
        sim_config_free(&sim_cfg);
        return 1;
    }

    /* Signals are taken by sigwait below; MHD's threads inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* A thread per connection: a test double whose handlers sleep on purpose (delay faults). */
    sg_httpd_opts_t opts = {.name = "sfsim",
                            .listen = listen,
                            .loopback_only = 1,
                            .thread_per_connection = 1,
                            .max_conns = 2000,
                            .max_uri = 16 * 1024, /* its own 4,000-character SOQL limit answers */
                            .max_body = SIM_BODY_MAX,
                            .handler = sim_handle,
                            .done = sim_request_done};
    sg_httpd_t *d = NULL;
    if (sg_httpd_start(&opts, &d, err, sizeof(err))) {
        fprintf(stderr, "sfsim: %s\n", err);
        EVP_PKEY_free(sim_key);
        sim_config_free(&sim_cfg);
        return 2;
    }
    snprintf(sim_listen_url, sizeof(sim_listen_url), "%s", sg_httpd_url(d));
    printf("sfsim listening on %s\n", sim_listen_url);
    fflush(stdout);
    sg_log(SG_LOG_INFO, "listening", "org %s, %zu users, %zu apps, issuer %s", sim_cfg.org_id,
           sim_cfg.nusers, sim_cfg.napps, sim_listen_url);

    int sig = 0;
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
        ; /* nothing to reload: /_sim/reset re-reads the config */
    sg_log(SG_LOG_INFO, "stopping", "signal %d", sig);
    sg_httpd_stop(d, 2000);
    sim_state_clear();
    sim_config_free(&sim_cfg);
    EVP_PKEY_free(sim_key);
    return 0;
}
