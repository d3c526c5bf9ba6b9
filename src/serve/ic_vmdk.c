/* ic_vmdk.c: CID/UUIDs, descriptors and the byte-exact monolithicSparse layout of a disk. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "ic_vmdk.h"

/* Fixed parts of the layout (VMDK.md section 2). */
#define IC_SECT 512u
#define IC_SPARSE_MAGIC 0x564d444bu        /* "KDMV" read little-endian */
#define IC_SPARSE_VERSION 1u               /* VirtualBox rejects 2 */
#define IC_SPARSE_FLAGS 0x3u               /* newline test + redundant grain directory */
#define IC_DESC_OFFSET 1u
#define IC_DESC_SECTORS 20u
#define IC_GTES_PER_GT 512u
#define IC_GT_SECTORS 4u                   /* 512 entries of 4 bytes */
#define IC_ENTRIES_PER_SECT (IC_SECT / 4u) /* 128 u32 entries in one sector */
#define IC_RGD_OFFSET (IC_DESC_OFFSET + IC_DESC_SECTORS)
#define IC_GRAIN_MIN 4096u
#define IC_GRAIN_MAX (1u << 20)

/* SCSI (lsilogic) geometry. */
#define IC_GEO_HEADS 255u
#define IC_GEO_SPT 63u
#define IC_GEO_CYL_MAX 65535u

#define IC_NIL_UUID "00000000-0000-0000-0000-000000000000"

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

/* ---- identity --------------------------------------------------------------- */

/* BLAKE2b-128 of the seed, personalised per field so that no two fields are related.
 * Cannot fail: the output length (16) and the empty key are within BLAKE2b's bounds. */
static void derive_field(const void *seed, size_t seed_len, const char *personal,
			 uint8_t out[16])
{
	unsigned char pers[crypto_generichash_blake2b_PERSONALBYTES] = { 0 };

	memcpy(pers, personal, strnlen(personal, sizeof(pers)));
	(void)crypto_generichash_blake2b_salt_personal(out, 16, seed, seed_len, NULL, 0,
						       NULL, pers);
}

/* RFC 4122 version 4 / variant 1 bits, so that the UUIDs look like ordinary random ones. */
static void mark_uuid_v4(uint8_t u[16])
{
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
}

void ic_vmdk_ident_derive(const void *seed, size_t seed_len, struct ic_vmdk_ident *id)
{
	uint8_t h[16];

	derive_field(seed, seed_len, "imgchain.vm.cid", h);
	id->cid = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
		  (uint32_t)h[3] << 24;
	/* 0xffffffff means "no parent" and 0 "never written": neither may name a disk. */
	if (id->cid == 0 || id->cid == 0xffffffffu)
		id->cid ^= 1;
	derive_field(seed, seed_len, "imgchain.vm.uuid", id->uuid);
	derive_field(seed, seed_len, "imgchain.vm.img", id->uuid_image);
	derive_field(seed, seed_len, "imgchain.vm.mod", id->uuid_modification);
	derive_field(seed, seed_len, "imgchain.vm.lcid", id->long_content_id);
	mark_uuid_v4(id->uuid);
	mark_uuid_v4(id->uuid_image);
	mark_uuid_v4(id->uuid_modification);
	/* Big-endian, so that the 32 hex digits of ddb.longContentID end with CID's 8. */
	id->long_content_id[12] = (uint8_t)(id->cid >> 24);
	id->long_content_id[13] = (uint8_t)(id->cid >> 16);
	id->long_content_id[14] = (uint8_t)(id->cid >> 8);
	id->long_content_id[15] = (uint8_t)id->cid;
}

/* ---- descriptors ------------------------------------------------------------ */

/* VMware's ddb.uuid: "xx xx xx xx xx xx xx xx-xx xx xx xx xx xx xx xx". */
static void fmt_vmware_uuid(char out[48], const uint8_t u[16])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 3 * i, 4, "%02x%s", u[i], i == 15 ? "" : i == 7 ? "-" : " ");
}

/* VirtualBox's ddb.uuid.*: "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx". */
static void fmt_uuid(char out[37], const uint8_t u[16])
{
	char *p = out;

	for (int i = 0; i < 16; i++) {
		p += sprintf(p, "%02x", u[i]);
		if (i == 3 || i == 5 || i == 7 || i == 9)
			*p++ = '-';
	}
	*p = '\0';
}

static void fmt_hex(char out[33], const uint8_t u[16])
{
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", u[i]);
}

static uint32_t geometry_cylinders(uint64_t sectors)
{
	uint64_t c = sectors / (IC_GEO_HEADS * IC_GEO_SPT);

	if (c < 1)
		return 1;
	return c > IC_GEO_CYL_MAX ? IC_GEO_CYL_MAX : (uint32_t)c;
}

/* A file name goes between double quotes on one line of the descriptor. */
static bool extent_name_ok(const char *name)
{
	if (!name || !*name)
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == '"' || *p == 0x7f)
			return false;
	return true;
}

struct desc_params {
	const char *create_type;    /* "vmfs" or "monolithicSparse" */
	const char *extent_type;    /* "VMFS" or "SPARSE" */
	const char *extent_name;
	uint64_t sectors;
	bool thin;
};

/* Layout every consumer accepts: "# Disk DescriptorFile" first, version=1 as the first
 * non-comment line (qemu's probe), CID= before parentCID= (qemu's string search), then
 * the extent, then the ddb keys including the four that VirtualBox adds if missing. */
static int format_descriptor(char *buf, size_t cap, const struct desc_params *dp,
			     const struct ic_vmdk_ident *id)
{
	char uuid[48], image[37], mod[37], lcid[33];
	int n;

	fmt_vmware_uuid(uuid, id->uuid);
	fmt_uuid(image, id->uuid_image);
	fmt_uuid(mod, id->uuid_modification);
	fmt_hex(lcid, id->long_content_id);
	n = snprintf(buf, cap,
		     "# Disk DescriptorFile\n"
		     "version=1\n"
		     "encoding=\"UTF-8\"\n"
		     "CID=%08" PRIx32 "\n"
		     "parentCID=ffffffff\n"
		     "createType=\"%s\"\n"
		     "\n"
		     "# Extent description\n"
		     "RW %" PRIu64 " %s \"%s\"\n"
		     "\n"
		     "# The Disk Data Base\n"
		     "#DDB\n"
		     "\n"
		     "ddb.adapterType = \"lsilogic\"\n"
		     "ddb.geometry.cylinders = \"%" PRIu32 "\"\n"
		     "ddb.geometry.heads = \"%u\"\n"
		     "ddb.geometry.sectors = \"%u\"\n"
		     "ddb.longContentID = \"%s\"\n"
		     "%s"
		     "ddb.uuid = \"%s\"\n"
		     "ddb.uuid.image = \"%s\"\n"
		     "ddb.uuid.modification = \"%s\"\n"
		     "ddb.uuid.parent = \"" IC_NIL_UUID "\"\n"
		     "ddb.uuid.parentmodification = \"" IC_NIL_UUID "\"\n"
		     "ddb.virtualHWVersion = \"4\"\n",
		     id->cid, dp->create_type, dp->sectors, dp->extent_type, dp->extent_name,
		     geometry_cylinders(dp->sectors), IC_GEO_HEADS, IC_GEO_SPT, lcid,
		     dp->thin ? "ddb.thinProvisioned = \"1\"\n" : "", uuid, image, mod);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= cap)
		return -ENOSPC;
	return n;
}

/* Also -EINVAL for an empty disk or a name that cannot be quoted in the descriptor. */
int ic_vmdk_flat_descriptor(char *buf, size_t cap, uint64_t disk_size, const char *flat_name,
			    const struct ic_vmdk_ident *id)
{
	struct desc_params dp = {
		.create_type = "vmfs",
		.extent_type = "VMFS",
		.extent_name = flat_name,
		.sectors = div_up(disk_size, IC_SECT),
		.thin = true,
	};

	if (disk_size == 0 || !extent_name_ok(flat_name))
		return -EINVAL;
	return format_descriptor(buf, cap, &dp, id);
}

/* ---- sparse layout ------------------------------------------------------------ */

static bool grain_bytes_ok(uint32_t g)
{
	return g >= IC_GRAIN_MIN && g <= IC_GRAIN_MAX && (g & (g - 1)) == 0;
}

/* Also -EINVAL for an empty disk, a bad grain size or an unquotable name, and
 * -ENAMETOOLONG when the descriptor does not fit s->descriptor. */
int ic_vmdk_sparse_init(struct ic_vmdk_sparse *s, uint64_t disk_size, uint32_t grain_bytes,
			const char *file_name, const struct ic_vmdk_ident *id)
{
	struct desc_params dp = { .create_type = "monolithicSparse", .extent_type = "SPARSE",
				  .extent_name = file_name, .thin = false };
	uint64_t tables, end;
	int n;

	memset(s, 0, sizeof(*s));
	if (disk_size == 0 || !grain_bytes_ok(grain_bytes) || !extent_name_ok(file_name))
		return -EINVAL;
	/* Sector numbers are 32-bit: refuse early, before any product can overflow. */
	if (disk_size > (uint64_t)UINT32_MAX * IC_SECT)
		return -EFBIG;
	s->disk_size = disk_size;
	s->capacity = div_up(disk_size, IC_SECT);
	s->grain = grain_bytes / IC_SECT;
	s->n_grains = div_up(s->capacity, s->grain);
	s->n_gts = div_up(s->n_grains, IC_GTES_PER_GT);
	s->gd_sectors = div_up(s->n_gts * 4, IC_SECT);
	tables = IC_GT_SECTORS * s->n_gts;
	s->rgd_offset = IC_RGD_OFFSET;
	s->gd_offset = s->rgd_offset + s->gd_sectors + tables;
	s->overhead = div_up(s->gd_offset + s->gd_sectors + tables, s->grain) * s->grain;
	end = s->overhead + s->grain * s->n_grains;
	if (end > UINT32_MAX)
		return -EFBIG;
	s->max_file_size = end * IC_SECT;
	s->file_size = s->max_file_size;
	dp.sectors = s->capacity;
	n = format_descriptor(s->descriptor, sizeof(s->descriptor), &dp, id);
	if (n < 0)
		return n == -ENOSPC ? -ENAMETOOLONG : n;
	s->descriptor_len = (size_t)n;
	return 0;
}

int ic_vmdk_sparse_set_alloc(struct ic_vmdk_sparse *s, const struct ic_rank *alloc)
{
	if (alloc->n != s->n_grains || alloc->count > s->n_grains)
		return -EINVAL;
	s->alloc = alloc;
	s->file_size = (s->overhead + s->grain * alloc->count) * IC_SECT;
	return 0;
}

static void build_header(const struct ic_vmdk_sparse *s, uint8_t *out)
{
	memset(out, 0, IC_SECT);
	put_le32(out + 0, IC_SPARSE_MAGIC);
	put_le32(out + 4, IC_SPARSE_VERSION);
	put_le32(out + 8, IC_SPARSE_FLAGS);
	put_le64(out + 12, s->capacity);
	put_le64(out + 20, s->grain);
	put_le64(out + 28, IC_DESC_OFFSET);
	put_le64(out + 36, IC_DESC_SECTORS);
	put_le32(out + 44, IC_GTES_PER_GT);
	put_le64(out + 48, s->rgd_offset);
	put_le64(out + 56, s->gd_offset);
	put_le64(out + 64, s->overhead);
	out[72] = 0;                /* uncleanShutdown */
	out[73] = '\n';             /* damage by a text-mode transfer shows here */
	out[74] = ' ';
	out[75] = '\r';
	out[76] = '\n';
	put_le16(out + 77, 0);      /* compressAlgorithm: none */
}

static void build_desc_sector(const struct ic_vmdk_sparse *s, uint64_t k, uint8_t *out)
{
	uint64_t from = k * IC_SECT;

	memset(out, 0, IC_SECT);
	if (from < sizeof(s->descriptor))
		memcpy(out, s->descriptor + from, sizeof(s->descriptor) - from < IC_SECT ?
			    sizeof(s->descriptor) - from : IC_SECT);
}

/* Sector k of a grain directory whose tables start at sector gt_base. */
static void build_dir_sector(const struct ic_vmdk_sparse *s, uint64_t k, uint64_t gt_base,
			     uint8_t *out)
{
	for (uint32_t j = 0; j < IC_ENTRIES_PER_SECT; j++) {
		uint64_t i = k * IC_ENTRIES_PER_SECT + j;

		put_le32(out + 4 * j, i < s->n_gts ? (uint32_t)(gt_base + IC_GT_SECTORS * i) : 0);
	}
}

/* Sector t of the grain tables (both copies are identical): 128 entries at a time.  A
 * stored grain's entry is its place among the stored grains: one rank, then counting. */
static void build_gt_sector(const struct ic_vmdk_sparse *s, uint64_t t, uint8_t *out)
{
	uint64_t g = t * IC_ENTRIES_PER_SECT;
	uint64_t k = ic_rank_of(s->alloc, g);

	for (uint32_t j = 0; j < IC_ENTRIES_PER_SECT; j++, g++) {
		uint32_t v = 0;

		if (ic_rank_test(s->alloc, g))
			v = (uint32_t)(s->overhead + s->grain * k++);
		put_le32(out + 4 * j, v);
	}
}

/* Sector rel of one copy (directory then tables) starting at sector base. */
static void build_copy_sector(const struct ic_vmdk_sparse *s, uint64_t base, uint64_t rel,
			      uint8_t *out)
{
	if (rel < s->gd_sectors)
		build_dir_sector(s, rel, base + s->gd_sectors, out);
	else
		build_gt_sector(s, rel - s->gd_sectors, out);
}

/* Any sector before the first grain. */
static void build_meta_sector(const struct ic_vmdk_sparse *s, uint64_t lba, uint8_t *out)
{
	uint64_t copy = s->gd_sectors + IC_GT_SECTORS * s->n_gts;

	if (lba == 0)
		build_header(s, out);
	else if (lba < IC_DESC_OFFSET + IC_DESC_SECTORS)
		build_desc_sector(s, lba - IC_DESC_OFFSET, out);
	else if (lba >= s->rgd_offset && lba < s->rgd_offset + copy)
		build_copy_sector(s, s->rgd_offset, lba - s->rgd_offset, out);
	else if (lba >= s->gd_offset && lba < s->gd_offset + copy)
		build_copy_sector(s, s->gd_offset, lba - s->gd_offset, out);
	else
		memset(out, 0, IC_SECT);
}

/* Bytes [off, off+len) of the metadata area; whole sectors are built in place. */
static void read_meta(const struct ic_vmdk_sparse *s, uint8_t *p, size_t len, uint64_t off)
{
	uint8_t sect[IC_SECT];

	while (len) {
		size_t in = (size_t)(off % IC_SECT);
		size_t n = len < IC_SECT - in ? len : IC_SECT - in;

		if (n == IC_SECT) {
			build_meta_sector(s, off / IC_SECT, p);
		} else {
			build_meta_sector(s, off / IC_SECT, sect);
			memcpy(p, sect + in, n);
		}
		p += n;
		off += n;
		len -= n;
	}
}

/* Disk bytes [pos, pos+len); the tail of the last grain past the disk reads as zeros. */
static int read_disk_tail(const struct ic_vmdk_sparse *s, uint8_t *p, size_t len, uint64_t pos,
			  const struct ic_vmdk_source *src)
{
	size_t n = 0;
	int rc;

	if (pos < s->disk_size)
		n = s->disk_size - pos < len ? (size_t)(s->disk_size - pos) : len;
	if (n) {
		rc = src->read_disk(src->arg, p, n, pos);
		if (rc)
			return rc;
	}
	memset(p + n, 0, len - n);
	return 0;
}

/* Bytes [pos, pos+len) of the stored grains (pos counted from the first): grain k of
 * the file is disk grain select(k); one read_disk per run of grains that follow each
 * other on the disk as well as in the file. */
static int read_grains(const struct ic_vmdk_sparse *s, uint8_t *p, size_t len, uint64_t pos,
		       const struct ic_vmdk_source *src)
{
	struct ic_rank_walk w;
	uint64_t at;
	size_t n;

	ic_rank_walk_start(&w, s->alloc, s->grain * IC_SECT, pos, len);
	while (ic_rank_walk_next(&w, &at, &n)) {
		int rc = read_disk_tail(s, p, n, at, src);

		if (rc)
			return rc;
		p += n;
	}
	return 0;
}

int ic_vmdk_sparse_read(const struct ic_vmdk_sparse *s, void *buf, size_t len, uint64_t off,
			const struct ic_vmdk_source *src)
{
	const uint64_t meta_end = s->overhead * IC_SECT;
	uint8_t *p = buf;
	size_t n;

	if (!s->alloc)
		return -ENXIO;
	if (off >= s->file_size) {
		memset(p, 0, len);
		return 0;
	}
	if (len > s->file_size - off) {
		n = (size_t)(s->file_size - off);
		memset(p + n, 0, len - n);
		len = n;
	}
	if (off < meta_end) {
		n = meta_end - off < len ? (size_t)(meta_end - off) : len;
		read_meta(s, p, n, off);
		p += n;
		off += n;
		len -= n;
	}
	if (!len)
		return 0;
	return read_grains(s, p, len, off - meta_end, src);
}
