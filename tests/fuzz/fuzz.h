/*
 * The libFuzzer entry point every target defines. The same target file links either with
 * smoke_main.c (gcc: seeds plus deterministic mutations, run by `meson test`) or with
 * libFuzzer itself (clang -fsanitize=fuzzer) for long, coverage-guided runs.
 * A target calls abort() when a property it checks does not hold.
 */
#ifndef SCOPEGATE_FUZZ_H
#define SCOPEGATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
