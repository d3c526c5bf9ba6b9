# The CDP journal through the real nbdkit filter (tests/cdp/).
SH_TESTS += \
	tests/cdp/cdp-restore.sh \
	tests/cdp/cdp-damage.sh
