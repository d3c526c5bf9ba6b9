/* ic_mem.h: small memory facts shared by every layer. */
#ifndef IC_MEM_H
#define IC_MEM_H

#include <stddef.h>

/* True when buf[len] is all zero (fast). */
int ic_is_zero(const void *buf, size_t len);

#endif
