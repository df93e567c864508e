/*
 * Facts about Salesforce that more than one part of scopegate needs (the policy linter, the
 * simulator), and the REST pieces with which the vault reads an org's OauthToken records:
 * kept once, here, with their source in docs/salesforce.md. Protocol only: plain values in,
 * plain values out (the HTTP call is the caller's).
 */
#ifndef SCOPEGATE_SALESFORCE_H
#define SCOPEGATE_SALESFORCE_H

#include <stddef.h>

/* scopes_supported of login.salesforce.com's discovery document (salesforce.md 1.3), NULL-ended. */
extern const char *const sg_salesforce_scopes[];
/* claims_supported of the same document, NULL-ended. */
extern const char *const sg_salesforce_claims[];

/* Is scope one of sg_salesforce_scopes? */
int sg_salesforce_scope_known(const char *scope);

/* ---- the OauthToken query (salesforce.md 7) --------------------------------------------- */

/*
 * The SOQL that reads a person's OauthToken records (Id, UserId, AppName, CreatedDate), of
 * one app when app_name is not NULL, with the values quoted; written to out, cut at outlen.
 * 0, or -1 when out of memory.
 */
int sg_salesforce_oauthtoken_soql(char *out, size_t outlen, const char *user_id,
                                  const char *app_name);
/* The URL that runs soql at the REST API's query resource of instance_url (heap), or NULL
 * when out of memory. */
char *sg_salesforce_query_url(const char *instance_url, const char *soql);
/*
 * Reads a query's answer (len bytes of body; NULL is empty): *rows records, *count of them
 * with a CreatedDate (Salesforce's "2026-11-27T10:00:00.000+0000", or Z, or +hh:mm) at or after
 * since, in epoch seconds (an unreadable date reads as -1). 0, or -1 when the answer has no
 * records array (then *count and *rows are left alone).
 */
int sg_salesforce_count_since(const char *body, size_t len, long long since, long long *count,
                              long long *rows);

#endif
