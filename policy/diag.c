/* Diagnostics of a policy load (the list itself is base's, scopegate/diag.h). */
#include "policy_int.h"
#include "scopegate/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_policy_diag(sg_policy_ctx_t *c, int line, sg_diag_severity sev, const char *fmt, ...)
{
    if (c->d->n >= SG_POLICY_MAX_DIAGS)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    sg_vtextf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->d->n == SG_POLICY_MAX_DIAGS - 1) {
        /* The last slot says why the list ends; it counts as an error so loading fails. */
        snprintf(msg, sizeof(msg), "too many problems; fix these first");
        sev = SG_DIAG_ERROR;
    }
    if (sg_diags_add(c->d, c->file, line, sev, "%s", msg) != 0)
        c->nomem = 1;
}

void sg_names_init(sg_names_t *n)
{
    n->text[0] = '\0';
    n->cut = 0;
}

void sg_names_add(sg_names_t *n, const char *name)
{
    if (n->cut)
        return;
    size_t used = strlen(n->text);
    const char *sep = used ? ", " : "";
    /* Room is kept for ", ..." so the cut always shows. */
    if (used + strlen(sep) + strlen(name) + sizeof(", ...") <= sizeof(n->text)) {
        snprintf(n->text + used, sizeof(n->text) - used, "%s%s", sep, name);
        return;
    }
    snprintf(n->text + used, sizeof(n->text) - used, "%s...", sep);
    n->cut = 1;
}
