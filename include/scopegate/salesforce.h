/*
 * Facts about Salesforce that more than one part of scopegate needs (the policy linter, the
 * simulator): kept once, here, with their source in docs/salesforce.md.
 */
#ifndef SCOPEGATE_SALESFORCE_H
#define SCOPEGATE_SALESFORCE_H

/* scopes_supported of login.salesforce.com's discovery document (salesforce.md 1.3), NULL-ended. */
extern const char *const sg_salesforce_scopes[];
/* claims_supported of the same document, NULL-ended. */
extern const char *const sg_salesforce_claims[];

/* Is scope one of sg_salesforce_scopes? */
int sg_salesforce_scope_known(const char *scope);

#endif
