/*
 * The audit log: one JSON object per line in state_dir/audit.log, appended and flushed per
 * event, so security staff can prove afterwards who got which role and which grant was used.
 * Every line has "ts" (RFC 3339, UTC, milliseconds) and "event"; the rest are string fields
 * the caller names. Values are never tokens, codes, secrets or cookies: callers pass ids.
 * sg_audit_reopen (on SIGHUP) lets logrotate move the file away.
 */
#ifndef SCOPEGATE_AUDIT_H
#define SCOPEGATE_AUDIT_H

#include "scopegate/rc.h"

typedef struct sg_audit sg_audit_t;

/* Opens (creating mode 0600) path for appending. */
sg_rc sg_audit_open(const char *path, sg_audit_t **out);
void sg_audit_close(sg_audit_t *a);
sg_rc sg_audit_reopen(sg_audit_t *a);

/* With several instances on one store: every line from now on carries "instance": id. */
void sg_audit_set_instance(sg_audit_t *a, const char *id);

/*
 * Writes one line: event, then NULL-terminated pairs of field names and values (a NULL value
 * is written as JSON null), e.g.
 *   sg_audit(a, "signin", "result", "ok", "user_id", id, "role", "admin", NULL);
 * A name starting with '#' ("#grant_id") writes its value as a JSON number (the '#' dropped).
 * A NULL a is allowed (no audit log): nothing happens.
 */
void sg_audit(sg_audit_t *a, const char *event, ...) __attribute__((sentinel));

#endif
