/* imginfo: list a chain's restore points as a tree, or as stable JSON.  Keyless. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ic_cli.h"
#include "imgchain.h"

static const struct ic_cli_opt opts[] = {
	{ "json", 'J', NULL, "machine-readable output (documented in\nimginfo(1); stable)" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imginfo",
	.synopsis =
		"Usage: imginfo [--json] CHAIN\n"
		"List the restore points of CHAIN as a tree: name, kind, parent, creation time\n"
		"(UTC), disk size, stored bytes and block counts.  Needs no key.\n",
	.opts = opts,
	.epilog = "Exit status: 0 ok, 1 error, 2 usage, 4 damaged files found.\n",
};

static void fmt_time(int64_t t, char *buf, size_t len, bool iso)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S", &tm);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static const char *base(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

/* A quiesced point: the snapshot its parent holds, as modified after it was taken. */
static bool post_snapshot(const struct ic_point *p)
{
	return p->img->slot.flags & ICF_SLOT_POST_SNAPSHOT;
}

/* A point folded from the CDP journal (imgconsolidate --fold-cdp): the disk at one of its
 * checkpoints. */
static bool folded(const struct ic_point *p)
{
	return p->img->slot.flags & ICF_SLOT_FOLDED;
}

static void print_json(const struct ic_chain *c)
{
	char t[32];

	printf("{\n  \"format_version\": 1,\n  \"chain\": ");
	json_str(c->dir);
	printf(",\n  \"chain_id\": \"");
	for (int i = 0; i < ICF_ID_LEN; i++)
		printf("%02x", c->chain_id[i]);
	printf("\",\n  \"block_size\": %u,\n  \"points\": [", c->block_size);
	for (size_t i = 0; i < c->npoints; i++) {
		const struct ic_point *p = &c->points[i];
		const struct icf_slot *s = &p->img->slot;
		const struct ic_point *par = p->parent;

		fmt_time(s->created, t, sizeof(t), true);
		printf("%s\n    {\"name\": ", i ? "," : "");
		json_str(s->name);
		printf(", \"seq\": %u, \"parent\": ", s->seq);
		if (par)
			json_str(par->img->slot.name);
		else
			printf("null");
		printf(", \"parent_seq\": %u, \"kind\": \"%s\", \"created\": \"%s\", \"created_unix\": %lld,"
		       " \"disk_size\": %llu, \"stored_bytes\": %llu, \"data_blocks\": %llu,"
		       " \"zero_blocks\": %llu, \"depth\": %u, \"broken\": %s, \"file\": ",
		       s->parent_seq, ic_kind_name(s->kind), t, (long long)s->created,
		       (unsigned long long)s->disk_size, (unsigned long long)s->data_bytes,
		       (unsigned long long)s->n_data, (unsigned long long)s->n_zero, p->depth,
		       p->broken ? "true" : "false");
		json_str(base(p->img->path));
		printf(", \"file_size\": %llu, \"post_snapshot\": %s, \"post_snapshot_of\": ",
		       (unsigned long long)p->img->file_size, post_snapshot(p) ? "true" : "false");
		if (post_snapshot(p) && par)
			json_str(par->img->slot.name);
		else
			printf("null");
		if (folded(p))
			printf(", \"folded\": true, \"cdp_session\": \"%016llx\", \"cdp_checkpoint\": %llu",
			       (unsigned long long)s->fold_session_id,
			       (unsigned long long)s->fold_interval);
		else
			printf(", \"folded\": false, \"cdp_session\": null, \"cdp_checkpoint\": null");
		printf(", \"post_snapshots\": [");
		for (size_t k = 0, m = 0; k < c->npoints; k++)
			if (c->points[k].parent == p && post_snapshot(&c->points[k])) {
				printf("%s", m++ ? ", " : "");
				json_str(c->points[k].img->slot.name);
			}
		printf("]}");
	}
	printf("\n  ],\n  \"bad_files\": [");
	for (size_t i = 0; i < c->nbad; i++) {
		printf("%s\n    {\"file\": ", i ? "," : "");
		json_str(base(c->bad[i].path));
		printf(", \"error\": ");
		json_str(c->bad[i].why);
		printf("}");
	}
	printf("%s]\n}\n", c->nbad ? "\n  " : "");
}

static void print_row(const struct ic_point *p, const char *prefix, const char *branch)
{
	const struct icf_slot *s = &p->img->slot;
	char t[32], d[32], st[32], label[256], note[200] = "";

	fmt_time(s->created, t, sizeof(t), false);
	snprintf(label, sizeof(label), "%s%s%s", prefix, branch, s->name);
	/* printf pads bytes, not characters: count UTF-8 continuation bytes of the tree art */
	int extra = 0;

	for (const char *q = label; *q; q++)
		extra += ((unsigned char)*q & 0xc0) == 0x80;
	if (post_snapshot(p) && p->parent)
		snprintf(note, sizeof(note), "  (post-snapshot of %s)", p->parent->img->slot.name);
	else if (post_snapshot(p))
		snprintf(note, sizeof(note), "  (post-snapshot; its snapshot is not in the chain)");
	else if (folded(p))
		snprintf(note, sizeof(note), "  (CDP session %016llx, checkpoint %llu)",
			 (unsigned long long)s->fold_session_id, (unsigned long long)s->fold_interval);
	printf("%-*s %-15s %-16s %-19s %10s %10s %9llu %8llu%s%s\n", 28 + extra, label,
	       ic_kind_name(s->kind),
	       p->parent ? p->parent->img->slot.name : "-", t,
	       ic_human_bytes(s->disk_size, d, sizeof(d)), ic_human_bytes(s->data_bytes, st, sizeof(st)),
	       (unsigned long long)s->n_data, (unsigned long long)s->n_zero,
	       p->broken ? "  (BROKEN: parent missing)" : "", note);
}

static void print_tree(const struct ic_chain *c, const struct ic_point *p, const char *prefix,
		       bool last, bool root)
{
	char next[512];
	size_t nkids = 0, k = 0;

	print_row(p, prefix, root ? "" : (last ? "└─ " : "├─ "));
	snprintf(next, sizeof(next), "%s%s", prefix, root ? "" : (last ? "   " : "│  "));
	for (size_t i = 0; i < c->npoints; i++)
		nkids += c->points[i].parent == p;
	for (size_t i = 0; i < c->npoints; i++)
		if (c->points[i].parent == p)
			print_tree(c, &c->points[i], next, ++k == nkids, false);
}

static void print_text(const struct ic_chain *c)
{
	uint64_t stored = 0;
	char b[32], bs[32];

	for (size_t i = 0; i < c->npoints; i++)
		stored += c->points[i].img->file_size;
	printf("%s: chain id ", c->dir);
	for (int i = 0; i < 8; i++)
		printf("%02x", c->chain_id[i]);
	printf("..., block size %s, %zu point%s, %s on disk\n",
	       ic_human_bytes(c->block_size, bs, sizeof(bs)), c->npoints, c->npoints == 1 ? "" : "s",
	       ic_human_bytes(stored, b, sizeof(b)));
	printf("%-28s %-15s %-16s %-19s %10s %10s %9s %8s\n", "NAME", "KIND", "PARENT",
	       "CREATED (UTC)", "DISK", "STORED", "DATA", "ZERO");
	for (size_t i = 0; i < c->npoints; i++)
		if (!c->points[i].parent)
			print_tree(c, &c->points[i], "", true, true);
	for (size_t i = 0; i < c->nbad; i++)
		printf("damaged file: %s\n", c->bad[i].why);
}

int main(int argc, char **argv)
{
	struct ic_chain *c;
	struct ic_s3_chain *sc = NULL;
	const char *dir;
	bool json = false;
	int ch, ret;

	ic_progname = cli.prog;
	ic_no_dumps();
	while ((ch = ic_cli_next(&cli, argc, argv)) > 0)
		if (ch == 'J')
			json = true;
	if (ch < 0)
		return cli.status;
	if (argc - cli.optind != 1)
		return ic_cli_usage("expected CHAIN");
	/* s3://BUCKET/PREFIX: each image's first 4 KiB (header and slots), cached */
	ret = ic_s3_chain_arg(argv[cli.optind], false, IC_S3_NEED_HEADER, NULL, 0, &sc, &dir);
	if (!ret)
		ret = ic_chain_open(dir, &c);
	if (!ret && sc) {
		char *url = strdup(argv[cli.optind]);   /* reported as the user named it */

		if (url) {
			free(c->dir);
			c->dir = url;
		}
	}
	if (ret) {
		ic_s3_chain_close(sc);
		return ic_report(ret);
	}
	if (!c->npoints && !c->nbad) {
		ic_chain_free(c);
		ic_s3_chain_close(sc);
		ic_fail(-ENOENT, "%s: no restore points (not a chain?)", argv[cli.optind]);
		return ic_report(-ENOENT);
	}
	if (json)
		print_json(c);
	else
		print_text(c);
	ret = c->nbad ? IC_EXIT_CORRUPT : IC_EXIT_OK;
	ic_chain_free(c);
	ic_s3_chain_close(sc);
	return ret;
}
