/* ic_array.h: the one growable array of the library (amortised doubling; -ENOMEM, never
 * abort).
 *
 *	IC_ARRAY(uint32_t) seqs = { 0 };	(or a member: IC_ARRAY(struct x) xs;)
 *	(a named type: struct seqs IC_ARRAY_BODY(uint32_t);)
 *	if ((ret = ic_array_push(&seqs, 7)))	0 or -ENOMEM, the array unchanged
 *		goto out;
 *	for (size_t i = 0; i < seqs.n; i++) ... seqs.v[i] ...
 *	ic_array_free(&seqs);
 *
 * A failed push leaves the array as it was (still to be freed).  v is NULL while nothing
 * was pushed. */
#ifndef IC_ARRAY_H
#define IC_ARRAY_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A test build may define IC_ARRAY_REALLOC before including this header, to make the
 * growth fail on purpose. */
#ifndef IC_ARRAY_REALLOC
#define IC_ARRAY_REALLOC realloc
#endif

#define IC_ARRAY_BODY(T)                                                                           \
	{                                                                                          \
		T *v;                                                                              \
		size_t n, cap;                                                                     \
	}
/* An array variable or member; a named type for arrays passed around:
 * `struct seqs IC_ARRAY_BODY(uint32_t);` */
#define IC_ARRAY(T) struct IC_ARRAY_BODY(T)

/* Make room for need elements of esz bytes in the array whose pointer is at pv (a T **,
 * passed as void * so that one function serves every T) and whose capacity is *cap: 0 or
 * -ENOMEM (nothing changed).  The macros below use it; an array kept in fields of other
 * names (a public struct's `T *points; size_t npoints;`) adds a capacity field and calls
 * it directly. */
static inline int ic_array_grow(void *pv, size_t *cap, size_t need, size_t esz)
{
	void *v, *nv;
	size_t ncap = *cap ? *cap : 8;

	if (need <= *cap)
		return 0;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -ENOMEM;
		ncap *= 2;
	}
	if (ncap > SIZE_MAX / esz)
		return -ENOMEM;
	memcpy(&v, pv, sizeof(v));
	nv = IC_ARRAY_REALLOC(v, ncap * esz);
	if (!nv)
		return -ENOMEM;
	memcpy(pv, &nv, sizeof(nv));
	*cap = ncap;
	return 0;
}

/* Room for n more elements (v[a->n .. a->n + more) may then be written): 0 or -ENOMEM. */
#define ic_array_reserve(a, more)                                                                  \
	ic_array_grow(&(a)->v, &(a)->cap, (a)->n + (more), sizeof(*(a)->v))

/* Append x: 0, or -ENOMEM with the array unchanged. */
#define ic_array_push(a, x)                                                                        \
	(ic_array_reserve(a, 1) ? -ENOMEM : ((a)->v[(a)->n++] = (x), 0))

/* A pointer to a new zeroed element at the end, or NULL (out of memory). */
#define ic_array_add(a)                                                                            \
	(ic_array_reserve(a, 1) ? NULL                                                             \
				: memset(&(a)->v[(a)->n++], 0, sizeof(*(a)->v)))

#define ic_array_free(a)                                                                           \
	do {                                                                                       \
		free((a)->v);                                                                      \
		(a)->v = NULL;                                                                     \
		(a)->n = (a)->cap = 0;                                                             \
	} while (0)

#endif
