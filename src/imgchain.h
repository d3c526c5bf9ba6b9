/* imgchain.h: the public interface of libimgchain, the library under every tool and
 * the FUSE front-end.  It includes nothing of FUSE.  Module contracts are in the
 * headers below; ownership and locking are documented at each declaration. */
#ifndef IMGCHAIN_H
#define IMGCHAIN_H

#include "imgchain_format.h"
#include "ic_util.h"
#include "ic_keys.h"
#include "ic_unlock.h"
#include "ic_codec.h"
#include "ic_image.h"
#include "ic_chain.h"
#include "ic_view.h"
#include "ic_backup.h"
#include "ic_verify.h"
#include "ic_progress.h"
#include "ic_vmdk.h"
#include "ic_state.h"
#include "ic_lock.h"
#include "ic_s3_chain.h"

#endif
