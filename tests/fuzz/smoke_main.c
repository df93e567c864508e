/*
 * A stand-in for libFuzzer's main, so every target runs in `meson test` with plain gcc:
 *
 *   fuzz_X CORPUS_DIR     run each seed, then FUZZ_SMOKE_ITERATIONS (default 20000)
 *                         deterministic mutations of them; prints TAP, one line per phase
 *   fuzz_X FILE...        run just these inputs (to replay a crash)
 *
 * Mutations come from a fixed-seed xorshift generator, so a failure reproduces exactly.
 * There is no coverage feedback: this is a smoke test that every build runs, not a
 * replacement for a libFuzzer campaign (see tests/fuzz/README.md). When a sanitizer or a target's own
 * check kills the process, the input at fault is written to fuzz-crash-NAME in the current
 * directory and echoed to stderr.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef SG_FUZZ_NAME
#define SG_FUZZ_NAME "fuzz"
#endif

#define SMOKE_MAX_LEN      4096
#define DEFAULT_ITERATIONS 20000
#define POOL_SIZE          64 /* recent mutants, mutated again for deeper changes */

typedef struct {
    uint8_t *data;
    size_t len;
    char *name; /* seeds only: where it came from */
} input_t;

/* The driver has no use for a half-run: out of memory ends it (exit 2, not a test failure). */
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        perror("malloc");
        exit(2);
    }
    return p;
}

/* ---- reporting the input that killed us ---- */

static const uint8_t *current;
static size_t current_len;
static char current_what[4200]; /* the seed's path, or "mutation N" */

static void put(int fd, const char *s)
{
    ssize_t r = write(fd, s, strlen(s));
    (void)r;
}

/* Async-signal-safe: only open, write and close. */
static void dump_current(void)
{
    static const char hex[] = "0123456789abcdef";
    if (!current)
        return;
    int fd = open("fuzz-crash-" SG_FUZZ_NAME, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        ssize_t r = write(fd, current, current_len);
        (void)r;
        close(fd);
    }
    put(2, "\n" SG_FUZZ_NAME ": failed on ");
    put(2, current_what);
    put(2, "; input written to fuzz-crash-" SG_FUZZ_NAME ", as C: \"");
    int escaped = 0; /* a hex digit right after \xNN would extend the escape */
    for (size_t i = 0; i < current_len && i < 1024; i++) {
        uint8_t c = current[i];
        int hexdigit = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || (escaped && hexdigit)) {
            char esc[5] = {'\\', 'x', hex[c >> 4], hex[c & 15], 0};
            put(2, esc);
            escaped = 1;
        } else {
            char one[2] = {(char)c, 0};
            put(2, one);
            escaped = 0;
        }
    }
    put(2, current_len > 1024 ? "\"...\n" : "\"\n");
}

static void on_abort(int sig)
{
    dump_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Called by ASan/UBSan before they end the process; absent in a build without them. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void run(const uint8_t *data, size_t len, const char *what, long n)
{
    if (n >= 0)
        snprintf(current_what, sizeof(current_what), "%s %ld", what, n);
    else
        snprintf(current_what, sizeof(current_what), "%s", what);
    /* An exactly-sized heap copy, so a read one past the end is caught by ASan. */
    uint8_t *copy = xmalloc(len);
    memcpy(copy, data, len);
    current = copy;
    current_len = len;
    LLVMFuzzerTestOneInput(copy, len);
    current = NULL;
    free(copy);
}

/* ---- inputs ---- */

static int read_file(const char *path, input_t *in)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    in->name = NULL;
    in->data = xmalloc(SMOKE_MAX_LEN);
    in->len = fread(in->data, 1, SMOKE_MAX_LEN, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(in->data);
        in->data = NULL;
        return -1;
    }
    return 0;
}

static int is_seed_name(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Every regular file of dir, in name order so runs are reproducible. */
static size_t load_corpus(const char *dir, input_t **out)
{
    struct dirent **names;
    int n = scandir(dir, &names, is_seed_name, alphasort);
    *out = NULL;
    if (n < 0)
        return 0;
    input_t *seeds = xmalloc(((size_t)n + 1) * sizeof(*seeds));
    size_t count = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && read_file(path, &seeds[count]) == 0) {
            seeds[count].name = xmalloc(strlen(path) + 1);
            strcpy(seeds[count].name, path);
            count++;
        }
        free(names[i]);
    }
    free(names);
    *out = seeds;
    return count;
}

/* ---- deterministic mutations ---- */

static uint64_t rng = 0x5eed5eed5eed5eedULL;

static uint64_t next(void)
{
    /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dULL;
}

static size_t below(size_t n)
{
    return n ? (size_t)(next() % n) : 0;
}

/* Bytes the parsers under test treat specially. */
static const uint8_t interesting[] = {
    '%', '=', '&', '+', ';', ':', '.', ' ', '\t', '\n', '"', '\\', '{',  '}',  '[',  ']',  ',',
    '-', '_', '/', '0', '9', 'A', 'f', 'g', 's',  'm',  'h', 'd',  0x00, 0x7f, 0x80, 0xc3, 0xff};

static uint8_t some_byte(void)
{
    return next() & 1 ? (uint8_t)next() : interesting[below(sizeof(interesting))];
}

static void insert(uint8_t *buf, size_t *len, size_t at, const uint8_t *src, size_t n)
{
    if (*len + n > SMOKE_MAX_LEN)
        n = SMOKE_MAX_LEN - *len;
    memmove(buf + at + n, buf + at, *len - at);
    memcpy(buf + at, src, n);
    *len += n;
}

static void mutate_once(uint8_t *buf, size_t *len, const input_t *seeds, size_t nseeds)
{
    size_t at = below(*len + 1);
    switch (below(9)) {
    case 0: /* flip one bit */
        if (*len)
            buf[below(*len)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* overwrite a byte */
        if (*len)
            buf[below(*len)] = some_byte();
        break;
    case 2: { /* insert a few bytes */
        uint8_t tmp[8];
        size_t n = 1 + below(sizeof(tmp));
        for (size_t i = 0; i < n; i++)
            tmp[i] = some_byte();
        insert(buf, len, at, tmp, n);
        break;
    }
    case 3: { /* delete a range */
        size_t n = 1 + below(16);
        if (at + n > *len)
            n = *len - at;
        memmove(buf + at, buf + at + n, *len - at - n);
        *len -= n;
        break;
    }
    case 4: { /* duplicate a piece of itself somewhere else */
        if (!*len)
            break;
        size_t from = below(*len), n = 1 + below(*len - from);
        uint8_t tmp[SMOKE_MAX_LEN];
        memcpy(tmp, buf + from, n);
        insert(buf, len, at, tmp, n);
        break;
    }
    case 5: { /* splice: this input's head, another seed's tail */
        const input_t *o = &seeds[below(nseeds)];
        size_t from = below(o->len + 1), n = o->len - from;
        *len = at;
        insert(buf, len, at, o->data + from, n);
        break;
    }
    case 6: { /* cross over: a piece of another seed inserted here */
        const input_t *o = &seeds[below(nseeds)];
        if (!o->len)
            break;
        size_t from = below(o->len), n = 1 + below(o->len - from);
        insert(buf, len, at, o->data + from, n);
        break;
    }
    case 7: /* truncate */
        *len = at;
        break;
    default: { /* repeat one byte, for long runs of digits, escapes and separators */
        uint8_t tmp[64];
        size_t n = 1 + below(sizeof(tmp));
        memset(tmp, *len ? buf[below(*len)] : some_byte(), n);
        insert(buf, len, at, tmp, n);
        break;
    }
    }
}

static long iterations(void)
{
    const char *s = getenv("FUZZ_SMOKE_ITERATIONS");
    if (!s || !*s)
        return DEFAULT_ITERATIONS;
    char *end;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || *end || n < 0) {
        fprintf(stderr, "FUZZ_SMOKE_ITERATIONS: not a count: %s\n", s);
        exit(2);
    }
    return n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int smoke(const char *dir)
{
    input_t *seeds;
    size_t nseeds = load_corpus(dir, &seeds);
    int ok = nseeds > 0;
    long n = iterations();
    double t0 = now();

    printf("1..2\n");
    fflush(stdout); /* a crash must not swallow what was already said */
    for (size_t i = 0; i < nseeds; i++)
        run(seeds[i].data, seeds[i].len, seeds[i].name, -1);
    if (nseeds)
        printf("ok 1 - %s_seeds # %zu seeds\n", SG_FUZZ_NAME, nseeds);
    else
        printf("not ok 1 - %s_seeds # no seeds in %s\n", SG_FUZZ_NAME, dir);
    fflush(stdout);

    if (!nseeds) { /* mutate from one empty input rather than not at all */
        free(seeds);
        seeds = xmalloc(sizeof(*seeds));
        seeds[0] = (input_t){xmalloc(1), 0, NULL};
        nseeds = 1;
    }
    input_t pool[POOL_SIZE] = {{NULL, 0, NULL}};
    size_t npool = 0;
    uint8_t buf[SMOKE_MAX_LEN];
    double t1 = now();
    for (long i = 0; i < n; i++) {
        const input_t *src = npool && next() % 2 ? &pool[below(npool)] : &seeds[below(nseeds)];
        size_t len = src->len;
        memcpy(buf, src->data, len);
        for (size_t k = 1 + below(4); k > 0; k--)
            mutate_once(buf, &len, seeds, nseeds);
        run(buf, len, "mutation", i);
        /* Keep some mutants around as starting points, overwriting the oldest. */
        if (i % 8 == 0) {
            input_t *slot = &pool[npool < POOL_SIZE ? npool++ : (size_t)(i / 8) % POOL_SIZE];
            free(slot->data);
            slot->data = xmalloc(len);
            memcpy(slot->data, buf, len);
            slot->len = len;
        }
    }
    printf("ok 2 - %s_mutations # %ld inputs in %.1f s (seeds %.2f s)\n", SG_FUZZ_NAME, n,
           now() - t1, t1 - t0);

    for (size_t i = 0; i < npool; i++)
        free(pool[i].data);
    for (size_t i = 0; i < nseeds; i++) {
        free(seeds[i].data);
        free(seeds[i].name);
    }
    free(seeds);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR | FILE...\n", argv[0]);
        return 2;
    }
    signal(SIGABRT, on_abort);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(dump_current);

    struct stat st;
    if (argc == 2 && stat(argv[1], &st) == 0 && S_ISDIR(st.st_mode))
        return smoke(argv[1]);

    printf("1..%d\n", argc - 1);
    for (int i = 1; i < argc; i++) {
        input_t in;
        if (read_file(argv[i], &in)) {
            fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
            return 2;
        }
        run(in.data, in.len, argv[i], -1);
        printf("ok %d - %s %s\n", i, SG_FUZZ_NAME, argv[i]);
        fflush(stdout);
        free(in.data);
    }
    return 0;
}
