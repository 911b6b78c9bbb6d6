#include "crc32c.h"

#include <pthread.h>
#include <string.h>

static uint32_t table[8][256];
static int hardware;
static pthread_once_t prepared = PTHREAD_ONCE_INIT;

/* Slicing by 8: eight table lookups per 8 bytes. */
static void build_table(void) {
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        table[0][byte] = crc;
    }
    for (uint32_t byte = 0; byte < 256; byte++) {
        for (int slice = 1; slice < 8; slice++) {
            uint32_t previous = table[slice - 1][byte];
            table[slice][byte] = (previous >> 8) ^ table[0][previous & 0xFF];
        }
    }
}

static uint32_t software(uint32_t crc, const uint8_t *bytes, size_t length) {
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        word ^= crc;
        crc = table[7][word & 0xFF] ^ table[6][(word >> 8) & 0xFF] ^ table[5][(word >> 16) & 0xFF] ^
              table[4][(word >> 24) & 0xFF] ^ table[3][(word >> 32) & 0xFF] ^ table[2][(word >> 40) & 0xFF] ^
              table[1][(word >> 48) & 0xFF] ^ table[0][word >> 56];
        bytes += 8;
        length -= 8;
    }
    while (length--) crc = table[0][(crc ^ *bytes++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t instruction(uint32_t crc, const uint8_t *bytes, size_t length) {
    uint64_t wide = crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        wide = __builtin_ia32_crc32di(wide, word);
        bytes += 8;
        length -= 8;
    }
    crc = (uint32_t)wide;
    while (length--) crc = __builtin_ia32_crc32qi(crc, *bytes++);
    return crc;
}
#endif

static void prepare(void) {
    build_table();
#if defined(__x86_64__)
    __builtin_cpu_init();
    hardware = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

uint32_t crm_crc32c_portable(uint32_t previous, const uint8_t *bytes, size_t length) {
    pthread_once(&prepared, prepare);
    return ~software(~previous, bytes, length);
}

uint32_t crm_crc32c(uint32_t previous, const uint8_t *bytes, size_t length) {
    pthread_once(&prepared, prepare);
    uint32_t crc = ~previous;
#if defined(__x86_64__)
    if (hardware) return ~instruction(crc, bytes, length);
#endif
    return ~software(crc, bytes, length);
}
