/* ic_progress.c: a one-line progress display on stderr. */
#include "config.h"

#include <stdio.h>
#include <unistd.h>

#include "ic_progress.h"
#include "ic_util.h"

void ic_progress_init(struct ic_progress *p, const char *what, uint64_t total, bool quiet)
{
	p->enabled = !quiet && isatty(STDERR_FILENO);
	p->what = what;
	p->total = total;
	p->start = p->last = ic_now();
	p->shown = false;
}

void ic_progress_update(struct ic_progress *p, uint64_t done)
{
	double now = ic_now(), el, rate;
	char a[32], b[32], r[32];

	if (!p->enabled || now - p->last < 0.25)
		return;
	p->last = now;
	el = now - p->start;
	rate = el > 0 ? (double)done / el : 0;
	fprintf(stderr, "\r%s: %s / %s  %3.0f%%  %s/s", p->what, ic_human_bytes(done, a, sizeof(a)),
		ic_human_bytes(p->total, b, sizeof(b)),
		p->total ? 100.0 * (double)done / (double)p->total : 100.0,
		ic_human_bytes((uint64_t)rate, r, sizeof(r)));
	if (rate > 0 && done < p->total) {
		double eta = (double)(p->total - done) / rate;

		fprintf(stderr, "  ETA %dm%02ds", (int)eta / 60, (int)eta % 60);
	}
	fputs("\033[K", stderr);
	p->shown = true;
}

void ic_progress_done(struct ic_progress *p)
{
	if (p->shown)
		fputs("\r\033[K", stderr);
	p->shown = false;
}
