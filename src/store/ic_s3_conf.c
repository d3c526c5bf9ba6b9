/* ic_s3_conf.c: the S3 client's configuration by the AWS conventions.
 * Precedence (as the AWS CLI): environment variables, then the profile (AWS_PROFILE, else
 * "default") of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
 * ~/.aws/credentials), then of the config file (AWS_CONFIG_FILE, else ~/.aws/config,
 * where profiles are "[profile NAME]" except "[default]").
 *   credentials  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN /
 *                aws_access_key_id, aws_secret_access_key, aws_session_token
 *   region       AWS_REGION, AWS_DEFAULT_REGION / region; else us-east-1
 *   endpoint     AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL / endpoint_url; else
 *                https://s3.REGION.amazonaws.com
 *   addressing   IMGCHAIN_S3_ADDRESSING=path|virtual / addressing_style (in "s3 =");
 *                else virtual-hosted on AWS's endpoint, path-style on any other
 *   certificates AWS_CA_BUNDLE / ca_bundle; the system's otherwise; always checked
 *   plain HTTP   refused unless IMGCHAIN_S3_ALLOW_HTTP=1
 *   retries      IMGCHAIN_S3_RETRY_SECONDS (default 60): how long one request is retried
 *   stalls       IMGCHAIN_S3_STALL_SECONDS (default 60): a transfer slower than 1 KiB/s
 *                for that long fails (and is retried) */
#include "config.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_error.h"
#include "ic_s3_int.h"

#define CONF_LINE_MAX 4096

struct conf_file {
	char *key_id, *secret, *token, *region, *endpoint, *addressing, *ca_bundle;
};

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int set_once(char **dst, const char *v)
{
	if (*dst)
		return 0;
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

/* Read section want ("default", "profile NAME" or "NAME") of an INI file; a missing file
 * is no error.  Nested lines ("s3 =" then indented "addressing_style = path") are read as
 * their own keys. */
static int read_ini(const char *path, const char *want, const char *want2, struct conf_file *f)
{
	FILE *fp;
	char line[CONF_LINE_MAX];
	bool in = false;
	int err = 0;

	if (!path)
		return 0;
	fp = fopen(path, "re");
	if (!fp)
		return errno == ENOENT ? 0 : ic_fail(-errno, "%s: %s", path, strerror(errno));
	while (!err && fgets(line, sizeof(line), fp)) {
		char *l = trim(line), *eq, *k, *v;

		if (*l == '#' || *l == ';' || *l == '\0')
			continue;
		if (*l == '[') {
			char *end = strchr(l, ']');

			if (!end)
				continue;
			*end = '\0';
			l = trim(l + 1);
			in = strcmp(l, want) == 0 || (want2 && strcmp(l, want2) == 0);
			continue;
		}
		if (!in || !(eq = strchr(l, '=')))
			continue;
		*eq = '\0';
		k = trim(l);
		v = trim(eq + 1);
		if (*v == '\0')
			continue;
		if (strcmp(k, "aws_access_key_id") == 0)
			err = set_once(&f->key_id, v);
		else if (strcmp(k, "aws_secret_access_key") == 0)
			err = set_once(&f->secret, v);
		else if (strcmp(k, "aws_session_token") == 0)
			err = set_once(&f->token, v);
		else if (strcmp(k, "region") == 0)
			err = set_once(&f->region, v);
		else if (strcmp(k, "endpoint_url") == 0)
			err = set_once(&f->endpoint, v);
		else if (strcmp(k, "addressing_style") == 0)
			err = set_once(&f->addressing, v);
		else if (strcmp(k, "ca_bundle") == 0)
			err = set_once(&f->ca_bundle, v);
	}
	fclose(fp);
	return err;
}

static char *home_file(const char *env, const char *rel)
{
	const char *v = getenv(env), *home = getenv("HOME");
	char *p;

	if (v && *v)
		return strdup(v);
	if (!home || !*home)
		return NULL;
	if (asprintf(&p, "%s/%s", home, rel) < 0)
		return NULL;
	return p;
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static void conf_file_free(struct conf_file *f)
{
	free(f->key_id);
	free(f->secret);
	free(f->token);
	free(f->region);
	free(f->endpoint);
	free(f->addressing);
	free(f->ca_bundle);
}

static int pick(char **dst, const char *a, const char *b)
{
	const char *v = a ? a : b;

	if (!v)
		return 0;
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

static unsigned env_uint(const char *name, unsigned def)
{
	const char *v = env(name);
	char *end;
	unsigned long n;

	if (!v)
		return def;
	n = strtoul(v, &end, 10);
	return *end || n > 86400 ? def : (unsigned)n;
}

int ic_s3_conf_load(struct ic_s3_conf *c)
{
	struct conf_file f = { 0 };
	const char *profile = env("AWS_PROFILE");
	char *cred = NULL, *conf = NULL, *sect = NULL;
	const char *addr = env("IMGCHAIN_S3_ADDRESSING");
	int err;

	memset(c, 0, sizeof(*c));
	if (!profile)
		profile = "default";
	cred = home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
	conf = home_file("AWS_CONFIG_FILE", ".aws/config");
	if (asprintf(&sect, "profile %s", profile) < 0) {
		sect = NULL;
		err = -ENOMEM;
		goto out;
	}
	err = read_ini(cred, profile, NULL, &f);
	if (!err)
		err = read_ini(conf, sect, strcmp(profile, "default") == 0 ? "default" : NULL, &f);
	if (err)
		goto out;
	if (env("AWS_ACCESS_KEY_ID") || env("AWS_SECRET_ACCESS_KEY")) {
		/* the environment's credentials come as a set: never mixed with a file's */
		err = pick(&c->access_key, env("AWS_ACCESS_KEY_ID"), NULL);
		err = err ? err : pick(&c->secret_key, env("AWS_SECRET_ACCESS_KEY"), NULL);
		err = err ? err : pick(&c->token, env("AWS_SESSION_TOKEN"), NULL);
	} else {
		err = pick(&c->access_key, f.key_id, NULL);
		err = err ? err : pick(&c->secret_key, f.secret, NULL);
		err = err ? err : pick(&c->token, f.token, NULL);
	}
	err = err ? err : pick(&c->region, env("AWS_REGION"),
			       env("AWS_DEFAULT_REGION") ? env("AWS_DEFAULT_REGION") : f.region);
	err = err ? err : pick(&c->endpoint, env("AWS_ENDPOINT_URL_S3"),
			       env("AWS_ENDPOINT_URL") ? env("AWS_ENDPOINT_URL") : f.endpoint);
	err = err ? err : pick(&c->ca_bundle, env("AWS_CA_BUNDLE"), f.ca_bundle);
	if (err)
		goto out;
	if (!c->region && !(c->region = strdup("us-east-1"))) {
		err = -ENOMEM;
		goto out;
	}
	if (!c->access_key || !c->secret_key) {
		err = ic_fail(-EACCES, "S3: no credentials: set AWS_ACCESS_KEY_ID and "
			      "AWS_SECRET_ACCESS_KEY, or a profile in %s (AWS_PROFILE=%s)",
			      cred ? cred : "~/.aws/credentials", profile);
		goto out;
	}
	if (!addr)
		addr = f.addressing;
	if (!c->endpoint) {
		if (asprintf(&c->endpoint, "https://s3.%s.amazonaws.com", c->region) < 0) {
			c->endpoint = NULL;
			err = -ENOMEM;
			goto out;
		}
		c->path_style = false;
	} else {
		size_t n = strlen(c->endpoint);

		while (n && c->endpoint[n - 1] == '/')
			c->endpoint[--n] = '\0';
		c->path_style = true;
	}
	if (addr && strcmp(addr, "path") == 0)
		c->path_style = true;
	else if (addr && strcmp(addr, "virtual") == 0)
		c->path_style = false;
	else if (addr && strcmp(addr, "auto") != 0) {
		err = ic_fail(-EINVAL, "S3: addressing style '%s': use path or virtual", addr);
		goto out;
	}
	c->allow_http = env("IMGCHAIN_S3_ALLOW_HTTP") && strcmp(env("IMGCHAIN_S3_ALLOW_HTTP"), "1") == 0;
	if (strncmp(c->endpoint, "https://", 8) != 0) {
		if (strncmp(c->endpoint, "http://", 7) != 0) {
			err = ic_fail(-EINVAL, "S3: endpoint '%s': not an http(s):// URL", c->endpoint);
			goto out;
		}
		if (!c->allow_http) {
			err = ic_fail(-EINVAL, "S3: endpoint '%s' is plain HTTP: set "
				      "IMGCHAIN_S3_ALLOW_HTTP=1 to allow it (a local endpoint only)",
				      c->endpoint);
			goto out;
		}
	}
	c->retry_seconds = env_uint("IMGCHAIN_S3_RETRY_SECONDS", 60);
	c->stall_seconds = env_uint("IMGCHAIN_S3_STALL_SECONDS", 60);
	if (c->stall_seconds == 0)
		c->stall_seconds = 60;
out:
	conf_file_free(&f);
	free(cred);
	free(conf);
	free(sect);
	if (err)
		ic_s3_conf_free(c);
	return err;
}

void ic_s3_conf_free(struct ic_s3_conf *c)
{
	free(c->endpoint);
	free(c->region);
	free(c->access_key);
	if (c->secret_key)
		memset(c->secret_key, 0, strlen(c->secret_key));
	free(c->secret_key);
	free(c->token);
	free(c->ca_bundle);
	memset(c, 0, sizeof(*c));
}
