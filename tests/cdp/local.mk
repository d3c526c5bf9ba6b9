# The CDP journal through the real nbdkit filter (tests/cdp/).
SH_TESTS += \
	tests/cdp/cdp-restore.sh \
	tests/cdp/cdp-damage.sh \
	tests/cdp/cdp-gap.sh \
	tests/cdp/cdp-boot.sh
EXTRA_DIST += tests/cdp/cdp-lib.sh tests/cdp/cdpj.py
