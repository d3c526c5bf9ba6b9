/* ic_progress.h: progress lines on a terminal (bytes done, rate, ETA). */
#ifndef IC_PROGRESS_H
#define IC_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct ic_progress {
	bool enabled;               /* stderr is a terminal and not --quiet */
	const char *what;
	uint64_t total;
	double start, last;
	bool shown;
};

void ic_progress_init(struct ic_progress *p, const char *what, uint64_t total, bool quiet);
/* Redraw at most 4 times a second. */
void ic_progress_update(struct ic_progress *p, uint64_t done);
/* Erase the line. */
void ic_progress_done(struct ic_progress *p);

#endif
