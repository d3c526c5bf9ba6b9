# shell tests of tests/live: NBD sources, dirty bitmaps, fleecing, head start (automake fragment)
SH_TESTS += \
	tests/live/nbd_source.sh \
	tests/live/nbd_bitmap.sh \
	tests/live/nbd_bad.sh \
	tests/live/fleecing.sh \
	tests/live/head_start.sh \
	tests/live/head_start_offline.sh \
	tests/live/post_snapshot.sh
EXTRA_DIST += tests/live/live-lib.sh tests/live/qmp.py
