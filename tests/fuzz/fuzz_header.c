/* fuzz_header.c: the image header and slot decoders on arbitrary bytes. */
#include "config.h"

#include "imgchain.h"
#include "fuzz_fixup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t buf[ICF_HEADER_SIZE] = { 0 };
	struct icf_header h;
	struct icf_slot s;

	memcpy(buf, data, size < sizeof(buf) ? size : sizeof(buf));
	if (size && (data[0] & 1))
		fx_image(buf, sizeof(buf));    /* half the time: reach the field checks */
	if (ic_header_decode(buf, &h, "fuzz") == 0 && h.block_size == 0)
		__builtin_trap();
	/* the slot under the version the header names (any number: the decoder's rules) */
	if (ic_slot_decode(buf + ICF_SLOT_A_OFF, &s, le32toh(((const struct icf_header *)buf)->version),
			   "fuzz") == 0) {
		uint8_t again[ICF_SLOT_SIZE];
		uint32_t v = le32toh(((const struct icf_header *)buf)->version);

		if (s.parent_seq >= s.seq || !ic_name_valid(s.name) ||
		    (v == ICF_IMAGE_V1 && s.point_id) || (v == ICF_IMAGE_V2 && !s.point_id))
			__builtin_trap();
		ic_slot_encode(&s, again);
		if (memcmp(again, buf + ICF_SLOT_A_OFF, ICF_SLOT_SIZE))
			__builtin_trap();
	}
	return 0;
}
