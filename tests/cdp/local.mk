# The CDP journal through the real nbdkit filter (tests/cdp/).
if ENABLE_NBDKIT
SH_TESTS += \
	tests/cdp/cdp-restore.sh \
	tests/cdp/cdp-mount.sh \
	tests/cdp/cdp-fold.sh \
	tests/cdp/cdp-nbd.sh \
	tests/cdp/cdp-damage.sh \
	tests/cdp/cdp-gap.sh \
	tests/cdp/cdp-age.sh \
	tests/cdp/cdp-defer.sh \
	tests/cdp/cdp-kill.sh \
	tests/cdp/cdp-boot.sh
endif
EXTRA_DIST += tests/cdp/cdp-lib.sh tests/cdp/cdpj.py

# the journal's writer and reader without nbdkit
UNIT_TESTS += test_cdp
test_cdp_SOURCES = tests/unit/test_cdp.c tests/unit/unit.h
test_cdp_LDADD = $(LIBDEPS)
