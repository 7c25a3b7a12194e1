#!/usr/bin/env bash
# runner-image.sh — build Kiln's fake GitHub Actions runner image,
# localhost/kiln/fake-runner:latest, and import it into Docker and Podman.
#
#   scripts/runner-image.sh                  both engines
#   scripts/runner-image.sh --only docker    one engine (docker or podman)
#   scripts/runner-image.sh --all            also the test variants :slow, :hold, :stall
#
# The image is the base image scripts/engines.sh imports (its rootfs,
# exported from the engine) plus the fake runner (a static Go binary,
# internal/github/fakegithub/cmd/fake-runner) at /runner/fake-runner and
# /runner/run.sh, which execs it, as a real runner image's entrypoint is.
# Start it with the JIT configuration in ACTIONS_RUNNER_INPUT_JITCONFIG:
#
#   ACTIONS_RUNNER_INPUT_JITCONFIG=... docker run --rm -e ACTIONS_RUNNER_INPUT_JITCONFIG localhost/kiln/fake-runner
#
# Variants (--all), same rootfs, other configuration: :slow runs each job
# for 3s (FAKE_RUNNER_JOB_DURATION=3s); :hold keeps its job for an hour or
# until the run is cancelled (FAKE_RUNNER_JOB_DURATION=1h); :stall never
# registers (FAKE_RUNNER_STALL=1, command `sleep`).
#
# Idempotent: each image carries a label with the digest of what went into
# it (base image id, binary, run.sh, configuration), computed as package
# internal/github/fakegithub/cmd/fake-runner/runnerimage computes it (the
# e2e tests and bench/actionsbench import the image themselves through it);
# an image whose label matches is left alone. Run after scripts/engines.sh,
# as a user that may use the engines' sockets. Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER_SOCK=/run/kiln-docker.sock
PODMAN_SOCK=/run/kiln-podman.sock
BASE=localhost/kiln/busybox:latest
REPO=localhost/kiln/fake-runner
LABEL=dev.kiln.fake-runner.sha256
PKG=./internal/github/fakegithub/cmd/fake-runner
# Keep in step with runnerimage.recipe.
RECIPE=1

usage() {
	sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit "${1:-0}"
}

log() { echo "runner-image.sh: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

engines=(docker podman)
variants=(latest)
while [ $# -gt 0 ]; do
	case "$1" in
	--only)
		[ $# -ge 2 ] || usage 2
		case "$2" in docker | podman) engines=("$2") ;; *) usage 2 ;; esac
		shift
		;;
	--only=docker | --only=podman) engines=("${1#--only=}") ;;
	--all) variants=(latest slow hold stall) ;;
	-h | --help) usage 0 ;;
	*)
		echo "runner-image.sh: unknown argument $1" >&2
		usage 2
		;;
	esac
	shift
done

# cli ENGINE ARGS...: the engine's client on Kiln's socket.
cli() {
	local engine=$1
	shift
	case "$engine" in
	docker) docker -H "unix://$DOCKER_SOCK" "$@" ;;
	podman) podman --url "unix://$PODMAN_SOCK" "$@" ;;
	esac
}

# changes VARIANT: the variant's configuration, one instruction a line, in
# runnerimage's order (CMD, WORKDIR, ENV...).
changes() {
	case "$1" in
	latest) printf '%s\n' 'CMD ["/runner/run.sh"]' 'WORKDIR /runner' ;;
	slow) printf '%s\n' 'CMD ["/runner/run.sh"]' 'WORKDIR /runner' 'ENV FAKE_RUNNER_JOB_DURATION=3s' ;;
	hold) printf '%s\n' 'CMD ["/runner/run.sh"]' 'WORKDIR /runner' 'ENV FAKE_RUNNER_JOB_DURATION=1h' ;;
	stall) printf '%s\n' 'CMD ["sleep","2147483647"]' 'WORKDIR /runner' 'ENV FAKE_RUNNER_STALL=1' ;;
	esac
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/stage/runner"

log "building the fake runner"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/stage/runner/fake-runner" "$PKG"
# The same bytes as runnerimage.runSh.
cat >"$tmp/stage/runner/run.sh" <<'EOF'
#!/bin/sh
# run.sh — the entrypoint of a GitHub Actions runner image. This one runs
# Kiln's fake runner (internal/github/fakegithub/cmd/fake-runner), which
# reads its JIT configuration from ACTIONS_RUNNER_INPUT_JITCONFIG.
exec /runner/fake-runner "$@"
EOF
chmod 755 "$tmp/stage/runner" "$tmp/stage/runner/fake-runner" "$tmp/stage/runner/run.sh"
bin_sum=$(sha256sum "$tmp/stage/runner/fake-runner" | cut -d' ' -f1)
run_sum=$(sha256sum "$tmp/stage/runner/run.sh" | cut -d' ' -f1)

for engine in "${engines[@]}"; do
	base_id=$(cli "$engine" image inspect -f '{{.Id}}' "$BASE" 2>/dev/null) ||
		die "$engine: no $BASE (run scripts/engines.sh first)"
	case "$base_id" in sha256:*) ;; *) base_id="sha256:$base_id" ;; esac
	rootfs=""
	for v in "${variants[@]}"; do
		ref="$REPO:$v"
		sum=$(
			{
				printf 'recipe %s\nbase %s\n' "$RECIPE" "$base_id"
				printf 'bin %s\nrun.sh %s\n' "$bin_sum" "$run_sum"
				changes "$v" | sed 's/^/change /'
			} | sha256sum | cut -d' ' -f1
		)
		if [ "$(cli "$engine" image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$ref" 2>/dev/null)" = "$sum" ]; then
			log "$engine: $ref is up to date"
			continue
		fi
		if [ -z "$rootfs" ]; then
			# The base image's filesystem, from a container created (never
			# started) from it, with /runner added.
			rootfs="$tmp/rootfs-$engine.tar"
			ctr="kiln-fake-runner-export-$$"
			cli "$engine" create --name "$ctr" "$BASE" true >/dev/null
			cli "$engine" export "$ctr" >"$rootfs" || {
				cli "$engine" rm -f "$ctr" >/dev/null 2>&1
				die "$engine: could not export $BASE"
			}
			cli "$engine" rm -f "$ctr" >/dev/null
			tar -C "$tmp/stage" --owner=0 --group=0 --numeric-owner --mtime=@0 -rf "$rootfs" runner
		fi
		args=()
		while IFS= read -r c; do args+=(-c "$c"); done < <(changes "$v")
		args+=(-c "LABEL $LABEL=$sum")
		log "$engine: importing $ref"
		case "$engine" in
		docker) cli docker import "${args[@]}" - "$ref" <"$rootfs" >/dev/null ;;
		podman) cli podman import "${args[@]}" "$rootfs" "$ref" >/dev/null ;;
		esac
	done
done
log "ready: $REPO:{$(
	IFS=,
	echo "${variants[*]}"
)}"
