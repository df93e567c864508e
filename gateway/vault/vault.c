/*
 * The vault (see include/scopegate/vault.h): offline grants at rest in the store, access
 * tokens in memory, one refresh per grant in flight, and the fallback chain.
 *
 * This file is its life: sg_vault_open reads the options (with their defaults) into the
 * struct, which owns the keys, the integrations and their entries, the grants' entries, the
 * webhook and the keep-alive threads; sg_vault_close stops the threads, writes the uses still
 * counted and frees it all. The other jobs have files of their own: vault_int.h lists them.
 */
#include "vault_int.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define DEFAULT_TTL        900
#define DEFAULT_WAIT_MS    15000
#define DEFAULT_WEBHOOK_MS 5000

static void integ_free(integ_t *in)
{
    free(in->name);
    free(in->app);
    free(in->username);
    free(in->org_id);
    sg_vault_entry_free(in->e);
}

sg_rc sg_vault_open(const sg_vault_opts_t *opts, sg_vault_t **out)
{
    *out = NULL;
    if (!opts || !opts->store || !opts->key || !opts->provider)
        return SG_ERR_CONFIG;
    for (size_t i = 0; i < opts->nintegrations; i++) {
        const sg_integration_t *in = &opts->integrations[i];
        if (!in->name || !in->app || !in->username || !in->key)
            return SG_ERR_CONFIG;
    }
    sg_vault_t *v = calloc(1, sizeof *v);
    if (!v)
        return SG_ERR_NOMEM;
    if (pthread_mutex_init(&v->lock, NULL) != 0) {
        free(v);
        return SG_ERR_NOMEM;
    }
    pthread_condattr_t ca;
    int ok = pthread_condattr_init(&ca) == 0;
    if (ok) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        ok = pthread_mutex_init(&v->ka_mu, NULL) == 0;
        if (ok && pthread_cond_init(&v->ka_tick_cv, &ca) != 0) {
            pthread_mutex_destroy(&v->ka_mu);
            ok = 0;
        }
        if (ok && pthread_cond_init(&v->ka_work_cv, NULL) != 0) {
            pthread_cond_destroy(&v->ka_tick_cv);
            pthread_mutex_destroy(&v->ka_mu);
            ok = 0;
        }
        pthread_condattr_destroy(&ca);
    }
    if (!ok) {
        pthread_mutex_destroy(&v->lock);
        free(v);
        return SG_ERR_NOMEM;
    }
    v->health = opts->health;
    v->query_timeout_ms =
        opts->webhook_timeout_ms > 0 ? opts->webhook_timeout_ms : DEFAULT_WEBHOOK_MS;
    v->store = opts->store;
    v->shared = opts->shared_store;
    memcpy(v->key, opts->key, SG_AEAD_KEY_LEN);
    sg_aead_key_id(v->key, v->key_id);
    v->provider = opts->provider;
    v->ctx = opts->ctx;
    v->on_event = opts->on_event;
    v->ttl = opts->token_ttl > 0 ? opts->token_ttl : DEFAULT_TTL;
    v->wait_ms = opts->wait_ms > 0 ? opts->wait_ms : DEFAULT_WAIT_MS;
    sg_rc rc = SG_ERR_NOMEM;
    if (opts->nold && opts->old_keys) {
        v->old = calloc(opts->nold, sizeof *v->old);
        v->old_id = calloc(opts->nold, sizeof *v->old_id);
        if (!v->old || !v->old_id)
            goto fail;
        for (size_t i = 0; i < opts->nold; i++) {
            memcpy(v->old[i], opts->old_keys[i], SG_AEAD_KEY_LEN);
            sg_aead_key_id(v->old[i], v->old_id[i]);
        }
        v->nold = opts->nold;
    }
    if (opts->nintegrations) {
        v->integ = calloc(opts->nintegrations, sizeof *v->integ);
        if (!v->integ)
            goto fail;
        for (size_t i = 0; i < opts->nintegrations; i++) {
            const sg_integration_t *src = &opts->integrations[i];
            integ_t *in = &v->integ[v->ninteg++];
            in->name = strdup(src->name);
            in->app = strdup(src->app);
            in->username = strdup(src->username);
            in->org_id = sg_vault_dup_or_null(src->org_id);
            in->key = src->key;
            in->e = sg_vault_entry_new(0);
            if (!in->name || !in->app || !in->username || (src->org_id && !in->org_id) || !in->e)
                goto fail;
        }
    }
    if (opts->webhook_url && *opts->webhook_url) {
        long t = opts->webhook_timeout_ms > 0 ? opts->webhook_timeout_ms : DEFAULT_WEBHOOK_MS;
        rc = sg_webhook_start(opts->webhook_url, t, &v->hook);
        if (rc)
            goto fail;
    }
    if (opts->health) {
        rc = sg_vault_keepalive_start(v, opts);
        if (rc)
            goto fail;
    }
    *out = v;
    return SG_OK;
fail:
    sg_vault_close(v);
    return rc;
}

void sg_vault_close(sg_vault_t *v)
{
    if (!v)
        return;
    sg_vault_keepalive_stop(v); /* first: its workers use everything below */
    sg_webhook_stop(v->hook);
    sg_vault_flush_all(v);
    for (size_t b = 0; b < NBUCKETS; b++) {
        entry_t *e = v->table[b];
        while (e) {
            entry_t *next = e->next;
            sg_vault_entry_free(e);
            e = next;
        }
    }
    for (size_t i = 0; i < v->ninteg; i++)
        integ_free(&v->integ[i]);
    free(v->integ);
    if (v->old)
        OPENSSL_cleanse(v->old, v->nold * sizeof *v->old);
    free(v->old);
    free(v->old_id);
    OPENSSL_cleanse(v->key, sizeof v->key);
    free(v->ka_workers);
    free(v->ka_q);
    pthread_cond_destroy(&v->ka_tick_cv);
    pthread_cond_destroy(&v->ka_work_cv);
    pthread_mutex_destroy(&v->ka_mu);
    pthread_mutex_destroy(&v->lock);
    free(v);
}
