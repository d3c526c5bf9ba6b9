/* ic_unlock.c: the whole unlock of a keyed tool (ic_unlock.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_chain.h"
#include "ic_keys.h"
#include "ic_state.h"
#include "ic_unlock.h"
#include "ic_util.h"

/* Prefix the current message (which ic_fail() is about to overwrite) with path. */
static int ic_fail_prefixed(int err, const char *path)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", ic_last_error(err));
	return ic_fail(err, "%s: %s", path, msg);
}

int ic_key_unlock_keyfile(const char *chain_dir, const char *passphrase_file,
			  struct ic_keyfile *kf, struct ic_key **out, int *slot_out,
			  char **pass_out, size_t *passlen_out)
{
	char *path, *pass, prompt[512];
	size_t passlen;
	int ret;

	ret = ic_keyfile_load(chain_dir, kf);
	if (ret < 0)
		return ret;
	snprintf(prompt, sizeof(prompt), "Passphrase for %s: ", chain_dir);
	ret = ic_passphrase_get(passphrase_file, false, prompt, &pass, &passlen);
	if (ret < 0)
		return ret;
	ret = ic_keyfile_unlock(kf, pass, passlen, out, slot_out);
	if (ret < 0) {
		path = ic_path_join(chain_dir, ICF_KEYFILE_NAME);
		ret = path ? ic_fail_prefixed(ret, path) : ret;
		free(path);
	} else {
		ic_state_note_key(*out);
	}
	if (ret == 0 && pass_out) {
		*pass_out = pass;
		*passlen_out = passlen;
	} else {
		ic_passphrase_free(pass);
	}
	return ret;
}

int ic_key_unlock(const char *chain_dir, const char *passphrase_file, struct ic_key **out)
{
	struct ic_keyfile *kf = malloc(sizeof(*kf));
	int ret;

	if (!kf)
		return ic_fail(-ENOMEM, "out of memory");
	ret = ic_key_unlock_keyfile(chain_dir, passphrase_file, kf, out, NULL, NULL, NULL);
	free(kf);
	return ret;
}

/* The key must be this chain's ("wrong key", exit 3), and the chain must not be older
 * than this machine last saw (rollback, exit 4). */
static int check_chain(const char *dir, const struct ic_key *key, bool accept_rollback)
{
	struct ic_chain *ch;
	int ret = ic_chain_open(dir, &ch);

	if (ret)
		return ret;
	if (ch->have_images && (memcmp(key->chain_id, ch->chain_id, ICF_ID_LEN) ||
				memcmp(key->key_check, ch->key_check, ICF_CHECK_LEN)))
		ret = ic_fail(IC_EKEY, "%s: wrong key: the key file does not belong to this chain's images",
			      dir);
	else
		ret = ic_state_check(ch, accept_rollback);
	ic_chain_free(ch);
	return ret;
}

int ic_key_unlock_chain(const char *chain_dir, const char *passphrase_file,
			bool accept_rollback, struct ic_key **out)
{
	struct ic_key *key;
	int ret = ic_key_unlock(chain_dir, passphrase_file, &key);

	if (ret)
		return ret;
	ret = check_chain(chain_dir, key, accept_rollback);
	if (ret) {
		ic_key_free(key);
		return ret;
	}
	*out = key;
	return 0;
}
