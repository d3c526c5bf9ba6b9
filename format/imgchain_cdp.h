/* imgchain_cdp.h: the continuous data protection journal (FORMAT.md section 15).
 * Little-endian, packed; FORMAT.md is normative. */
#ifndef IMGCHAIN_CDP_H
#define IMGCHAIN_CDP_H

#include <stdint.h>

#define ICF_CDP_DIR "cdp"
#define ICF_CDP_SUFFIX ".cdp"
#define ICF_CDP_MAGIC "ICCDPJ01"
#define ICF_CDP_VERSION 2u		/* written; version 1 journals are still read */
#define ICF_CDP_CKPT_V1 128u		/* a checkpoint frame's bytes in version 1 */
#define ICF_CDP_CKPT_V2 160u		/* in version 2: + the map seal (FORMAT.md 15.5) */
#define ICF_CDP_HEADER_SIZE 4096u
#define ICF_CDP_REC_MAGIC 0x524a4349u	/* "ICJR" little-endian */
#define ICF_CDP_CKPT_MAGIC 0x434a4349u	/* "ICJC" little-endian */
#define ICF_CDP_ORIGIN 1u		/* the origin every journal record's AD names */

struct icf_cdp_header {
	char magic[8];
	uint32_t version;
	uint32_t block_size;
	uint8_t chain_id[16];
	uint8_t key_check[16];
	uint32_t session;
	uint16_t keygen;
	uint16_t base_kind;
	uint64_t session_id;
	uint64_t disk_size;
	int64_t created;
	uint32_t gap_prev;		/* 0, or the session before a gap (FORMAT.md 15.4) */
	uint32_t gap_since_ns;
	int64_t gap_since;		/* when that session stopped journalling */
	uint8_t reserved0[928];
	uint8_t mac0[32];		/* offset 1024 */
	uint8_t reserved1[3032];
	uint64_t hdr_hash;		/* offset 4088 */
} __attribute__((packed));

struct icf_cdp_rec {
	uint32_t magic;
	uint16_t kind;
	uint16_t reserved0;
	uint64_t pos;
	uint64_t interval;
	uint32_t stored_len;
	uint32_t plain_len;
	uint64_t rec_hash;
	uint8_t reserved1[16];
	uint64_t frame_hash;
} __attribute__((packed));

struct icf_cdp_ckpt {
	uint32_t magic;
	uint32_t reserved0;
	uint64_t interval;
	int64_t time_s;
	uint32_t time_ns;
	uint32_t reserved1;
	uint64_t frames;
	uint64_t offset;
	uint8_t mac[32];
	uint8_t tmac[32];		/* offset 80 */
	/* v1 (128 bytes): reserved[8] at 112, frame_hash at 120.  v2 (160 bytes): mseal[32]
	 * at 112, reserved[8] at 144, frame_hash (XXH3-64 of the bytes before it) at 152. */
	uint8_t tail[48];
} __attribute__((packed));

#define ICF_CDP_MSEAL_OFF 112u

static inline uint32_t icf_cdp_ckpt_size(uint32_t version)
{
	return version == 1 ? ICF_CDP_CKPT_V1 : ICF_CDP_CKPT_V2;
}

_Static_assert(sizeof(struct icf_cdp_header) == 4096, "cdp header");
_Static_assert(sizeof(struct icf_cdp_rec) == 64, "cdp record frame");
_Static_assert(sizeof(struct icf_cdp_ckpt) == ICF_CDP_CKPT_V2, "cdp checkpoint frame");

#endif
