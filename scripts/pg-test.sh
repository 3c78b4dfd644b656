#!/usr/bin/env bash
# pg-test.sh starts and stops a throwaway PostgreSQL server for the tests of
# internal/postgres (and anything else that reads PULSEBASE_TEST_DATABASE_URL).
#
#   eval "$(scripts/pg-test.sh start)"   # prints: export PULSEBASE_TEST_DATABASE_URL=...
#   go test -race ./...
#   scripts/pg-test.sh stop
#
# start installs PostgreSQL from Debian's packages when it is missing, creates a cluster in
# a fresh temp dir, and serves it on a free port of 127.0.0.1 only, with trust auth (no
# password: nothing but this machine can reach it) and fsync off (the data is disposable,
# and durability is tested on SQLite). Running start again while the server is up prints
# the same line; stop stops the server and deletes the cluster; both are safe to repeat.
#
# Only the export line goes to stdout, so eval works; progress goes to stderr.
# The state (data dir, binaries, URL) is kept in $PULSEBASE_PG_STATE_DIR/env
# (default /tmp/pulsebase-pg/env), which a shell may also source.
set -euo pipefail

state_dir=${PULSEBASE_PG_STATE_DIR:-/tmp/pulsebase-pg}
env_file=$state_dir/env

log() { echo "pg-test: $*" >&2; }
die() { log "$*"; exit 1; }

# as_pg runs a command as the user that owns the cluster. PostgreSQL refuses to run as
# root, so as root that is the postgres account the Debian package creates; as anyone
# else it is that user.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# find_bin prints the directory holding initdb and pg_ctl: the newest Debian versioned dir
# (/usr/lib/postgresql/<ver>/bin is not on PATH), else whatever PATH has.
find_bin() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
		echo "$d"
	elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
		dirname "$(command -v initdb)"
	fi
}

install_postgres() {
	[ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed; run as root to install it, or install postgresql yourself"
	command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and there is no apt-get; install it yourself"
	log "installing PostgreSQL from Debian's packages"
	# Refresh the package lists only when they do not know the package (a fresh image);
	# retry once after a refresh in case the lists were stale.
	if ! apt-cache show postgresql >/dev/null 2>&1; then
		apt-get update -qq
	fi
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
	fi
}

# free_port prints a TCP port nothing listens on at 127.0.0.1. Another process could take
# it before the server binds it; start retries with a new port if so.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' && return
	fi
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		# A refused connection means the port is free.
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

running() {
	[ -f "$env_file" ] || return 1
	# shellcheck source=/dev/null
	. "$env_file"
	# Ask the server itself: pg_ctl status trusts postmaster.pid, which outlives a killed
	# server whose process was not reaped.
	[ -d "${PULSEBASE_PG_DIR:-}" ] && [ -n "${PULSEBASE_TEST_DATABASE_URL:-}" ] &&
		"$PULSEBASE_PG_BIN/pg_isready" -q -t 5 -d "$PULSEBASE_TEST_DATABASE_URL"
}

start() {
	if running; then
		log "already running at $PULSEBASE_TEST_DATABASE_URL"
		echo "export PULSEBASE_TEST_DATABASE_URL=$PULSEBASE_TEST_DATABASE_URL"
		return
	fi
	stop_quiet # leftovers of a server that died, or of an interrupted start

	local bin
	bin=$(find_bin)
	if [ -z "$bin" ]; then
		install_postgres
		bin=$(find_bin)
		[ -n "$bin" ] || die "PostgreSQL installed, but initdb/pg_ctl not found"
	fi
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		die "running as root needs a postgres user to own the cluster (PostgreSQL refuses root)"
	fi

	local dir
	dir=$(mktemp -d /tmp/pulsebase-pg.XXXXXX)
	# Record the dir before anything else so stop can remove it even if start fails below.
	mkdir -p "$state_dir"
	printf 'PULSEBASE_PG_DIR=%q\nPULSEBASE_PG_BIN=%q\n' "$dir" "$bin" >"$env_file"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$dir"
	fi
	chmod 700 "$dir"

	# cd: the postgres user may not be able to read the caller's working directory.
	(cd "$dir" && as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C \
		--no-sync >"$dir/initdb.log" 2>&1) || {
		cat "$dir/initdb.log" >&2
		die "initdb failed"
	}

	local port url
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		# The settings live in an included file that a retry with another port overwrites.
		as_pg tee "$dir/data/postgresql.conf.d-pulsebase" >/dev/null <<-EOF
			listen_addresses = '127.0.0.1'
			port = $port
			unix_socket_directories = '$dir'
			max_connections = 300
			fsync = off
			synchronous_commit = off
			full_page_writes = off
		EOF
		as_pg sh -c "grep -q \"^include 'postgresql.conf.d-pulsebase'\" '$dir/data/postgresql.conf' ||
			echo \"include 'postgresql.conf.d-pulsebase'\" >>'$dir/data/postgresql.conf'"
		if (cd "$dir" && as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null); then
			break
		fi
		[ "$attempt" -lt 5 ] || {
			tail -n 20 "$dir/server.log" >&2 || true
			die "could not start PostgreSQL"
		}
		log "start on port $port failed, retrying on another port"
	done

	url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
	printf 'PULSEBASE_PG_DIR=%q\nPULSEBASE_PG_BIN=%q\nexport PULSEBASE_TEST_DATABASE_URL=%q\n' \
		"$dir" "$bin" "$url" >"$env_file"
	log "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') running at $url (data in $dir)"
	echo "export PULSEBASE_TEST_DATABASE_URL=$url"
}

# stop_quiet stops and removes whatever the state file names; no state is not an error.
stop_quiet() {
	[ -f "$env_file" ] || return 0
	local PULSEBASE_PG_DIR="" PULSEBASE_PG_BIN=""
	# shellcheck source=/dev/null
	. "$env_file"
	if [ -n "$PULSEBASE_PG_DIR" ] && [ -d "$PULSEBASE_PG_DIR/data" ] && [ -n "$PULSEBASE_PG_BIN" ]; then
		(cd "$PULSEBASE_PG_DIR" && as_pg "$PULSEBASE_PG_BIN/pg_ctl" -D "$PULSEBASE_PG_DIR/data" \
			-m fast -w -t 60 stop >/dev/null 2>&1) || true
	fi
	# Only ever delete a dir this script made.
	case "$PULSEBASE_PG_DIR" in
	/tmp/pulsebase-pg.??????) rm -rf "$PULSEBASE_PG_DIR" ;;
	esac
	rm -f "$env_file"
}

stop() {
	if [ ! -f "$env_file" ]; then
		log "not running"
		return
	fi
	stop_quiet
	log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
