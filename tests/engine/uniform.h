/* uniform.h — for the engine tests: a xorshift64 stream of floats uniform in [-1, 1), each test
 * file keeping its own state (and so its own repeatable inputs). */
#ifndef SLUICE_TESTS_ENGINE_UNIFORM_H
#define SLUICE_TESTS_ENGINE_UNIFORM_H

#include <stdint.h>

static inline float test_uniform(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (float)((*state >> 40) * (2.0 / 16777216.0) - 1.0);
}

#endif
