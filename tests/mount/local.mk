# shell tests of tests/mount (automake fragment included by Makefile.am): imgmount on
# real FUSE mounts.  mount-lib.sh is their shared setup, sourced, not a test.
SH_TESTS += \
	tests/mount/mount-read.sh \
	tests/mount/mount-overlay.sh \
	tests/mount/mount-damage.sh \
	tests/mount/mount-concurrent.sh \
	tests/mount/mount-errors.sh \
	tests/mount/mount-vhd.sh \
	tests/mount/mount-overlay-backup.sh \
	tests/mount/mount-vmdk.sh \
	tests/mount/mount-exit-open.sh
dist_check_DATA = tests/mount/mount-lib.sh tests/mount/mount-vhd-lib.sh tests/mount/promote-lib.sh
# collaborative release of an overlay (FORMAT.md 10.7): mounts in mount namespaces of their
# own (root), a dead owner, planted records, an owner that does not answer
SH_TESTS += tests/mount/release.sh tests/mount/release-dead.sh
dist_check_DATA += tests/mount/release-lib.sh
# crash consistency and load of writable mounts (mount-load.sh: MOUNT_LOAD_SECONDS, 60 by default)
SH_TESTS += tests/mount/mount-kill.sh tests/mount/mount-load.sh
# live promote of a mounted disk to DEST (imgpromote): with a writer, and killed mid-way
SH_TESTS += tests/mount/promote.sh tests/mount/promote-kill.sh tests/mount/promote-release.sh
# mount(8), fstab and the mount helper (a private mount namespace; root)
SH_TESTS += tests/mount/mount-helper.sh
# a lost overlay write: tests/lib/faultsync.so, an LD_PRELOAD shim failing one fdatasync
# (built with one compiler call: no libtool for a test's shared object)
SH_TESTS += tests/mount/mount-syncfail.sh
check_DATA = tests/lib/faultsync.so
CLEANFILES = tests/lib/faultsync.so
tests/lib/faultsync.so: tests/lib/faultsync.c
	@$(MKDIR_P) tests/lib
	$(AM_V_CC)$(CC) -O2 -Wall -shared -fPIC -o $@ $(srcdir)/tests/lib/faultsync.c -ldl
