# tests of s3:// chains against a real single-node Ceph RGW (scripts/ceph-rgw.sh; automake
# fragment included by Makefile.am).  Each test starts its own cluster (about 12 s).
check_PROGRAMS += tests/s3/test_s3
# the answers' scanning needs no server: a unit test (also in the asan phase)
UNIT_TESTS += tests/s3/test_s3_xml
# the parts of an image rewritten by a merge in a bucket (no server)
UNIT_TESTS += tests/s3/test_s3_parts
# openers of one fresh local cache at once (no server)
UNIT_TESTS += tests/s3/test_s3_cache
tests_s3_test_s3_cache_SOURCES = tests/s3/test_s3_cache.c tests/unit/unit.h
tests_s3_test_s3_cache_LDADD = $(LIBDEPS)
tests_s3_test_s3_parts_SOURCES = tests/s3/test_s3_parts.c tests/unit/unit.h
tests_s3_test_s3_parts_LDADD = $(LIBDEPS)
tests_s3_test_s3_xml_SOURCES = tests/s3/test_s3_xml.c tests/unit/unit.h
tests_s3_test_s3_xml_LDADD = $(LIBDEPS)
tests_s3_test_s3_SOURCES = tests/s3/test_s3.c tests/unit/unit.h
tests_s3_test_s3_LDADD = $(LIBDEPS)
SH_TESTS += \
	tests/s3/client.sh \
	tests/s3/chain.sh \
	tests/s3/kill.sh \
	tests/s3/tamper.sh \
	tests/s3/faults.sh \
	tests/s3/lease.sh \
	tests/s3/consolidate.sh \
	tests/s3/mount.sh \
	tests/s3/nbd.sh
EXTRA_DIST += tests/s3/s3-lib.sh tests/s3/faultproxy.py scripts/ceph-rgw.sh
