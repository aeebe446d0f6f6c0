#!/usr/bin/env bash
# Instructions per kiosk mark, counted by callgrind: a figure that does not drift with the load on
# a shared machine the way marks/s does, for telling whether a change made a mark cheaper.
#
#   crates/bench/profile-marks.sh [MARKS] [CLIENTS]      (defaults: 10000 marks, 64 clients)
#
# Builds the release daemon and bench, starts the daemon under `valgrind --tool=callgrind` on a
# free loopback port with a scratch CSV, runs `attendance-bench marks` (kiosk shape) against it,
# stops it with SIGTERM (it drains and syncs), and prints the instructions of all its threads in
# all and per mark, then the costliest functions. The total includes start-up and shutdown
# (about 1 M instructions), so compare runs of the same size. Needs valgrind (Debian: apt-get
# install valgrind). Everything stays on 127.0.0.1; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."

marks="${1:-10000}"
clients="${2:-64}"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }

cargo build --release --locked -p attendanced -p attendance-bench
root="$(pwd)"
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/attendanced.toml" <<EOF
listen = "127.0.0.1:0"
csv = "$work/attendance.csv"
class_length = "0s"
rate_limit = 1000000
rate_burst = 1000000
fsync = "always"
login_timeout = "10m"
log_level = "info"
admin_socket = "$work/admin.sock"
EOF

valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$root/target/release/attendanced" --config "$work/attendanced.toml" >"$work/daemon.log" 2>&1 &
daemon_pid=$!

# The daemon logs "listening on <addr>" once it is ready (slowly, under valgrind): at most 120 s.
addr=""
for _ in $(seq 240); do
    addr="$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$work/daemon.log" | head -1 | cut -d' ' -f3 || true)"
    [ -n "$addr" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.5
done
[ -n "$addr" ] || { echo "the daemon did not start listening within 120 s" >&2; exit 1; }

"$root/target/release/attendance-bench" marks -c "$clients" -m "$marks" --addr "$addr" --timeout 600s \
    | grep -E "acknowledged|failed"

kill -TERM "$daemon_pid"
for _ in $(seq 120); do
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.5
done
wait "$daemon_pid" || true
daemon_pid=""

total="$(callgrind_annotate "$work/callgrind.out" 2>/dev/null | grep 'PROGRAM TOTALS' | awk '{gsub(",", "", $1); print $1}')"
echo "instructions, all threads: $total"
echo "instructions per mark:     $((total / marks))"
callgrind_annotate "$work/callgrind.out" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | sed -n '2,21p' | sed 's/ \[.*//'
