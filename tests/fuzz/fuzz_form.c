/* application/x-www-form-urlencoded parsing (POST bodies and query strings). */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/buf.h"
#include "scopegate/http.h"

/* Encoding a decoded pair and parsing it again must give the same pair back. */
static void check_round_trip(const char *key, const char *value)
{
    char *ek = sg_url_encode(key), *ev = sg_url_encode(value);
    if (!ek || !ev)
        abort();
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    if (sg_buf_printf(&b, "%s=%s", ek, ev))
        abort();
    sg_form_t again;
    if (sg_form_parse(b.ptr, b.len, &again) || again.n != 1)
        abort();
    if (strcmp(again.item[0].key, key) != 0 || strcmp(again.item[0].value, value) != 0)
        abort();
    sg_form_free(&again);
    sg_buf_free(&b);
    free(ek);
    free(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sg_form_t form;
    sg_rc rc = sg_form_parse((const char *)data, size, &form);
    if (rc) {
        if (form.n != 0 || (rc != SG_ERR_PARSE && rc != SG_ERR_TOO_BIG && rc != SG_ERR_NOMEM))
            abort();
        return 0;
    }
    if (form.n > SG_FORM_MAX_FIELDS)
        abort();
    int dup = 0;
    for (size_t i = 0; i < form.n; i++) {
        const char *k = form.item[i].key, *v = form.item[i].value;
        if (!k || !v || !sg_form_get(&form, k))
            abort();
        size_t count = sg_form_count(&form, k);
        if (count == 0)
            abort();
        if (count > 1)
            dup = 1;
        check_round_trip(k, v);
    }
    if (dup != form.has_dup)
        abort();
    sg_form_free(&form);
    return 0;
}
