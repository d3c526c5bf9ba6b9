/* ic_disk.c: a restore point's disk files (raw, VMDK pair, sparse VMDK, info.json). */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ic_disk.h"
#include "ic_rank.h"
#include "ic_util.h"
#include "ic_vmdk.h"

#define DESC_CAP 4096u
#define INFO_CAP 2048u

struct ic_disk {
	struct ic_disk_info info;
	char desc[DESC_CAP];
	size_t desc_len;
	char json[INFO_CAP];
	size_t json_len;
	bool has_sparse;
	struct ic_vmdk_sparse sparse;
	struct ic_rank grains;      /* the sparse file's stored grains, from the first attach */
	int sized;                  /* grains built (atomic: sizes are asked without mu) */
	struct ic_cache_src *src;   /* non-NULL while attached */
};

static const char *const file_names[IC_DISK_NFILES] = {
	[IC_DISK_RAW] = "disk.raw",
	[IC_DISK_FLAT] = "disk-flat.vmdk",
	[IC_DISK_DESC] = "disk.vmdk",
	[IC_DISK_SPARSE] = "disk-sparse.vmdk",
	[IC_DISK_INFO] = "info.json",
};

const char *ic_disk_file_name(enum ic_disk_file f)
{
	return (unsigned)f < IC_DISK_NFILES ? file_names[f] : NULL;
}

int ic_disk_file_from_name(const char *name)
{
	for (int f = 0; f < IC_DISK_NFILES; f++)
		if (!strcmp(name, file_names[f]))
			return f;
	return -1;
}

/* Every file: the metadata files too, so that what they show (from the slot) is shown only
 * once the point's seal, which authenticates it, passed: the view is attached only then. */
bool ic_disk_needs_view(enum ic_disk_file f)
{
	return (unsigned)f < IC_DISK_NFILES;
}

void ic_disk_info_from_point(const struct ic_chain *c, const struct ic_point *p,
			     struct ic_disk_info *out)
{
	const struct icf_slot *s = &p->img->slot;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", s->name);
	if (p->parent)
		snprintf(out->parent, sizeof(out->parent), "%s", ic_point_name(p->parent));
	out->seq = s->seq;
	out->parent_seq = s->parent_seq;
	out->kind = s->kind;
	out->created = s->created;
	out->disk_size = s->disk_size;
	out->block_size = c->block_size;
	memcpy(out->chain_id, c->chain_id, ICF_ID_LEN);
}

/* Seed of a VMDK identity: the chain, the point, and which file (the flat pair and the
 * sparse file are different disks to a hypervisor, so they must not share UUIDs). */
static void ident_for(const struct ic_disk_info *in, const char *which, struct ic_vmdk_ident *id)
{
	uint8_t seed[ICF_ID_LEN + 4 + 16];
	uint32_t seq = htole32(in->seq);

	memset(seed, 0, sizeof(seed));
	memcpy(seed, in->chain_id, ICF_ID_LEN);
	memcpy(seed + ICF_ID_LEN, &seq, 4);
	memcpy(seed + ICF_ID_LEN + 4, which, strnlen(which, 16));
	ic_vmdk_ident_derive(seed, sizeof(seed), id);
}

/* Point names are [A-Za-z0-9._+:-] (ic_name_valid), yet escape as if they were not. */
static size_t json_str(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	if (cap < 3)
		return 0;
	out[n++] = '"';
	for (; *s && n + 8 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			n += (size_t)snprintf(out + n, cap - n, "\\%c", ch);
		else if (ch < 0x20)
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
		else
			out[n++] = (char)ch;
	}
	out[n++] = '"';
	out[n] = '\0';
	return n;
}

static int build_json(struct ic_disk *d)
{
	const struct ic_disk_info *in = &d->info;
	char name[300], parent[300], iso[32], chain[2 * ICF_ID_LEN + 1];
	time_t t = (time_t)in->created;
	struct tm tm;
	int n;

	json_str(name, sizeof(name), in->name);
	if (in->parent[0])
		json_str(parent, sizeof(parent), in->parent);
	else
		snprintf(parent, sizeof(parent), "null");
	gmtime_r(&t, &tm);
	strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
	for (int i = 0; i < ICF_ID_LEN; i++)
		snprintf(chain + 2 * i, 3, "%02x", in->chain_id[i]);
	n = snprintf(d->json, sizeof(d->json),
		     "{\n"
		     "  \"name\": %s,\n"
		     "  \"seq\": %" PRIu32 ",\n"
		     "  \"parent\": %s,\n"
		     "  \"parent_seq\": %" PRIu32 ",\n"
		     "  \"kind\": \"%s\",\n"
		     "  \"created\": \"%s\",\n"
		     "  \"created_unix\": %lld,\n"
		     "  \"disk_size\": %" PRIu64 ",\n"
		     "  \"block_size\": %" PRIu32 ",\n"
		     "  \"chain_id\": \"%s\",\n"
		     "  \"sparse_vmdk\": %s\n"
		     "}\n",
		     name, in->seq, parent, in->parent_seq, ic_kind_name(in->kind), iso,
		     (long long)in->created, in->disk_size, in->block_size, chain,
		     d->has_sparse ? "true" : "false");
	if (n < 0 || (size_t)n >= sizeof(d->json))
		return -ENAMETOOLONG;
	d->json_len = (size_t)n;
	return 0;
}

int ic_disk_new(const struct ic_disk_info *info, struct ic_disk **out)
{
	struct ic_disk *d = calloc(1, sizeof(*d));
	struct ic_vmdk_ident id;
	int ret;

	if (!d)
		return -ENOMEM;
	d->info = *info;
	ident_for(info, "flat", &id);
	ret = ic_vmdk_flat_descriptor(d->desc, sizeof(d->desc), info->disk_size,
				      file_names[IC_DISK_FLAT], &id);
	if (ret < 0)
		goto fail;
	d->desc_len = (size_t)ret;
	ident_for(info, "sparse", &id);
	ret = ic_vmdk_sparse_init(&d->sparse, info->disk_size, IC_DISK_SPARSE_GRAIN,
				  file_names[IC_DISK_SPARSE], &id);
	if (ret && ret != -EFBIG)
		goto fail;
	d->has_sparse = ret == 0;
	ret = build_json(d);
	if (ret)
		goto fail;
	*out = d;
	return 0;
fail:
	free(d);
	return ic_fail(ret, "restore point '%s': cannot describe its disk: %s", info->name,
		       strerror(-ret));
}

void ic_disk_free(struct ic_disk *d)
{
	if (!d)
		return;
	ic_disk_detach(d);
	ic_rank_free(&d->grains);
	free(d);
}

const struct ic_disk_info *ic_disk_get_info(const struct ic_disk *d)
{
	return &d->info;
}

bool ic_disk_has(const struct ic_disk *d, enum ic_disk_file f)
{
	if (f == IC_DISK_SPARSE)
		return d->has_sparse;
	return (unsigned)f < IC_DISK_NFILES;
}

static bool sparse_sized(const struct ic_disk *d)
{
	return __atomic_load_n(&d->sized, __ATOMIC_ACQUIRE);
}

bool ic_disk_sized(const struct ic_disk *d, enum ic_disk_file f)
{
	return f != IC_DISK_SPARSE || !d->has_sparse || sparse_sized(d);
}

uint64_t ic_disk_size(const struct ic_disk *d, enum ic_disk_file f)
{
	switch (f) {
	case IC_DISK_RAW:
		return d->info.disk_size;
	case IC_DISK_FLAT:
		return (d->info.disk_size + 511) / 512 * 512;
	case IC_DISK_DESC:
		return d->desc_len;
	case IC_DISK_SPARSE:
		if (!d->has_sparse)
			return 0;
		return sparse_sized(d) ? d->sparse.file_size : d->sparse.max_file_size;
	case IC_DISK_INFO:
		return d->json_len;
	default:
		return 0;
	}
}

/* Units of unit bytes that hold data in v: those overlapping a block the point maps to
 * a record (a zero block, mapped or not, holds none).  From the private indexes the
 * seal was checked on, by the streaming merge: O(entries x log depth), no disk read.
 * A block larger than a unit marks every unit it covers (its all-zero units too: only
 * decoding would tell them apart). */
struct alloc_arg {
	struct ic_rank *r;
	uint64_t unit;
	uint32_t block_size;
};

static int alloc_block(void *arg, const struct ic_block_ref *ref)
{
	struct alloc_arg *a = arg;
	uint64_t start = ref->e.pos * a->block_size, len = ref->e.plain_len;

	if (len)
		ic_rank_set_range(a->r, start / a->unit, (start + len - 1) / a->unit + 1);
	return 0;
}

static int alloc_map(const struct ic_view *v, uint64_t unit, struct ic_rank *r)
{
	struct alloc_arg a = { .r = r, .unit = unit, .block_size = v->block_size };
	int ret = ic_rank_init(r, (v->disk_size + unit - 1) / unit);

	if (ret)
		return ret;
	ret = ic_view_walk(v, alloc_block, &a);
	if (ret) {
		ic_rank_free(r);
		return ret;
	}
	ic_rank_seal(r);
	return 0;
}

/* The sparse file's grains, once per disk: a point's content never changes, so every
 * later attach (another view of the same point) would find the same ones. */
static int size_sparse(struct ic_disk *d, const struct ic_view *v)
{
	int ret;

	if (!d->has_sparse || sparse_sized(d))
		return 0;
	ret = alloc_map(v, IC_DISK_SPARSE_GRAIN, &d->grains);
	if (!ret)
		ret = ic_vmdk_sparse_set_alloc(&d->sparse, &d->grains);
	if (ret) {
		ic_rank_free(&d->grains);
		return ic_fail(ret, "restore point '%s': disk-sparse.vmdk: %s", d->info.name,
			       ic_last_error(ret));
	}
	__atomic_store_n(&d->sized, 1, __ATOMIC_RELEASE);
	return 0;
}

int ic_disk_attach(struct ic_disk *d, struct ic_cache *cache, const struct ic_view *v)
{
	int ret;

	if (d->src)
		return 0;
	if (v->disk_size != d->info.disk_size)
		return ic_fail(-EINVAL, "restore point '%s': view does not match the disk",
			       d->info.name);
	ret = size_sparse(d, v);
	if (ret)
		return ret;
	d->src = ic_cache_src_new(cache, v);
	if (!d->src)
		return ic_fail(-errno, "restore point '%s': %s", d->info.name, strerror(errno));
	return 0;
}

void ic_disk_detach(struct ic_disk *d)
{
	ic_cache_src_free(d->src);
	d->src = NULL;
}

/* ---- reads ------------------------------------------------------------------------- */

struct sparse_arg {
	struct ic_disk *d;
	struct ic_cache_stream *st;
};

static int sparse_read_disk(void *arg, void *buf, size_t len, uint64_t off)
{
	struct sparse_arg *a = arg;

	return ic_cache_read(a->d->src, a->st, buf, len, off);
}

static size_t clamp(uint64_t size, size_t len, uint64_t off)
{
	if (off >= size)
		return 0;
	return size - off < len ? (size_t)(size - off) : len;
}

ssize_t ic_disk_read(struct ic_disk *d, enum ic_disk_file f, struct ic_cache_stream *st,
		     void *buf, size_t len, uint64_t off)
{
	size_t n;
	int ret;

	if (!ic_disk_has(d, f))
		return -ENOENT;
	n = clamp(ic_disk_size(d, f), len, off);
	if (!n)
		return 0;
	if (ic_disk_needs_view(f) && !d->src)
		return ic_fail(-ENXIO, "restore point '%s': disk not attached", d->info.name);
	switch (f) {
	case IC_DISK_RAW:
		ret = ic_cache_read(d->src, st, buf, n, off);
		break;
	case IC_DISK_FLAT: {
		/* the disk, then zeros to the end of its last sector */
		size_t in = (size_t)clamp(d->info.disk_size, n, off);

		ret = in ? ic_cache_read(d->src, st, buf, in, off) : 0;
		memset((char *)buf + in, 0, n - in);
		break;
	}
	case IC_DISK_DESC:
		memcpy(buf, d->desc + off, n);
		ret = 0;
		break;
	case IC_DISK_INFO:
		memcpy(buf, d->json + off, n);
		ret = 0;
		break;
	case IC_DISK_SPARSE: {
		struct sparse_arg a = { .d = d, .st = st };
		struct ic_vmdk_source src = {
			.read_disk = sparse_read_disk,
			.arg = &a,
		};

		ret = ic_vmdk_sparse_read(&d->sparse, buf, n, off, &src);
		break;
	}
	default:
		ret = -ENOENT;
	}
	return ret ? ret : (ssize_t)n;
}
