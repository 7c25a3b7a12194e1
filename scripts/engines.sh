#!/usr/bin/env bash
# engines.sh — install and start the container engines Kiln runs sandboxes
# on (Docker and Podman's Docker-compatible API), each on its own socket,
# and import the base image localhost/kiln/busybox:latest into both.
#
# Run as root. Idempotent: what is installed, running or imported already
# is left as it is, so running it again is cheap.
#
#   scripts/engines.sh                     set up both engines, print the test env
#   eval "$(scripts/engines.sh --env)"     same, stdout has only the export lines
#   scripts/engines.sh --only docker       just one engine (docker or podman)
#   scripts/engines.sh --rootfs DIR        only write the base image's files to DIR
#
# Progress goes to stderr; the export lines to stdout:
#   export KILN_TEST_DOCKER_HOST=unix:///run/kiln-docker.sock
#   export KILN_TEST_PODMAN_HOST=unix:///run/kiln-podman.sock
#
# Notes for this kind of machine (see shared DESIGN.md):
#   - no registry: the base image is built here from Debian's busybox-static
#     and imported, never pulled;
#   - no CAP_SYS_RESOURCE: Podman must not raise rlimits (default_ulimits
#     at or below the current ones) and uses runc (crun refuses the hybrid
#     cgroup setup);
#   - dockerd gets its own --data-root/--exec-root/socket so it never
#     collides with a system Docker.
set -euo pipefail

DOCKER_SOCK=/run/kiln-docker.sock
DOCKER_PIDFILE=/run/kiln-docker.pid
DOCKER_LOG=/var/log/kiln-dockerd.log
PODMAN_SOCK=/run/kiln-podman.sock
PODMAN_PIDFILE=/run/kiln-podman.pid
PODMAN_LOG=/var/log/kiln-podman.log
CONTAINERS_CONF=/etc/containers/containers.conf
IMAGE=localhost/kiln/busybox:latest
IMAGE_LABEL=dev.kiln.rootfs.sha256
LOCK=/run/kiln-engines.lock
WAIT_SECONDS=${KILN_ENGINES_WAIT:-90}

usage() {
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit "${1:-0}"
}

env_only=0
rootfs_dir=
engines=(docker podman)
while [ $# -gt 0 ]; do
	case "$1" in
	--env) env_only=1 ;;
	--only)
		[ $# -ge 2 ] || usage 2
		case "$2" in docker | podman) engines=("$2") ;; *) usage 2 ;; esac
		shift
		;;
	--only=docker | --only=podman) engines=("${1#--only=}") ;;
	--rootfs)
		[ $# -ge 2 ] || usage 2
		rootfs_dir=$2
		shift
		;;
	-h | --help) usage 0 ;;
	*)
		echo "engines.sh: unknown argument $1" >&2
		usage 2
		;;
	esac
	shift
done

log() { echo "engines.sh: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}
want() { [[ " ${engines[*]} " == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || [ -n "$rootfs_dir" ] || die "run as root (it installs packages and starts daemons)"


# --- packages -------------------------------------------------------------

install_packages() {
	local pkgs=(busybox-static curl iptables runc) missing=() p
	want docker && pkgs+=(docker.io)
	# slirp4netns: Podman sandboxes use user-mode networking (a Recommends only).
	want podman && pkgs+=(podman slirp4netns)
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]}"
	(
		# Keep the packages' own services (a system dockerd on
		# /run/docker.sock, fighting ours over docker0) from starting.
		policy=/usr/sbin/policy-rc.d
		if [ ! -e "$policy" ]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy"
			chmod +x "$policy"
			trap 'rm -f "$policy"' EXIT
		fi
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >&2
		apt-get install -y -qq "${missing[@]}" >&2
	) || die "could not install ${missing[*]}"
}

# --- daemons --------------------------------------------------------------

docker_up() { timeout 10 docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; }
podman_up() { timeout 10 podman --url "unix://$PODMAN_SOCK" version >/dev/null 2>&1; }

# spawn LOG CMD...: start the daemon CMD in a session of its own, output to
# LOG, holding none of our file descriptors (not the lock, not a caller's
# pipe that would then never see EOF). Sets SPAWNED to its pid.
spawn() {
	local logfile=$1
	shift
	(
		for fd in /proc/$BASHPID/fd/*; do
			fd=${fd##*/}
			[ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
		done
		exec setsid "$@" </dev/null >>"$logfile" 2>&1
	) &
	SPAWNED=$!
}

# alive PIDFILE NAME: the process the pid file names runs, and is NAME (not
# a stranger that got a stale pid).
alive() {
	[ -s "$1" ] || return 1
	local pid
	pid=$(cat "$1")
	kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$2"
}

# wait_up NAME CHECK PID LOG: wait (bounded) until CHECK succeeds; fail
# early if the daemon died, with the end of its log either way.
wait_up() {
	local name=$1 check=$2 pid=$3 logfile=$4 i
	for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
		"$check" && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited during startup; last lines of $logfile:"
			tail -n 30 "$logfile" >&2 || true
			die "$name did not start"
		fi
		sleep 0.25
	done
	log "$name does not answer after ${WAIT_SECONDS}s; last lines of $logfile:"
	tail -n 30 "$logfile" >&2 || true
	die "$name did not start"
}

start_docker() {
	local pid
	if docker_up; then
		log "dockerd already answers on $DOCKER_SOCK"
		return
	fi
	if alive "$DOCKER_PIDFILE" dockerd; then
		pid=$(cat "$DOCKER_PIDFILE")
		log "dockerd (pid $pid) is starting; waiting"
	else
		log "starting dockerd on $DOCKER_SOCK (log: $DOCKER_LOG)"
		# Every sandbox gets a network of its own: give dockerd room for
		# 256 of them (its default pools hold about 30).
		spawn "$DOCKER_LOG" dockerd \
			--data-root /var/lib/kiln-docker \
			--exec-root /run/kiln-docker \
			-H "unix://$DOCKER_SOCK" \
			--pidfile "$DOCKER_PIDFILE" \
			--default-address-pool base=10.213.0.0/16,size=24
		pid=$SPAWNED
	fi
	wait_up dockerd docker_up "$pid" "$DOCKER_LOG"
	log "dockerd answers on $DOCKER_SOCK"
}

configure_podman() {
	local conf
	conf=$(
		cat <<-'EOF'
			# Written by Kiln's scripts/engines.sh.
			# No CAP_SYS_RESOURCE here: never raise rlimits above the current ones.
			[containers]
			default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

			# crun refuses this machine's hybrid cgroups.
			[engine]
			runtime = "runc"
		EOF
	)
	if [ "$(cat "$CONTAINERS_CONF" 2>/dev/null)" != "$conf" ]; then
		log "writing $CONTAINERS_CONF"
		mkdir -p "$(dirname "$CONTAINERS_CONF")"
		printf '%s\n' "$conf" >"$CONTAINERS_CONF"
	fi
}

start_podman() {
	configure_podman
	if podman_up; then
		log "podman service already answers on $PODMAN_SOCK"
		return
	fi
	if ! alive "$PODMAN_PIDFILE" "podman system service"; then
		log "starting podman system service on $PODMAN_SOCK (log: $PODMAN_LOG)"
		rm -f "$PODMAN_SOCK" # stale: nothing answered on it
		spawn "$PODMAN_LOG" podman system service --time=0 "unix://$PODMAN_SOCK"
		echo "$SPAWNED" >"$PODMAN_PIDFILE"
	else
		log "podman service (pid $(cat "$PODMAN_PIDFILE")) is starting; waiting"
	fi
	wait_up "podman service" podman_up "$(cat "$PODMAN_PIDFILE")" "$PODMAN_LOG"
	log "podman service answers on $PODMAN_SOCK"
}

# repair_podman: Podman 4.3 can keep a container in its database whose
# storage is gone (an engine stopped mid-create, a machine restarted). From
# then on every Docker-compatible container listing fails with "getting
# container from store ID: container not known" — for Kiln's agents and for
# every test. Remove each such record (only those: a listing that works is
# left alone), at most 20.
repair_podman() {
	local i out id
	for i in $(seq 1 20); do
		out=$(curl -s --unix-socket "$PODMAN_SOCK" 'http://podman/v1.41/containers/json?all=1') || return 0
		id=$(printf '%s' "$out" | sed -n 's/.*getting container from store \\"\([0-9a-f]\{64\}\)\\": container not known.*/\1/p')
		[ -n "$id" ] || return 0
		log "podman: container $id is in the database but not in storage; removing it"
		podman --url "unix://$PODMAN_SOCK" rm -f "$id" >/dev/null 2>&1 || podman rm -f "$id" >/dev/null 2>&1 || true
	done
}

# prune_networks ENGINE SOCK: remove the networks Kiln made that no
# container uses any more. An agent sweeps its own when it starts again;
# the networks of agents that were killed and never came back (test runs'
# agents, each with an id of its own) would otherwise pile up until the
# engine has no address pool left to give a new network.
prune_networks() {
	local engine=$1 sock=$2 n
	n=$(docker -H "unix://$sock" network prune -f --filter label=dev.kiln.managed=true 2>/dev/null | grep -c '^kiln-' || true)
	[ "$n" = 0 ] || log "$engine: removed $n networks left by agents that are gone"
}

# --- base image -----------------------------------------------------------

# base_rootfs DIR: the base image's file tree, a busybox userland with every
# applet a symlink (also what `--rootfs DIR` writes, for scripts building
# images on top of it).
base_rootfs() {
	local root=$1 applet
	[ -x /bin/busybox ] || die "/bin/busybox is missing: install busybox-static (scripts/engines.sh does)"
	mkdir -p "$root"/{bin,etc,root,tmp,workspace,usr}
	cp /bin/busybox "$root/bin/busybox"
	for applet in $(/bin/busybox --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
	done
	# Merged /usr: scripts that say #!/usr/bin/env or /sbin/ip find them.
	ln -s bin "$root/sbin"
	ln -s ../bin "$root/usr/bin"
	ln -s ../bin "$root/usr/sbin"
	chmod 1777 "$root/tmp"
	chmod 700 "$root/root"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
}

# build_rootfs DIR TAR: base_rootfs packed reproducibly (sorted, fixed
# owners and times) so its hash says whether the imported image is up to
# date.
build_rootfs() {
	base_rootfs "$1"
	tar -C "$1" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$2" .
}

import_image() {
	local tmp sum
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	build_rootfs "$tmp/rootfs" "$tmp/rootfs.tar"
	sum=$(sha256sum "$tmp/rootfs.tar" | cut -d' ' -f1)
	local changes=(-c 'CMD ["/bin/sh"]' -c "LABEL $IMAGE_LABEL=$sum")
	if want docker; then
		if [ "$(docker -H "unix://$DOCKER_SOCK" image inspect -f "{{index .Config.Labels \"$IMAGE_LABEL\"}}" "$IMAGE" 2>/dev/null)" = "$sum" ]; then
			log "docker: $IMAGE is up to date"
		else
			log "docker: importing $IMAGE"
			docker -H "unix://$DOCKER_SOCK" import "${changes[@]}" - "$IMAGE" <"$tmp/rootfs.tar" >/dev/null
		fi
	fi
	if want podman; then
		if [ "$(podman --url "unix://$PODMAN_SOCK" image inspect -f "{{index .Config.Labels \"$IMAGE_LABEL\"}}" "$IMAGE" 2>/dev/null)" = "$sum" ]; then
			log "podman: $IMAGE is up to date"
		else
			log "podman: importing $IMAGE"
			podman --url "unix://$PODMAN_SOCK" import "${changes[@]}" "$tmp/rootfs.tar" "$IMAGE" >/dev/null
		fi
	fi
}

# --- main -----------------------------------------------------------------

if [ -n "$rootfs_dir" ]; then
	base_rootfs "$rootfs_dir"
	exit 0
fi

# One run at a time: two CI jobs starting the same daemons would race.
# (spawn closes fd 9 in the daemons, or they would hold the lock for ever.)
exec 9>"$LOCK"
flock -w "$WAIT_SECONDS" 9 || die "another engines.sh still holds $LOCK after ${WAIT_SECONDS}s"

install_packages
if want docker; then
	start_docker
	prune_networks docker "$DOCKER_SOCK"
fi
if want podman; then
	start_podman
	repair_podman
	prune_networks podman "$PODMAN_SOCK"
fi
import_image

if [ "$env_only" = 0 ]; then
	log "ready; for the tests:"
fi
want docker && echo "export KILN_TEST_DOCKER_HOST=unix://$DOCKER_SOCK"
want podman && echo "export KILN_TEST_PODMAN_HOST=unix://$PODMAN_SOCK"
exit 0
