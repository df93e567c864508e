/*
 * sfsim: a simulated Salesforce org for scopegate's tests and demo.
 * Usage: sfsim --config FILE --listen 127.0.0.1:PORT   (PORT 0: any free port)
 * The first line on stdout is "sfsim listening on http://127.0.0.1:NNNN".
 */
#include "sim.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
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

/* Parses "127.0.0.1:PORT" or "[::1]:PORT"; loopback addresses only. */
static int parse_listen(const char *s, struct sockaddr_storage *ss)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        if ((ntohl(in4->sin_addr.s_addr) >> 24) != 127)
            return -1;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        host[strlen(host) - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) == 1 &&
            IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)port);
            return 0;
        }
    }
    return -1;
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

    struct sockaddr_storage ss;
    if (parse_listen(listen, &ss)) {
        fprintf(stderr, "sfsim: --listen takes a loopback address and port, e.g. 127.0.0.1:0\n");
        return 2;
    }
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

    unsigned port = 0;
    struct MHD_Daemon *d = sim_server_start((struct sockaddr *)&ss, &port);
    if (!d || !port) {
        fprintf(stderr, "sfsim: cannot listen on %s\n", listen);
        EVP_PKEY_free(sim_key);
        sim_config_free(&sim_cfg);
        return 1;
    }
    char host[64];
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
        snprintf(sim_listen_url, sizeof(sim_listen_url), "http://%s:%u", host, port);
    } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
        snprintf(sim_listen_url, sizeof(sim_listen_url), "http://[%s]:%u", host, port);
    }
    printf("sfsim listening on %s\n", sim_listen_url);
    fflush(stdout);
    sg_log(SG_LOG_INFO, "listening", "org %s, %zu users, %zu apps, issuer %s", sim_cfg.org_id,
           sim_cfg.nusers, sim_cfg.napps, sim_listen_url);

    int sig = 0;
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
        ; /* nothing to reload: /_sim/reset re-reads the config */
    sg_log(SG_LOG_INFO, "stopping", "signal %d", sig);
    MHD_stop_daemon(d);
    sim_state_clear();
    sim_config_free(&sim_cfg);
    EVP_PKEY_free(sim_key);
    return 0;
}
