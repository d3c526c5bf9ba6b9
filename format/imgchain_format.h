/* imgchain_format.h: the on-disk structures of an imgchain chain (normative text: FORMAT.md).
 *
 * Every multi-byte integer is LITTLE-ENDIAN on disk.  These structs describe the
 * layout; code must never read them by casting a buffer on a big-endian host:
 * decode through the ic_*_decode() functions of src/, which also bound every field.
 */
#ifndef IMGCHAIN_FORMAT_H
#define IMGCHAIN_FORMAT_H

#include <stdint.h>

#define ICF_VERSION 1u              /* key file version (section 6) */

/* Image format versions (FORMAT.md "Versions").  A new full is written in
 * ICF_IMAGE_VERSION; an incremental in its parent's version. */
#define ICF_IMAGE_V1 1u
#define ICF_IMAGE_V2 2u
#define ICF_IMAGE_VERSION ICF_IMAGE_V2

/* ---- chain directory ------------------------------------------------------ */
#define ICF_KEYFILE_NAME "imgchain.key"
#define ICF_LOCK_NAME "lock"
#define ICF_JOURNAL_NAME "journal"
#define ICF_IMAGE_SUFFIX ".img"     /* images are "%08u.img" named by sequence */
#define ICF_SEQ_MAX 99999999u      /* the largest seq: its name must fit %08u */
#define ICF_TMP_PREFIX ".tmp-"      /* in-progress files; never read, removed under the lock */

#define ICF_NAME_MAX 127            /* restore point name, bytes, without NUL */
#define ICF_NAME_RESERVED "latest"  /* never a point's name (the mount's link to the newest) */

/* ---- identifiers, hashes and limits (plain ints: they also bound loop counters) --- */
#define ICF_ID_LEN 16               /* a chain id */
#define ICF_CHECK_LEN 16            /* a key check value: key_check, a generation's check */
#define ICF_INDEX_HASH_LEN 16       /* XXH3-128 of an index, canonical form */
#define ICF_DIGEST_LEN 16           /* a keyed change digest (Poly1305) */
#define ICF_SEAL_LEN 32             /* a seal (BLAKE2b-256), and the map digest it covers */
#define ICF_SALT_LEN 16             /* a key slot's Argon2id salt */
#define ICF_DISK_MAX (1ull << 60)   /* largest disk_size a slot may claim, bytes */
#define ICF_INDEX_COUNT_MAX (1ull << 40) /* most entries an index may claim */

/* ---- block geometry ------------------------------------------------------- */
#define ICF_BLOCK_MIN 4096u
#define ICF_BLOCK_MAX (4u << 20)
#define ICF_BLOCK_DEFAULT 65536u

/* ---- image file ----------------------------------------------------------- */
#define ICF_IMAGE_MAGIC "IMGCHAIN"  /* 8 bytes, no NUL */
#define ICF_HEADER_SIZE 4096u       /* records start here */
#define ICF_SLOT_A_OFF 1024u
#define ICF_SLOT_B_OFF 2048u
#define ICF_SLOT_SIZE 512u

#define ICF_CIPHER_XCHACHA20POLY1305 1u
#define ICF_COMPRESS_ZSTD 1u

/* Fixed header, bytes 0..511 of an image; written once at creation. */
struct icf_header {
	char magic[8];              /* "IMGCHAIN" */
	uint32_t version;           /* ICF_IMAGE_V1 or ICF_IMAGE_V2 */
	uint32_t header_size;       /* ICF_HEADER_SIZE */
	uint8_t chain_id[ICF_ID_LEN]; /* random, shared by every file of a chain */
	uint8_t key_check[ICF_CHECK_LEN]; /* key fingerprint, see FORMAT.md "Keys" */
	uint32_t block_size;        /* power of two, ICF_BLOCK_MIN..ICF_BLOCK_MAX */
	uint32_t cipher;            /* ICF_CIPHER_* */
	uint32_t compress;          /* ICF_COMPRESS_* */
	uint32_t reserved0;
	uint8_t reserved[440];      /* zero */
	uint64_t hdr_hash;          /* XXH3-64 of bytes 0..503 */
} __attribute__((packed));

#define ICF_KIND_FULL 1u            /* made by imgbackup, no parent */
#define ICF_KIND_INCREMENTAL 2u     /* made by imgbackup, has a parent */
#define ICF_KIND_SYNTHETIC_FULL 3u  /* made by imgconsolidate, no parent */
#define ICF_KIND_CONSOLIDATED 4u    /* made by imgconsolidate, has a parent */
/* Slot flags (FORMAT.md 3.2; v2 images only). */
#define ICF_SLOT_FOLDED 1u          /* slot flag: folded from the CDP journal (FORMAT.md 15.5) */
#define ICF_SLOT_POST_SNAPSHOT 2u   /* a quiesced point: made as the child of the crash-
				     * consistent snapshot point it modifies; never a
				     * default parent (the chain goes on from its parent);
				     * bound into the seal (FORMAT.md 5) */
#define ICF_SLOT_FLAGS_KNOWN (ICF_SLOT_FOLDED | ICF_SLOT_POST_SNAPSHOT)

/* A slot: the identity and index of the point the file holds.  Two slots, A and B;
 * the valid one (hash) with the higher generation is current. */
struct icf_slot {
	uint64_t generation;        /* 0 = never written */
	uint32_t seq;               /* restore point sequence, >= 1, unique in the chain */
	uint32_t parent_seq;        /* 0 = none (a full) */
	uint32_t kind;              /* ICF_KIND_* */
	uint32_t flags;             /* ICF_SLOT_* (v2); v1: 0 */
	int64_t created;            /* seconds since the Unix epoch, UTC */
	uint64_t disk_size;         /* bytes */
	uint64_t index_offset;      /* byte offset of the index in this file */
	uint64_t index_count;       /* entries */
	uint64_t data_bytes;        /* sum of stored_len of the index's data entries */
	uint64_t n_data;            /* data entries in the index */
	uint64_t n_zero;            /* zero entries in the index */
	uint8_t index_hash[ICF_INDEX_HASH_LEN]; /* XXH3-128 of the index, canonical form */
	uint8_t seal[ICF_SEAL_LEN]; /* keyed MAC over the point's block map, FORMAT.md "Seal" */
	char name[ICF_NAME_MAX + 1]; /* NUL-terminated, NUL-padded */
	uint64_t data_end;          /* bytes of the file in use: max(record ends, index end) */
	uint64_t point_id;          /* v2: random non-zero id of the point; v1: 0 */
	uint16_t seal_keygen;       /* v2: key generation of the seal key; v1: 0 */
	uint8_t reserved0[6];       /* zero */
	/* ICF_SLOT_FOLDED: the CDP checkpoint the point was folded from (FORMAT.md 15.5),
	 * whose map seal is the slot's seal; else zero */
	uint64_t fold_session_id;   /* offset 280 */
	uint64_t fold_interval;
	uint32_t fold_time_ns;
	uint8_t reserved[204];      /* zero */
	uint64_t slot_hash;         /* XXH3-64 of bytes 0..503 of the slot */
} __attribute__((packed));

#define ICF_ENTRY_ZERO 0u           /* the block reads as zeros; no record */
#define ICF_ENTRY_RAW 1u            /* record holds the block uncompressed */
#define ICF_ENTRY_ZSTD 2u           /* record holds a zstd frame of the block */

/* One index entry, version 2 (also the host-order form of an entry of either version).
 * The index is an array of these, strictly ascending by pos. */
struct icf_entry {
	uint64_t pos;               /* block number */
	uint64_t offset;            /* byte offset of the record in this file (0 for zero) */
	uint32_t stored_len;        /* record bytes: 24 nonce + payload + 16 tag (0 for zero) */
	uint32_t plain_len;         /* plaintext bytes of the block */
	uint32_t origin;            /* seq of the point that encrypted the record */
	uint16_t kind;              /* ICF_ENTRY_* */
	uint16_t keygen;            /* v2: key generation of the record; v1 "flags", 0 */
	uint64_t rec_hash;          /* XXH3-64 of the stored record bytes (0 for zero) */
	uint8_t digest[ICF_DIGEST_LEN]; /* keyed change digest of the plaintext (zero for zero) */
	uint64_t origin_id;         /* v2: point id of the origin point, non-zero; v1: 0 in
				     * host order (the bytes hold entry_hash) */
} __attribute__((packed));

/* One index entry, version 1. */
struct icf_entry_v1 {
	uint64_t pos;
	uint64_t offset;
	uint32_t stored_len;
	uint32_t plain_len;
	uint32_t origin;
	uint16_t kind;
	uint16_t flags;             /* 0 */
	uint64_t rec_hash;
	uint8_t digest[ICF_DIGEST_LEN];
	uint64_t entry_hash;        /* XXH3-64 of bytes 0..55 of this entry */
} __attribute__((packed));

#define ICF_NONCE_LEN 24u
#define ICF_TAG_LEN 16u
#define ICF_RECORD_OVERHEAD (ICF_NONCE_LEN + ICF_TAG_LEN)

/* Additional data of a block record's AEAD (not stored; rebuilt from the index), v1. */
struct icf_block_ad {
	char magic[4];              /* "ICB1" */
	uint8_t chain_id[ICF_ID_LEN];
	uint32_t block_size;
	uint64_t pos;
	uint32_t origin;
	uint32_t plain_len;
	uint16_t kind;
	uint16_t reserved;          /* 0 */
} __attribute__((packed));

/* Additional data, v2: also the origin's point id and the record's key generation. */
struct icf_block_ad_v2 {
	char magic[4];              /* "ICB2" */
	uint8_t chain_id[ICF_ID_LEN];
	uint32_t block_size;
	uint64_t pos;
	uint32_t origin;
	uint64_t origin_id;
	uint32_t plain_len;
	uint16_t kind;
	uint16_t keygen;
} __attribute__((packed));

/* Key of the one-time Poly1305 change digest, hashed under the digest key (v1: "ICDG"
 * and the first 20 bytes; v2: "ICD2" and all 28). */
struct icf_digest_head {
	char magic[4];              /* "ICDG" (v1) or "ICD2" (v2) */
	uint32_t origin;
	uint32_t plain_len;
	uint64_t pos;
	uint64_t origin_id;         /* v2 only */
} __attribute__((packed));

/* Seal input: one of these per non-zero block of the point, ascending pos (v1). */
struct icf_map_item {
	uint64_t pos;
	uint32_t origin;
	uint16_t kind;
	uint16_t reserved;          /* 0 */
	uint32_t plain_len;
	uint64_t rec_hash;
} __attribute__((packed));

/* Seal input, v2: also the origin's point id and the record's key generation. */
struct icf_map_item_v2 {
	uint64_t pos;
	uint32_t origin;
	uint16_t kind;
	uint16_t keygen;
	uint32_t plain_len;
	uint64_t rec_hash;
	uint64_t origin_id;
} __attribute__((packed));

/* Seal header, MACed together with the map digest (v1). */
struct icf_seal_head {
	char magic[8];              /* "ICSEAL01" */
	uint8_t chain_id[ICF_ID_LEN];
	uint32_t block_size;
	uint32_t seq;
	int64_t created;
	uint64_t disk_size;
	char name[ICF_NAME_MAX + 1];
	uint8_t map_digest[ICF_SEAL_LEN];
} __attribute__((packed));

/* Seal header, v2: also the point id and the seal key's generation. */
struct icf_seal_head_v2 {
	char magic[8];              /* "ICSEAL02" */
	uint8_t chain_id[ICF_ID_LEN];
	uint32_t block_size;
	uint32_t seq;
	int64_t created;
	uint64_t disk_size;
	char name[ICF_NAME_MAX + 1];
	uint64_t point_id;
	uint16_t seal_keygen;
	uint8_t flags;              /* the slot's flags & ICF_SLOT_POST_SNAPSHOT */
	uint8_t reserved[5];        /* 0 */
	uint8_t map_digest[ICF_SEAL_LEN];
} __attribute__((packed));

/* ---- key file ------------------------------------------------------------- */
#define ICF_KEY_MAGIC "ICKEYF01"
#define ICF_KEY_SLOTS 8u
#define ICF_KEY_LEN 32u

struct icf_key_slot {
	uint32_t used;              /* 1 = in use, 0 = empty (all other bytes zero) */
	uint32_t alg;               /* crypto_pwhash_ALG_ARGON2ID13 (2) */
	uint64_t opslimit;
	uint64_t memlimit;          /* bytes */
	uint8_t salt[ICF_SALT_LEN];
	uint8_t nonce[24];
	uint8_t wrapped[48];        /* master key (32) + tag (16), XChaCha20-Poly1305 */
	uint8_t reserved[16];
} __attribute__((packed));

struct icf_keyfile {
	char magic[8];              /* "ICKEYF01" */
	uint32_t version;           /* ICF_VERSION */
	uint32_t reserved0;
	uint8_t chain_id[ICF_ID_LEN];
	uint8_t key_check[ICF_CHECK_LEN];
	struct icf_key_slot slots[ICF_KEY_SLOTS];
	uint8_t reserved[40];
	uint64_t file_hash;         /* XXH3-64 of all bytes before it */
} __attribute__((packed));

/* Key file versions (independent of ICF_VERSION, the images' format): 1 holds only the
 * slots (key generation 0); 2 adds the key generations 1..G (FORMAT.md 6.1). */
#define ICF_KEYFILE_V1 1u
#define ICF_KEYFILE_V2 2u
#define ICF_KEY_GEN_MAX 256u        /* newest generation a key file may hold */
#define ICF_KEYGEN_MAGIC "ICKEYGEN"

/* Version 2: generation g (1..G) wraps master key g-1 under master key g; the records
 * follow the slots and the 40 reserved bytes, then the file hash. */
struct icf_key_gen {
	uint8_t nonce[24];
	uint8_t wrapped[48];        /* master key g-1 (32) + tag (16), XChaCha20-Poly1305 */
} __attribute__((packed));

/* Bounds applied when reading a key file (a hostile file must not make us allocate GiBs). */
#define ICF_KDF_OPSLIMIT_MAX 64u
#define ICF_KDF_MEMLIMIT_MAX (2ull << 30)

/* Size checks: a change of any of these is a format change. */
_Static_assert(sizeof(struct icf_header) == 512, "icf_header");
_Static_assert(sizeof(struct icf_slot) == ICF_SLOT_SIZE, "icf_slot");
_Static_assert(__builtin_offsetof(struct icf_slot, fold_session_id) == 280, "slot fold fields");
_Static_assert(sizeof(struct icf_entry) == 64, "icf_entry");
_Static_assert(sizeof(struct icf_entry_v1) == 64, "icf_entry_v1");
_Static_assert(sizeof(struct icf_block_ad) == 44, "icf_block_ad");
_Static_assert(sizeof(struct icf_block_ad_v2) == 52, "icf_block_ad_v2");
_Static_assert(sizeof(struct icf_digest_head) == 28, "icf_digest_head");
_Static_assert(sizeof(struct icf_map_item) == 28, "icf_map_item");
_Static_assert(sizeof(struct icf_map_item_v2) == 36, "icf_map_item_v2");
_Static_assert(sizeof(struct icf_seal_head) == 208, "icf_seal_head");
_Static_assert(sizeof(struct icf_seal_head_v2) == 224, "icf_seal_head_v2");
_Static_assert(__builtin_offsetof(struct icf_slot, point_id) == 264, "slot point_id");
_Static_assert(__builtin_offsetof(struct icf_slot, seal_keygen) == 272, "slot seal_keygen");
_Static_assert(__builtin_offsetof(struct icf_entry, keygen) == 30, "entry keygen");
_Static_assert(__builtin_offsetof(struct icf_entry, origin_id) == 56, "entry origin_id");
_Static_assert(sizeof(struct icf_key_slot) == 128, "icf_key_slot");
_Static_assert(sizeof(struct icf_keyfile) == 1120, "icf_keyfile");
_Static_assert(sizeof(struct icf_key_gen) == 72, "icf_key_gen");

#endif
