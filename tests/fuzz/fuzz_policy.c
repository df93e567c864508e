/*
 * The policy engine on arbitrary input: the text before a line "%%" is a policy, the text
 * after it a claims object. Loading either succeeds without an error or fails with one, every
 * diagnostic points inside the file, and a policy that loads gives every claims object a role
 * (its default rule guarantees one), the same through resolve and explain.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *sep = memmem(text, size, "\n%%\n", 4);
    size_t policy_len = sep ? (size_t)(sep - text) + 1 : size;

    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = NULL;
    sg_rc rc = sg_policy_parse(text, policy_len, "fuzz.cfg", NULL, &p, &d);
    if (rc != SG_OK && rc != SG_ERR_CONFIG)
        abort();
    if ((rc == SG_OK) != (d.errors == 0) || (rc == SG_OK) != (p != NULL))
        abort();
    int lines = 1;
    for (size_t i = 0; i < policy_len; i++)
        lines += text[i] == '\n';
    for (size_t i = 0; i < d.n; i++)
        if (d.item[i].line < 0 || d.item[i].line > lines || !d.item[i].message[0])
            abort();

    if (p && sep) {
        cJSON *claims = cJSON_ParseWithLength(sep + 4, size - policy_len - 3);
        sg_policy_result_t r;
        if (sg_policy_resolve(p, claims, &r) != SG_OK || !r.role || !r.rule)
            abort();
        cJSON *out = NULL;
        if (sg_policy_explain(p, claims, &out) != SG_OK)
            abort();
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(out, "role");
        if (!cJSON_IsString(role) || strcmp(role->valuestring, r.role->name) != 0)
            abort();
        cJSON_Delete(out);
        cJSON_Delete(claims);
    }
    sg_policy_free(p);
    sg_diags_free(&d);
    return 0;
}
