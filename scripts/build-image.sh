#!/usr/bin/env bash
# Build a local systemd node image for the lab containers (no registry is needed or used).
# The image is a minimal Debian install: debootstrap --variant=minbase plus systemd, systemd-sysv,
# dbus, sudo, python3 and ca-certificates. Everything else the nodes need is installed by the roles.
#
# Usage: scripts/build-image.sh [--ssh] [SUITE]
#   SUITE  bookworm (Debian 12, default) or trixie (Debian 13)
#   --ssh  also openssh-server (nodes reached over real SSH, molecule/ssh)
# Image: pi-lab/debian:SUITE or pi-lab/debian:SUITE-ssh (PI_LAB_IMAGE overrides the name).
# The image carries a label with a hash of this script and its arguments: an image built by an
# older recipe (other package list) is rebuilt, a current one is kept (FORCE=1 always rebuilds).
set -euo pipefail

variant=""
if [[ "${1:-}" == --ssh ]]; then variant=ssh; shift; fi
suite="${1:-${PI_LAB_SUITE:-bookworm}}"
case "$suite" in
  bookworm | trixie) ;;
  *) echo "build-image: suite must be bookworm or trixie, not '$suite'" >&2; exit 2 ;;
esac
image="${PI_LAB_IMAGE:-pi-lab/debian:${suite}${variant:+-$variant}}"
packages="systemd,systemd-sysv,dbus,sudo,python3,ca-certificates"
[[ -z "$variant" ]] || packages+=",openssh-server"

recipe="$({ cat "${BASH_SOURCE[0]}"; echo "$suite $variant $packages"; } | sha256sum | cut -c1-16)"
if [[ "${FORCE:-0}" != 1 ]]; then
  have="$(docker image inspect --format '{{ index .Config.Labels "pi-lab.recipe" }}' "$image" 2>/dev/null || true)"
  if [[ "$have" == "$recipe" ]]; then
    echo "image $image is current (recipe $recipe; FORCE=1 rebuilds it)"
    exit 0
  fi
  [[ -z "$have" ]] || echo "image $image has recipe '${have/<no value>/none}', want $recipe: rebuilding"
fi

rootfs="$(mktemp -d /var/tmp/pi-lab-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT

echo "debootstrap --variant=minbase $suite ($packages) into $rootfs ..."
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  exit 1
}

# Trust the same extra CA certificates as the host (TLS to package mirrors may be re-signed).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
# The suite's own mirror list (the host's would name another release). Security updates too.
mirror="$(sed -n 's/^deb \([^ ]*\) .*/\1/p' "$rootfs/etc/apt/sources.list" | head -n 1)"
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb ${mirror:-http://deb.debian.org/debian} $suite main
deb ${mirror:-http://deb.debian.org/debian} $suite-updates main
deb ${mirror:-http://deb.debian.org/debian}-security $suite-security main
EOF
# Units that make no sense in a container.
for unit in systemd-firstboot.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-remount-fs.service getty@tty1.service console-getty.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
if [[ "$variant" == ssh ]]; then
  # Every container must get its own host keys: generated at first boot, not baked in.
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
  cat >"$rootfs/etc/systemd/system/ssh.service.d/host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
  chroot "$rootfs" systemctl enable ssh.service >/dev/null 2>&1 || true
fi
: >"$rootfs/etc/machine-id"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*

echo "docker import -> $image"
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change "LABEL pi-lab.recipe=$recipe pi-lab.suite=$suite pi-lab.variant=${variant:-base}" \
  --change 'ENV container=docker' - "$image" >/dev/null
docker image ls "$image"
