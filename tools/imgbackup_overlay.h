/* imgbackup_overlay.h: imgbackup --from-overlay (imgbackup_overlay.c). */
#ifndef IMGBACKUP_OVERLAY_H
#define IMGBACKUP_OVERLAY_H

#include "imgchain.h"
#include "ic_overlay.h"

/* Make the changes in the overlay directory dir (imgmount's DIR/NAME) of point o->parent
 * (NULL: dir's last component) a new point of o->chain_dir, child of that point; o's name,
 * level, threads, passphrase and quiet apply.  info: the cut taken. */
int ic_backup_from_overlay(struct ic_backup_opts *o, const char *dir, struct ic_backup_stats *st,
			   struct ic_overlay_snap_info *info);

#endif
