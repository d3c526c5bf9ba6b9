# shell tests of tests/mount (automake fragment included by Makefile.am): imgmount on
# real FUSE mounts.  mount-lib.sh is their shared setup, sourced, not a test.
SH_TESTS += \
	tests/mount/mount-read.sh \
	tests/mount/mount-overlay.sh \
	tests/mount/mount-damage.sh \
	tests/mount/mount-concurrent.sh \
	tests/mount/mount-errors.sh
dist_check_DATA = tests/mount/mount-lib.sh
