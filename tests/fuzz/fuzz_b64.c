/* base64 in both alphabets: decoding anything, and encode/decode round trips. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/crypto.h"

static void check_decodes_to(const char *text, const void *want, size_t wantlen)
{
    unsigned char *out;
    size_t outlen;
    if (sg_b64_decode(text, strlen(text), &out, &outlen))
        abort();
    if (outlen != wantlen || (wantlen && memcmp(out, want, wantlen) != 0) || out[outlen])
        abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *out = NULL;
    size_t outlen = 0;
    if (sg_b64_decode((const char *)data, size, &out, &outlen) == SG_OK) {
        if (!out || out[outlen] != '\0' || outlen > size / 4 * 3 + 2)
            abort();
        /* Whatever was accepted re-encodes to a canonical text that decodes the same. */
        char *again = sg_b64_encode(out, outlen, SG_B64_URL);
        if (!again)
            abort();
        check_decodes_to(again, out, outlen);
        free(again);
        free(out);
    } else if (out || outlen) {
        abort();
    }

    for (int alpha = SG_B64_STD; alpha <= SG_B64_URL; alpha++) {
        char *text = sg_b64_encode(data, size, (sg_b64_alphabet)alpha);
        if (!text)
            abort();
        size_t want = alpha == SG_B64_STD ? (size + 2) / 3 * 4 : (size * 4 + 2) / 3;
        if (strlen(text) != want)
            abort();
        check_decodes_to(text, data, size);
        free(text);
    }
    return 0;
}
