#include "scopegate/text.h"

#include <stdio.h>
#include <string.h>

#define CUT_MARK "..."

/* The largest length <= end at which s (valid UTF-8 up to end) can be cut without leaving
 * half a character behind. */
static size_t whole_chars(const char *s, size_t end)
{
    size_t i = end;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return end; /* not UTF-8 at all: bytes are characters */
    unsigned char lead = (unsigned char)s[i - 1];
    size_t len = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return i - 1 + len > end ? i - 1 : end;
}

/* dst holds the first cap - 1 bytes of a longer text: end it with the mark, on a character
 * boundary (without the mark when even that does not fit). */
static void mark_cut(char *dst, size_t cap)
{
    size_t mark = sizeof CUT_MARK - 1;
    if (cap <= mark + 1) {
        dst[whole_chars(dst, cap - 1)] = '\0';
        return;
    }
    memcpy(dst + whole_chars(dst, cap - 1 - mark), CUT_MARK, mark + 1);
}

sg_text_fit sg_vtextf(char *dst, size_t cap, const char *fmt, va_list ap)
{
    if (!dst || cap == 0)
        return SG_TEXT_CUT;
    int n = vsnprintf(dst, cap, fmt, ap);
    if (n < 0) {
        dst[0] = '\0';
        return SG_TEXT_CUT;
    }
    if ((size_t)n < cap)
        return SG_TEXT_WHOLE;
    mark_cut(dst, cap);
    return SG_TEXT_CUT;
}

sg_text_fit sg_textf(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sg_text_fit fit = sg_vtextf(dst, cap, fmt, ap);
    va_end(ap);
    return fit;
}

sg_text_fit sg_text_clean(char *dst, size_t cap, const char *src)
{
    if (!dst || cap == 0)
        return SG_TEXT_CUT;
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    dst[i] = '\0';
    if (!src || !src[i])
        return SG_TEXT_WHOLE;
    mark_cut(dst, cap);
    return SG_TEXT_CUT;
}
