# shell tests of tests/nbd (automake fragment included by Makefile.am): the nbdkit plugin
# (the NBD export) with real clients: qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh's module,
# qemu; and the iSCSI path (tgt serving disk.raw from the mount, qemu's libiscsi client).
if ENABLE_NBDKIT
SH_TESTS += \
	tests/nbd/nbd-read.sh \
	tests/nbd/nbd-damage.sh \
	tests/nbd/nbd-overlay.sh \
	tests/nbd/nbd-errors.sh \
	tests/nbd/nbd-online.sh \
	tests/nbd/nbd-release.sh
# the test disk boots over NBD under qemu-system-x86_64 (read-only, and with an overlay)
SH_TESTS += tests/nbd/nbd-boot.sh
endif
SH_TESTS += tests/nbd/iscsi-tgt.sh
dist_check_DATA += tests/nbd/nbd-lib.sh
