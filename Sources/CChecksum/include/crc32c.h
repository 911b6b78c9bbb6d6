#ifndef CRM_CRC32C_H
#define CRM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli) of `length` bytes at `bytes`, continuing from `previous` (the checksum of
   what came before, 0 at the start). Uses the CPU's crc32 instruction when it has one (SSE 4.2),
   a table otherwise; both give the same result. */
uint32_t crm_crc32c(uint32_t previous, const uint8_t *bytes, size_t length);
/* The same by the table alone (to check one path against the other). */
uint32_t crm_crc32c_portable(uint32_t previous, const uint8_t *bytes, size_t length);

#endif
