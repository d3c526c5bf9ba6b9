/* imgkey: list, add and remove the passphrase slots of a chain's key file; revoke. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cli.h"
#include "imgchain.h"

enum { OPT_NEW_PASSPHRASE_FILE = 256 };

struct imgkey_opts {
	const char *passphrase_file;
	const char *new_passphrase_file;
	bool accept_rollback;
	const char *cmd;
	char **args;
	int nargs;
};

static const struct ic_cli_opt opts[] = {
	{ "passphrase-file", 'P', "FILE", "current passphrase: first line of FILE" },
	{ "new-passphrase-file", OPT_NEW_PASSPHRASE_FILE, "FILE",
	  "new passphrase (add): first line of FILE" },
	{ "accept-rollback", 'R', NULL, "accept a key file older than this machine last saw" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgkey",
	.synopsis =
		"Usage: imgkey list CHAIN\n"
		"       imgkey check [--passphrase-file FILE] CHAIN\n"
		"       imgkey add [--passphrase-file FILE] [--new-passphrase-file FILE] CHAIN\n"
		"       imgkey remove [--passphrase-file FILE] CHAIN SLOT\n"
		"       imgkey revoke [--passphrase-file FILE] CHAIN [SLOT]\n"
		"\n"
		"Manage the passphrase slots and key generations of CHAIN/" ICF_KEYFILE_NAME ".\n"
		"\n"
		"  list      show the chain id, the key generations and the used slots\n"
		"            (no passphrase needed)\n"
		"  check     unlock: show the slot that opens and the key generations it gives\n"
		"  add       unlock with a current passphrase, add a slot for a new one\n"
		"  remove    unlock with a current passphrase, clear slot SLOT; this does NOT\n"
		"            revoke: a copy of the old key file still opens with its passphrase\n"
		"  revoke    unlock with a passphrase you keep and start a new key generation:\n"
		"            points made from now on need it, which no old copy of the key file\n"
		"            holds.  Only the slot that unlocked is kept; every other slot (SLOT\n"
		"            among them) is dropped and must be added again with 'imgkey add'\n",
	.opts = opts,
	.common = IC_CLI_KEYED,
	.epilog =
		"Environment: IMGCHAIN_PASSPHRASE_FILE, IMGCHAIN_PASSPHRASE,\n"
		"IMGCHAIN_NEW_PASSPHRASE, IMGCHAIN_KDF=interactive|moderate|sensitive,\n"
		"IMGCHAIN_KDF_MAX (highest KDF cost tried, default sensitive),\n"
		"IMGCHAIN_STATE_DIR.\n"
		"Exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or key,\n"
		"4 corrupt or rolled back.\n",
};

static void print_hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	putchar('\n');
}

static int cmd_list(const struct imgkey_opts *o)
{
	static struct ic_keyfile kf;
	unsigned used = 0;
	char mem[32];
	int ret;

	ret = ic_keyfile_load(o->args[0], &kf);
	if (ret < 0)
		return ic_report(ret);
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++)
		used += kf.h.slots[i].used != 0;
	printf("chain id:  ");
	print_hex(kf.h.chain_id, sizeof(kf.h.chain_id));
	printf("key check: ");
	print_hex(kf.h.key_check, sizeof(kf.h.key_check));
	printf("key generations: 0 to %u (new points use %u)\n", ic_keyfile_gen(&kf),
	       ic_keyfile_gen(&kf));
	printf("slots:     %u of %u used\n", used, ICF_KEY_SLOTS);
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		const struct icf_key_slot *s = &kf.h.slots[i];

		if (!s->used)
			continue;
		printf("slot %u:    argon2id, opslimit %llu, memlimit %s\n", i,
		       (unsigned long long)s->opslimit,
		       ic_human_bytes(s->memlimit, mem, sizeof(mem)));
	}
	return IC_EXIT_OK;
}

/* Key file changes are writes to the chain: one writer at a time (ic_chain_lock). */
static int with_lock(const struct imgkey_opts *o, int (*fn)(const struct imgkey_opts *))
{
	int fd, ret = ic_chain_lock(o->args[0], false, &fd);

	if (ret < 0)
		return ic_report(ret);
	ret = fn(o);
	ic_chain_unlock(fd);
	return ret;
}

/* The chain argument: a directory, or s3://BUCKET/PREFIX whose key file is cached (and, for
 * a change, pushed back under the writers' lease: FORMAT.md 14). */
static int with_chain(struct imgkey_opts *o, bool writer,
		      int (*fn)(const struct imgkey_opts *))
{
	struct ic_s3_chain *sc;
	const char *dir;
	int ret, err;

	err = ic_s3_chain_arg(o->args[0], writer, IC_S3_NEED_HEADER, NULL, 0, &sc, &dir);
	if (err)
		return ic_report(err);
	if (!sc)
		return writer ? with_lock(o, fn) : fn(o);
	o->args[0] = (char *)dir;
	ret = writer ? with_lock(o, fn) : fn(o);
	if (ret == IC_EXIT_OK && writer && (err = ic_s3_chain_push(sc)) != 0)
		ret = ic_report(err);
	ic_s3_chain_close(sc);
	return ret;
}

/* Unlock the key file of the chain and compare its generation with this machine's state
 * (a rolled-back key file is refused, exit 4, unless --accept-rollback). */
static int unlock(const struct imgkey_opts *o, struct ic_keyfile *kf, struct ic_key **key,
		  int *slot, char **pass, size_t *passlen)
{
	int ret = ic_key_unlock_keyfile(o->args[0], o->passphrase_file, kf, key, slot, pass,
					passlen);

	if (ret < 0)
		return ret;
	ret = ic_state_check_key(o->args[0], kf->h.chain_id, o->accept_rollback);
	if (ret < 0) {
		ic_key_free(*key);
		*key = NULL;
		if (pass)
			ic_passphrase_free(*pass);
	}
	return ret;
}

static int cmd_check(const struct imgkey_opts *o)
{
	static struct ic_keyfile kf;
	struct ic_key *key;
	int ret, slot;

	ret = unlock(o, &kf, &key, &slot, NULL, NULL);
	if (ret < 0)
		return ic_report(ret);
	printf("key slot %d opens key generations 0 to %u\n", slot, ic_key_current_gen(key));
	ic_key_free(key);
	return IC_EXIT_OK;
}

static int cmd_add(const struct imgkey_opts *o)
{
	const char *chain = o->args[0];
	static struct ic_keyfile kf;
	uint64_t opslimit, memlimit;
	struct ic_key *key;
	char *pass;
	size_t passlen;
	int ret, slot;

	ret = unlock(o, &kf, &key, NULL, NULL, NULL);
	if (ret < 0)
		return ic_report(ret);
	ret = ic_passphrase_get_new(o->new_passphrase_file, "New passphrase: ", &pass, &passlen);
	if (ret < 0)
		goto out_free_key;
	ic_kdf_defaults(&opslimit, &memlimit);
	slot = ic_keyfile_add_slot(&kf, key, pass, passlen, opslimit, memlimit);
	ic_passphrase_free(pass);
	if (slot < 0) {
		ret = slot;
		goto out_free_key;
	}
	ret = ic_keyfile_store(chain, &kf);
	if (!ret)
		printf("added key slot %d\n", slot);
out_free_key:
	ic_key_free(key);
	return ret < 0 ? ic_report(ret) : IC_EXIT_OK;
}

static int parse_slot(const char *s, int *slot)
{
	char *end;
	long v;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	v = strtol(s, &end, 10);
	if (*end || v >= (long)ICF_KEY_SLOTS)
		return -1;
	*slot = (int)v;
	return 0;
}

static int cmd_remove(const struct imgkey_opts *o)
{
	const char *chain = o->args[0];
	static struct ic_keyfile kf;
	struct ic_key *key;
	int ret, slot;

	if (parse_slot(o->args[1], &slot) < 0)
		return ic_cli_usage("SLOT must be a number from 0 to 7");
	ret = unlock(o, &kf, &key, NULL, NULL, NULL);
	if (ret < 0)
		return ic_report(ret);
	ic_key_free(key);
	ret = ic_keyfile_remove_slot(&kf, slot);
	if (!ret)
		ret = ic_keyfile_store(chain, &kf);
	if (ret < 0)
		return ic_report(ret);
	printf("removed key slot %d\n", slot);
	printf("note: this does not revoke: a copy of the old key file still opens with that passphrase (see 'imgkey revoke')\n");
	return IC_EXIT_OK;
}

static int cmd_revoke(const struct imgkey_opts *o)
{
	const char *chain = o->args[0];
	static struct ic_keyfile kf;
	struct ic_key *key, *nkey = NULL;
	unsigned dropped = 0;
	int ret, slot = -1, kept;
	char *pass, list[64] = "";
	size_t passlen, n = 0;

	if (o->nargs > 1 && parse_slot(o->args[1], &slot) < 0)
		return ic_cli_usage("SLOT must be a number from 0 to 7");
	ret = unlock(o, &kf, &key, &kept, &pass, &passlen);
	if (ret < 0)
		return ic_report(ret);
	if (slot >= 0 && !kf.h.slots[slot].used)
		ret = ic_fail(-ENOENT, "key slot %d is empty", slot);
	else if (slot == kept)
		ret = ic_fail(-EINVAL,
			      "key slot %d is the one this passphrase opens: to revoke it, unlock with a passphrase you keep",
			      slot);
	else
		ret = ic_keyfile_revoke(&kf, key, kept, pass, passlen, &nkey, &dropped);
	ic_passphrase_free(pass);
	ic_key_free(key);
	if (!ret)
		ret = ic_keyfile_store(chain, &kf);
	if (!ret) {
		/* this machine now expects the new generation: an older key file is a rollback */
		ic_state_note_key(nkey);
		ret = ic_state_check_key(chain, kf.h.chain_id, false);
		if (ret < 0) {
			ic_msg("warning: %s (this machine's state does not know the new key generation)",
			       ic_last_error(ret));
			ret = 0;
		}
	}
	if (ret < 0) {
		ic_key_free(nkey);
		return ic_report(ret);
	}
	printf("new key generation %u: points made from now on need it; no older copy of the key file holds it\n",
	       ic_key_current_gen(nkey));
	printf("kept key slot %d (the passphrase that unlocked)\n", kept);
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++)
		if (dropped & (1u << i))
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%u", n ? ", " : "", i);
	if (dropped)
		printf("dropped key slot(s) %s: they wrapped the old key; add the passphrases you keep again with 'imgkey add'\n",
		       list);
	ic_key_free(nkey);
	return IC_EXIT_OK;
}

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, struct imgkey_opts *o)
{
	int c;

	memset(o, 0, sizeof(*o));
	while ((c = ic_cli_next(&cli, argc, argv)) > 0)
		if (c == OPT_NEW_PASSPHRASE_FILE)
			o->new_passphrase_file = cli.optarg;
	if (c < 0)
		return cli.status;
	o->passphrase_file = cli.passphrase_file;
	o->accept_rollback = cli.accept_rollback;
	if (cli.optind >= argc)
		return ic_cli_usage("missing command (list, check, add, remove or revoke)");
	o->cmd = argv[cli.optind];
	o->args = argv + cli.optind + 1;
	o->nargs = argc - cli.optind - 1;
	return -1;
}

static int check_args(const struct imgkey_opts *o, int nargs, bool pass, bool newpass)
{
	if (o->nargs < nargs)
		return ic_cli_usage("missing operand");
	if (o->nargs > nargs)
		return ic_cli_usage("too many operands");
	if (o->passphrase_file && !pass)
		return ic_cli_usage("--passphrase-file is not used by this command");
	if (o->new_passphrase_file && !newpass)
		return ic_cli_usage("--new-passphrase-file is only used by 'add'");
	return -1;
}

int main(int argc, char **argv)
{
	struct imgkey_opts o;
	int ret;

	ic_progname = cli.prog;
	ic_no_dumps();
	ret = parse_args(argc, argv, &o);
	if (ret >= 0)
		return ret;
	if (!strcmp(o.cmd, "list")) {
		ret = check_args(&o, 1, false, false);
		return ret >= 0 ? ret : with_chain(&o, false, cmd_list);
	}
	if (!strcmp(o.cmd, "check")) {
		ret = check_args(&o, 1, true, false);
		return ret >= 0 ? ret : with_chain(&o, false, cmd_check);
	}
	if (!strcmp(o.cmd, "revoke")) {
		int slot;

		ret = check_args(&o, o.nargs == 2 ? 2 : 1, true, false);
		if (ret >= 0)
			return ret;
		if (o.nargs == 2 && parse_slot(o.args[1], &slot) < 0)
			return ic_cli_usage("SLOT must be a number from 0 to 7");
		return with_chain(&o, true, cmd_revoke);
	}
	if (!strcmp(o.cmd, "add")) {
		ret = check_args(&o, 1, true, true);
		return ret >= 0 ? ret : with_chain(&o, true, cmd_add);
	}
	if (!strcmp(o.cmd, "remove")) {
		int slot;

		ret = check_args(&o, 2, true, false);
		if (ret >= 0)
			return ret;
		/* a bad SLOT is a usage error, whatever state the chain is in */
		if (parse_slot(o.args[1], &slot) < 0)
			return ic_cli_usage("SLOT must be a number from 0 to 7");
		return with_chain(&o, true, cmd_remove);
	}
	return ic_cli_usage("unknown command '%s'", o.cmd);
}
