# release-lib.sh: imgmounts in mount namespaces of their own for the hand-over tests
# (FORMAT.md 10.7; sourced, never run by itself), on top of mount-lib.sh.  Every mount is
# made on the same path, $WORK/mnt, each in a namespace of its own (unshare -m): two
# servers that share one overlay directory and nothing else, as two hosts would.
#
#   ns_mount NAME [IMGMOUNT OPTION]...   imgmount -f in a new mount namespace, its messages
#                                        in $WORK/NAME.log; NS_PID[NAME] its pid
#   in_ns NAME CMD...                    run CMD in NAME's mount namespace
#   ns_stop NAME                         SIGTERM (a clean unmount), wait, check its status
#   owner_field DIR KEY                  the value of KEY in DIR/owner
#   wait_log NAME REGEX                  wait (60 s) until NAME's log matches REGEX
. "$(dirname "${BASH_SOURCE[0]}")/mount-lib.sh"
requires_root
requires unshare nsenter
unshare -m true 2>/dev/null || skip "cannot make a mount namespace (unshare -m)"

declare -A NS_PID=()
NSMNT=$WORK/mnt
mkdir -p "$NSMNT"

# at exit: a mount still there (stopped by a test, or not) is killed; its namespace goes with it
_ns_kill()
{
	local pid=${NS_PID[$1]:-}
	[[ -n $pid ]] || return 0
	kill -CONT "$pid" 2>/dev/null || true
	kill_quiet "$pid" KILL
	wait "$pid" 2>/dev/null || true
}

ns_mount()
{
	local name=$1 i pid
	shift
	: >"$WORK/$name.log"
	unshare -m --propagation private imgmount -f "$@" "$CHAIN" "$NSMNT" \
		2>>"$WORK/$name.log" </dev/null &
	pid=$!
	NS_PID[$name]=$pid
	cleanup_fn _ns_kill "$name"
	for ((i = 0; i < 600; i++)); do
		nsenter -t "$pid" -m mountpoint -q "$NSMNT" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || fail "imgmount $name died before mounting: $(cat "$WORK/$name.log")"
		sleep 0.05
	done
	fail "imgmount $name not mounted after 30 s: $(cat "$WORK/$name.log")"
}

in_ns()
{
	local name=$1
	shift
	nsenter -t "${NS_PID[$name]}" -m -- "$@"
}

ns_stop()
{
	local pid=${NS_PID[$1]} st=0
	kill -TERM "$pid"
	wait "$pid" || st=$?
	NS_PID[$1]=
	((st == 0)) || fail "imgmount $1 exited with status $st: $(cat "$WORK/$1.log")"
	check_sanitizers "$WORK/$1.log"
}

owner_field()
{
	sed -n "s/^$2 //p" "$1/owner"
}

wait_log()
{
	local i
	for ((i = 0; i < 1200; i++)); do
		grep -qE "$2" "$WORK/$1.log" && return 0
		sleep 0.05
	done
	fail "$1's log never said /$2/: $(cat "$WORK/$1.log")"
}
