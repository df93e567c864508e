/*
 * The REST query resource, GET /services/data/vNN.N/query?q=SOQL, for the one object sfsim
 * models: OauthToken (salesforce.md 7), the evidence the gateway uses to tell an evicted grant from a
 * revoked one. The SOQL subset and its parser are soql.c; this file turns the org's grants
 * into rows and rows into Salesforce's answer.
 *
 * Rows: one per live refresh-token grant (an openid-only sign-in that takes a slot counts,
 * it is a grant too); a revoked, evicted, rotated-out or policy-expired grant is gone, as
 * Salesforce lists active tokens only. AccessToken, DeleteToken and RequestToken are opaque
 * values (an HMAC of the grant's number under a key made at start), never a real token.
 */
#include "sim.h"
#include "soql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/crypto.h"

/* Reference 7: a query of OauthToken returns at most 2500 rows in all. sfsim answers them in
 * one page (done: true) rather than 500 at a time behind nextRecordsUrl. */
#define QUERY_MAX_ROWS 2500

typedef struct {
    size_t grant; /* index in sim_st.grants: the order rows have without ORDER BY */
    soql_row_t row;
    char id[19];
    char token[3][41]; /* AccessToken, DeleteToken, RequestToken */
} qrow_t;

static unsigned char opaque_key[32];
static int opaque_ready;

/* 40 hex characters standing for one of a grant's token fields. */
static int opaque(const char *field, int grant_id, char out[41])
{
    if (!opaque_ready) {
        if (sg_random_bytes(opaque_key, sizeof(opaque_key)) != SG_OK)
            return -1;
        opaque_ready = 1;
    }
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "%s:%d", field, grant_id);
    unsigned char mac[SG_SHA256_LEN];
    if (sg_hmac_sha256(opaque_key, sizeof(opaque_key), msg, (size_t)n, mac) != SG_OK)
        return -1;
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 20; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[40] = '\0';
    return 0;
}

static int fill_row(qrow_t *q, size_t gi)
{
    const sim_grant_t *g = &sim_st.grants[gi];
    const sim_app_t *app = &sim_cfg.apps[g->app];
    soql_cell_t *c = q->row.cell;
    memset(q, 0, sizeof(*q));
    q->grant = gi;
    if (sim_cfg.oauthtoken_id_null) {
        c[SOQL_ID].null = 1;
    } else {
        /* sfsim's own key prefix: Salesforce's for OauthToken is not known (its object
         * reference says the field is null; settings.oauthtoken_id = "null"). */
        char id15[16];
        snprintf(id15, sizeof(id15), "0Xt%012u", (unsigned)g->id % 1000000000u);
        soql_id18(id15, q->id);
        c[SOQL_ID].str = q->id;
    }
    static const char *const names[3] = {"AccessToken", "DeleteToken", "RequestToken"};
    static const soql_field fields[3] = {SOQL_ACCESS_TOKEN, SOQL_DELETE_TOKEN, SOQL_REQUEST_TOKEN};
    for (int i = 0; i < 3; i++) {
        if (opaque(names[i], g->id, q->token[i]))
            return -1;
        c[fields[i]].str = q->token[i];
    }
    c[SOQL_APP_MENU_ITEM_ID].str = app->menu_item_id;
    c[SOQL_APP_NAME].str = app->name;
    c[SOQL_USER_ID].str = sim_cfg.users[g->user].id;
    c[SOQL_CREATED_DATE].num = g->created * 1000;
    c[SOQL_LAST_USED_DATE].num = g->last_used * 1000;
    c[SOQL_USE_COUNT].num = g->use_count;
    return 0;
}

static int row_order(const void *a, const void *b, void *ctx)
{
    const qrow_t *x = *(const qrow_t *const *)a, *y = *(const qrow_t *const *)b;
    int r = soql_compare(ctx, &x->row, &y->row);
    if (r)
        return r;
    return x->grant < y->grant ? -1 : x->grant > y->grant;
}

/* Salesforce's REST error body: [{"message":...,"errorCode":...}]. */
static void rest_error(sg_resp_t *w, unsigned status, const char *code, const char *message)
{
    cJSON *arr = cJSON_CreateArray(), *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "errorCode", code);
    cJSON_AddItemToArray(arr, e);
    sim_resp_json(w, status, arr);
}

static cJSON *record_json(const soql_query_t *sq, const qrow_t *q, const char *version)
{
    cJSON *rec = cJSON_CreateObject();
    cJSON *attr = cJSON_AddObjectToObject(rec, "attributes");
    cJSON_AddStringToObject(attr, "type", SOQL_OBJECT);
    if (!q->row.cell[SOQL_ID].null) {
        /* UNCONFIRMED what attributes holds when Id is null: sfsim leaves the url out. */
        char url[96];
        snprintf(url, sizeof(url), "/services/data/v%s/sobjects/" SOQL_OBJECT "/%s", version,
                 q->id);
        cJSON_AddStringToObject(attr, "url", url);
    }
    for (unsigned i = 0; i < sq->nfields; i++) {
        soql_field f = sq->fields[i];
        const soql_cell_t *c = &q->row.cell[f];
        const char *name = soql_field_names[f];
        char when[32];
        switch (soql_field_type(f)) {
        case SOQL_T_ID:
        case SOQL_T_STRING:
            if (c->null || !c->str)
                cJSON_AddNullToObject(rec, name);
            else
                cJSON_AddStringToObject(rec, name, c->str);
            break;
        case SOQL_T_DATETIME:
            soql_datetime_format(c->num / 1000, when);
            cJSON_AddStringToObject(rec, name, when);
            break;
        case SOQL_T_INT:
            cJSON_AddNumberToObject(rec, name, (double)c->num);
            break;
        }
    }
    return rec;
}

void sim_route_query(sim_req_t *r, sg_resp_t *w, const char *version)
{
    sim_access_t *a = sim_rest_session(r, w);
    if (!a)
        return;
    if (strcmp(r->h->method, "GET") != 0 && strcmp(r->h->method, "HEAD") != 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "HTTP Method '%.16s' not allowed. Allowed are GET,HEAD",
                 r->h->method);
        rest_error(w, 405, "METHOD_NOT_ALLOWED", msg);
        return;
    }
    const char *q = sg_form_get(&r->h->query, "q");
    if (!q || q[strspn(q, " \t\r\n")] == '\0') {
        /* The text Salesforce answers a query without q (observed, MALFORMED_QUERY). */
        rest_error(w, 400, "MALFORMED_QUERY", "A query string has to be specified");
        return;
    }
    size_t len = strlen(q);
    if (len > SOQL_MAX_LEN) {
        char msg[96];
        snprintf(msg, sizeof(msg), "sfsim does not support queries longer than %d characters",
                 SOQL_MAX_LEN);
        rest_error(w, 400, "MALFORMED_QUERY", msg);
        return;
    }
    soql_query_t *sq = malloc(sizeof(*sq));
    if (!sq) {
        rest_error(w, 500, "UNKNOWN_EXCEPTION", "out of memory");
        return;
    }
    soql_error_t err;
    if (soql_parse(q, len, sq, &err) == SOQL_OK && atoi(version) < 32) {
        /* OauthToken exists from API version 32.0 on (its object reference). */
        err.status = SOQL_INVALID_TYPE;
        err.offset = sq->object_offset;
        snprintf(err.text, sizeof(err.text),
                 "sObject type '" SOQL_OBJECT "' is not supported. If you are attempting to use "
                 "a custom object, be sure to append the '__c' after the entity name. Please "
                 "reference your WSDL or the describe call for the appropriate names.");
    }
    if (err.status != SOQL_OK) {
        char msg[1024];
        soql_error_message(q, len, &err, msg, sizeof(msg));
        rest_error(w, 400, soql_error_code(err.status), msg);
        free(sq);
        return;
    }

    /* UNCONFIRMED (salesforce.md 7): a System Administrator's token sees every user's rows (the
     * object reference: users with Customize Application), anyone else only their own;
     * settings.oauthtoken_visibility = "all" shows every row to every token. */
    int see_all = sim_cfg.oauthtoken_visibility_all ||
                  strcmp(sim_cfg.users[a->user].profile, "System Administrator") == 0;
    size_t n = 0;
    for (size_t i = 0; i < sim_st.ngrants; i++) {
        const sim_grant_t *g = &sim_st.grants[i];
        n += g->live && !sim_grant_policy_failure(g) && (see_all || g->user == a->user);
    }
    qrow_t *rows = calloc(n ? n : 1, sizeof(*rows));
    qrow_t **order = calloc(n ? n : 1, sizeof(*order));
    size_t m = 0;
    int failed = !rows || !order;
    for (size_t i = 0; i < sim_st.ngrants && !failed; i++) {
        const sim_grant_t *g = &sim_st.grants[i];
        if (!g->live || sim_grant_policy_failure(g) || !(see_all || g->user == a->user))
            continue;
        qrow_t *row = &rows[m];
        if (fill_row(row, i)) {
            failed = 1;
        } else if (soql_match(sq, &row->row)) {
            order[m] = row;
            m++;
        }
    }
    if (failed) {
        rest_error(w, 500, "UNKNOWN_EXCEPTION", "sfsim could not build the rows");
    } else {
        /* Rows are sorted through pointers: each row's cells point into the row itself. */
        qsort_r(order, m, sizeof(*order), row_order, sq);
        size_t total = m;
        if (sq->limit >= 0 && total > (size_t)sq->limit)
            total = (size_t)sq->limit;
        if (total > QUERY_MAX_ROWS)
            total = QUERY_MAX_ROWS;
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "totalSize", (double)total);
        cJSON_AddBoolToObject(j, "done", 1);
        cJSON *recs = cJSON_AddArrayToObject(j, "records");
        for (size_t i = 0; i < total && recs; i++)
            cJSON_AddItemToArray(recs, record_json(sq, order[i], version));
        sim_resp_json(w, 200, j);
    }
    free(order);
    free(rows);
    free(sq);
}
