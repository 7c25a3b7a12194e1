#!/usr/bin/env bash
# images.sh — build job images locally and import them into the engines
# that scripts/engines.sh runs (no registry is reachable: nothing is pulled).
#
#   scripts/images.sh golang              localhost/kiln/golang:<go version> into Docker
#   scripts/images.sh golang --podman     … into Docker and Podman
#   scripts/images.sh golang --only podman
#
# golang: the base image's busybox userland (engines.sh --rootfs), the
# host's Go toolchain (`go env GOROOT`, at /usr/local/go), the host's CA
# certificates (/etc/ssl/certs, so the job reaches the module proxy over https)
# and git with the libraries it links. Tagged localhost/kiln/golang:1.26.8,
# :1.26 and :latest (for the host's go1.26.8). Environment: PATH with
# /usr/local/go/bin and /root/go/bin, GOPATH=/root/go,
# GOCACHE=/root/.cache/go-build, GOFLAGS=-buildvcs=false, CGO_ENABLED=0
# (there is no C compiler in the image).
#
# Idempotent: an engine whose image already carries the same Go version and
# recipe labels is left alone, and the rootfs is built only when one needs it.
# Run as root, after scripts/engines.sh. Progress goes to stderr.
set -euo pipefail

DOCKER_SOCK=/run/kiln-docker.sock
PODMAN_SOCK=/run/kiln-podman.sock
# Bump when what goes into the image changes, so existing images are rebuilt.
RECIPE=2
LABEL_GO=dev.kiln.golang.version
LABEL_RECIPE=dev.kiln.image.recipe

usage() {
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit "${1:-0}"
}

log() { echo "images.sh: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

what=""
engines=(docker)
while [ $# -gt 0 ]; do
	case "$1" in
	golang) what=golang ;;
	--podman) engines=(docker podman) ;;
	--only)
		[ $# -ge 2 ] || usage 2
		case "$2" in docker | podman) engines=("$2") ;; *) usage 2 ;; esac
		shift
		;;
	--only=docker | --only=podman) engines=("${1#--only=}") ;;
	-h | --help) usage 0 ;;
	*)
		log "unknown argument $1"
		usage 2
		;;
	esac
	shift
done
[ -n "$what" ] || usage 2
[ "$(id -u)" = 0 ] || die "run as root (it talks to the engines' root sockets)"

# engine NAME ARGS...: the CLI of engine NAME on Kiln's socket.
engine() {
	local name=$1
	shift
	case "$name" in
	docker) docker -H "unix://$DOCKER_SOCK" "$@" ;;
	podman) podman --url "unix://$PODMAN_SOCK" "$@" ;;
	esac
}

# base_rootfs DIR: the busybox userland of the base image
# localhost/kiln/busybox, written by engines.sh itself.
base_rootfs() {
	"$(dirname "$0")/engines.sh" --rootfs "$1" || die "scripts/engines.sh --rootfs $1 failed"
}

# copy_with_libs ROOT FILE...: copy dynamically linked programs to the same
# path under ROOT, with every shared library ldd says they load (and the
# loader), at the paths ldd gives.
copy_with_libs() {
	local root=$1 f lib
	shift
	for f in "$@"; do
		mkdir -p "$root$(dirname "$f")"
		cp -L "$f" "$root$f"
		for lib in $(ldd "$f" | grep -o '/[^ ]*'); do
			[ -e "$root$lib" ] && continue
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done
	done
}

# golang_rootfs DIR GOROOT
golang_rootfs() {
	local root=$1 goroot=$2 core=/usr/lib/git-core
	base_rootfs "$root"
	mkdir -p "$root/usr/local" "$root/etc/ssl" "$root/root/go" "$root/root/.cache"
	cp -a "$goroot" "$root/usr/local/go"
	# The CA bundle and the hashed links, dereferenced (the links point
	# into /usr/share/ca-certificates, which the image does not have).
	cp -rL /etc/ssl/certs "$root/etc/ssl/certs"
	if command -v git >/dev/null && [ -x "$core/git-remote-https" ]; then
		# git for `go get` of modules outside the proxy and for jobs' own use.
		# Its builtins are in the one binary; https goes through a helper.
		# (/usr/bin is a link to /bin in the rootfs, so /usr/bin/git lands
		# in /bin.)
		copy_with_libs "$root" "$(command -v git)" "$core/git-remote-http" "$core/git-remote-https"
		ln -sf "$(command -v git)" "$root$core/git"
	else
		log "git not found on the host: the image has no git (GOPROXY covers modules)"
	fi
}

# prune_replaced ENGINE: remove the images this script imported before and
# has since replaced (untagged, with its label); nobody else's.
prune_replaced() {
	local ids
	ids=$(engine "$1" images -q --filter dangling=true --filter "label=$LABEL_GO" 2>/dev/null | sort -u)
	[ -z "$ids" ] && return 0
	log "$1: removing replaced images: $(echo $ids)"
	# shellcheck disable=SC2086 # one argument per id
	engine "$1" rmi $ids >/dev/null 2>&1 || log "$1: some replaced images are still in use; left"
}

build_golang() {
	local gover goroot tag minor tags=() missing=() e
	command -v go >/dev/null || die "go is not on PATH"
	gover=$(go env GOVERSION) # go1.26.8
	goroot=$(go env GOROOT)
	[ "$goroot" = /usr/local/go ] || log "note: GOROOT is $goroot; it goes to /usr/local/go in the image"
	tag=${gover#go}
	minor=$(echo "$tag" | cut -d. -f1,2)
	tags=("localhost/kiln/golang:$tag" "localhost/kiln/golang:$minor" "localhost/kiln/golang:latest")
	for e in "${engines[@]}"; do
		if [ "$(engine "$e" image inspect -f "{{index .Config.Labels \"$LABEL_GO\"}}/{{index .Config.Labels \"$LABEL_RECIPE\"}}" "${tags[0]}" 2>/dev/null)" = "$gover/$RECIPE" ]; then
			log "$e: ${tags[0]} is up to date"
			for t in "${tags[@]:1}"; do engine "$e" tag "${tags[0]}" "$t" >/dev/null; done
			prune_replaced "$e"
		else
			missing+=("$e")
		fi
	done
	[ ${#missing[@]} -gt 0 ] || return 0

	TMPDIR_IMAGES=$(mktemp -d)
	local tmp=$TMPDIR_IMAGES
	trap 'rm -rf "$TMPDIR_IMAGES"' EXIT
	log "building the rootfs (Go $tag from $goroot)"
	golang_rootfs "$tmp/rootfs" "$goroot"
	tar -C "$tmp/rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$tmp/rootfs.tar" .
	local changes=(
		-c 'CMD ["/bin/sh"]'
		-c 'WORKDIR /workspace'
		-c 'ENV PATH=/root/go/bin:/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin'
		-c 'ENV GOROOT=/usr/local/go'
		-c 'ENV GOPATH=/root/go'
		-c 'ENV GOCACHE=/root/.cache/go-build'
		-c 'ENV GOFLAGS=-buildvcs=false'
		-c 'ENV CGO_ENABLED=0'
		-c 'ENV SSL_CERT_DIR=/etc/ssl/certs'
		-c "LABEL $LABEL_GO=$gover"
		-c "LABEL $LABEL_RECIPE=$RECIPE"
	)
	for e in "${missing[@]}"; do
		log "$e: importing ${tags[0]} ($(du -sh "$tmp/rootfs.tar" | cut -f1))"
		case "$e" in
		docker) engine docker import "${changes[@]}" - "${tags[0]}" <"$tmp/rootfs.tar" >/dev/null ;;
		podman) engine podman import "${changes[@]}" "$tmp/rootfs.tar" "${tags[0]}" >/dev/null ;;
		esac
		for t in "${tags[@]:1}"; do engine "$e" tag "${tags[0]}" "$t" >/dev/null; done
		log "$e: ${tags[*]}"
		prune_replaced "$e"
	done
}

case "$what" in
golang) build_golang ;;
esac
