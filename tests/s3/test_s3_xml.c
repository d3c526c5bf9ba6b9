/* test_s3_xml.c: the scanning of S3 answers (untrusted XML) and the encoding of keys, with
 * no server: truncated and hostile answers are refused without reading past their end. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ic_s3_int.h"
#include "../unit/unit.h"

/* the answer copied to an exact-size heap buffer: ASan catches any read past it */
static const char *find(const char *xml, const char *tag, char *out, size_t cap, int *rc)
{
	size_t n = strlen(xml), vlen;
	char *b = malloc(n ? n : 1);
	const char *v, *after;

	memcpy(b, xml, n);
	after = ic_s3_xml_find(b, b + n, tag, &v, &vlen);
	*rc = after ? ic_s3_xml_text(v, vlen, out, cap) : -1;
	free(b);
	return after ? "found" : NULL;
}

int main(void)
{
	char out[64], *e;
	int rc;

	CHECK(find("<a><Key>x&amp;y</Key></a>", "Key", out, sizeof(out), &rc));
	CHECK_EQ(rc, 0);
	CHECK(strcmp(out, "x&y") == 0);
	CHECK(find("<Key>&lt;&gt;&quot;&apos;&#34;&#39;</Key>", "Key", out, sizeof(out), &rc));
	CHECK(rc == 0 && strcmp(out, "<>\"'\"'") == 0);
	/* no closing tag, truncated anywhere, a longer tag with the same start */
	CHECK(!find("<Key>abc", "Key", out, sizeof(out), &rc));
	CHECK(!find("<Key>abc</Ke", "Key", out, sizeof(out), &rc));
	CHECK(!find("<Key", "Key", out, sizeof(out), &rc));
	CHECK(!find("<", "Key", out, sizeof(out), &rc));
	CHECK(!find("", "Key", out, sizeof(out), &rc));
	CHECK(!find("<KeyCount>3</KeyCount>", "Key", out, sizeof(out), &rc));
	CHECK(find("<KeyCount>3</KeyCount><Key>k</Key>", "Key", out, sizeof(out), &rc));
	CHECK(rc == 0 && strcmp(out, "k") == 0);
	/* unknown or cut entities, a value longer than the room, a NUL inside */
	CHECK(find("<Key>a&bogus;</Key>", "Key", out, sizeof(out), &rc));
	CHECK_EQ(rc, -EINVAL);
	CHECK(find("<Key>a&amp</Key>", "Key", out, sizeof(out), &rc));
	CHECK_EQ(rc, -EINVAL);
	CHECK(find("<Key>0123456789</Key>", "Key", out, 10, &rc));
	CHECK_EQ(rc, -EINVAL);
	CHECK(find("<Key>012345678</Key>", "Key", out, 10, &rc));
	CHECK_EQ(rc, 0);
	CHECK_EQ(ic_s3_xml_text("a\0b", 3, out, sizeof(out)), -EINVAL);
	/* ETags go into headers and the cache's state file: no spaces or control bytes */
	CHECK(ic_s3_etag_ok("\"0123abcd-2\"", 12));
	CHECK(!ic_s3_etag_ok("\"a b\"", 5));
	CHECK(!ic_s3_etag_ok("a\nb", 3));
	CHECK(!ic_s3_etag_ok("", 0));
	/* keys: AWS's encoding (unreserved kept, '/' kept in paths only, uppercase hex) */
	e = ic_s3_encode("a b/c~d_e.f-g&h=é", true);
	CHECK(e && strcmp(e, "a%20b/c~d_e.f-g%26h%3D%C3%A9") == 0);
	free(e);
	e = ic_s3_encode("p/q", false);
	CHECK(e && strcmp(e, "p%2Fq") == 0);
	free(e);
	return unit_failures ? 1 : 0;
}
