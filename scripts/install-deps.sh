#!/usr/bin/env bash
# Install the Debian 12 packages imgchain needs (list and roles in scripts/deps.txt).
#   scripts/install-deps.sh             everything: build, demo, tests and benchmarks
#   scripts/install-deps.sh --demo      build, use the tools and run scripts/demo.sh
#   scripts/install-deps.sh --runtime   only what building and using the tools needs
# Idempotent: packages already present are not downloaded again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in
--runtime) roles="run" ;;
--demo) roles="run demo" ;;
""|--all) roles="run demo test" ;;
-h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "install-deps: unknown option '$1' (see --help)" >&2; exit 2 ;;
esac
mapfile -t pkgs < <(grep -v '^\s*#' "$here/deps.txt" |
	awk -v roles=" $roles " 'NF && index(roles, " " ($2 == "" ? "run" : $2) " ") {print $1}')
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#pkgs[@]} packages present"
	exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
