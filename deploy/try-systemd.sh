#!/usr/bin/env bash
# Runs the units of deploy/systemd under a real systemd on one machine, on
# loopback, and checks them with the aws cli: a stand-in for three hosts when
# no container engine is available.
#
# A throwaway Debian root (debootstrap, ~250 MB, under $ROOT) gets the
# `sillok` binary, the units, a 3-site loopback cluster (6 nodes, 3 catalog
# replicas, 1 gateway: ten instances of the three units) and settings files
# made like deploy/*.example.toml. systemd then boots in that root as PID 1
# of its own PID, mount and UTS namespaces (network shared, so loopback
# reaches it), starts sillok.target with every hardening option of the units
# in force, and the script runs the aws cli against the gateway, shows
# `systemctl status`, and stops everything. Needs root, debootstrap and the
# aws cli; run from the repository: `sudo deploy/try-systemd.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-/var/tmp/sillok-systemd-root}
BIN=$(realpath "${SILLOK_BIN:-target/release/sillok}")
MIRROR=${MIRROR:-http://deb.debian.org/debian}
P=27  # port prefix: nodes 271xx, node ops 272xx, catalog 274xx, catalog ops 275xx, gateway 27000/27001

[ "$(id -u)" = 0 ] || { echo "run as root (it boots systemd in a private root)"; exit 1; }
if [ ! -x "$ROOT/lib/systemd/systemd" ]; then
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates bookworm "$ROOT" "$MIRROR"
fi

echo "== install the binary, the units and the settings"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/sillok"
cp deploy/systemd/*.service deploy/systemd/*.target "$ROOT/etc/systemd/system/"
chroot "$ROOT" sh -c 'id sillok >/dev/null 2>&1 || useradd --system --home-dir /var/lib/sillok --shell /usr/sbin/nologin sillok'
rm -rf "$ROOT/etc/sillok" "$ROOT/var/lib/sillok"
install -d -m 0750 "$ROOT/etc/sillok"
cat >"$ROOT/etc/sillok/topology.json" <<TOPO
{ "sites": [{ "id": "site-a" }, { "id": "site-b" }, { "id": "site-c" }],
  "nodes": [
    { "id": 1, "site": "site-a", "addr": "127.0.0.1:${P}101", "weight": 1.0 },
    { "id": 2, "site": "site-a", "addr": "127.0.0.1:${P}102", "weight": 1.0 },
    { "id": 3, "site": "site-b", "addr": "127.0.0.1:${P}103", "weight": 1.0 },
    { "id": 4, "site": "site-b", "addr": "127.0.0.1:${P}104", "weight": 1.0 },
    { "id": 5, "site": "site-c", "addr": "127.0.0.1:${P}105", "weight": 1.0 },
    { "id": 6, "site": "site-c", "addr": "127.0.0.1:${P}106", "weight": 1.0 } ] }
TOPO
"$BIN" init --topology "$ROOT/etc/sillok/topology.json" --out "$ROOT/etc/sillok/cluster.json" \
    --replica site-a=127.0.0.1:${P}401 --replica site-b=127.0.0.1:${P}402 --replica site-c=127.0.0.1:${P}403 >/dev/null
for i in 1 2 3 4 5 6; do
    printf 'cluster = "/etc/sillok/cluster.json"\nlisten = "127.0.0.1:%s"\nops-listen = "127.0.0.1:%s"\n' \
        "${P}10$i" "${P}20$i" >"$ROOT/etc/sillok/node-$i.toml"
done
for i in 1 2 3; do
    printf 'cluster = "/etc/sillok/cluster.json"\nlisten = "127.0.0.1:%s"\nops-listen = "127.0.0.1:%s"\n' \
        "${P}40$i" "${P}50$i" >"$ROOT/etc/sillok/catalog-$i.toml"
done
printf 'cluster = "/etc/sillok/cluster.json"\nlisten = "127.0.0.1:%s000"\nops-listen = "127.0.0.1:%s001"\ndomain = ["localhost"]\n' \
    "$P" "$P" >"$ROOT/etc/sillok/gateway.toml"
chroot "$ROOT" sh -c 'chown -R root:sillok /etc/sillok && chmod 0640 /etc/sillok/*'

echo "== enable the units; mask what a throwaway root must not do to the machine it shares a kernel with"
systemctl --root="$ROOT" enable sillok.target sillok-gateway.service \
    sillok-catalog@{1,2,3}.service sillok-node@{1,2,3,4,5,6}.service 2>&1 | tail -1
systemctl --root="$ROOT" mask systemd-sysctl.service systemd-modules-load.service systemd-binfmt.service \
    systemd-remount-fs.service systemd-udevd.service systemd-udev-trigger.service kmod-static-nodes.service \
    systemd-tmpfiles-setup-dev.service systemd-firstboot.service systemd-pstore.service \
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
    dev-hugepages.mount dev-mqueue.mount getty@tty1.service console-getty.service \
    systemd-journald-audit.socket systemd-hwdb-update.service >/dev/null 2>&1
ln -sf /lib/systemd/system/multi-user.target "$ROOT/etc/systemd/system/default.target"
# Where systemd cannot give a service its own mount namespace (seen in a
# sandbox: every unit, even /bin/true with ProtectHome=yes alone, exits
# 226/NAMESPACE), NO_MOUNT_NAMESPACES=1 turns off the options that need one,
# in a drop-in, and says so; every other option stays in force.
rm -rf "$ROOT"/etc/systemd/system/sillok-*.service.d
if [ "${NO_MOUNT_NAMESPACES:-0}" = 1 ]; then
    for u in sillok-catalog@ sillok-node@ sillok-gateway; do
        mkdir -p "$ROOT/etc/systemd/system/$u.service.d"
        printf '[Service]\nProtectSystem=no\nProtectHome=no\nPrivateTmp=no\nPrivateDevices=no\nProtectKernelTunables=no\nProtectKernelModules=no\nProtectKernelLogs=no\nProtectControlGroups=no\nProtectProc=default\nProtectHostname=no\nProtectClock=no\nRestrictNamespaces=no\n' \
            >"$ROOT/etc/systemd/system/$u.service.d/no-mount-namespaces.conf"
    done
    echo "NOTE: options that need a mount namespace are OFF (NO_MOUNT_NAMESPACES=1)"
fi

echo "== boot systemd in its own namespaces"
BOOT_LOG=$(mktemp)
# The root is bind-mounted onto itself: systemd sets up each unit's mount
# namespace (ProtectSystem= and the rest) only when / is a mount point.
unshare --pid --fork --mount --uts --propagation private --kill-child sh -c "
    mount --bind '$ROOT' '$ROOT'
    mount -t proc proc '$ROOT/proc'
    mount --rbind /sys '$ROOT/sys'
    mount -t tmpfs -o mode=755 tmpfs '$ROOT/run'
    mount -t tmpfs -o mode=755 tmpfs '$ROOT/dev'
    for d in null zero full random urandom tty; do touch '$ROOT/dev/'\$d; mount --bind /dev/\$d '$ROOT/dev/'\$d; done
    mkdir -p '$ROOT/dev/pts' '$ROOT/dev/shm'; mount -t tmpfs tmpfs '$ROOT/dev/shm'
    exec chroot '$ROOT' /lib/systemd/systemd --system --log-target=console
" >"$BOOT_LOG" 2>&1 &
BOOT=$!
in_root() { nsenter --target "$(pgrep -P $BOOT -x systemd || pgrep -P "$(pgrep -P $BOOT)" -x systemd)" --pid --mount --uts chroot "$ROOT" "$@"; }
cleanup() { kill -9 "$BOOT" 2>/dev/null; wait "$BOOT" 2>/dev/null; true; }
trap 'rc=$?; cleanup; exit $rc' EXIT

up=0
for _ in $(seq 1 ${WAIT_S:-120}); do
    if curl -fsS "http://127.0.0.1:${P}001/ready" >/dev/null 2>&1; then up=1; break; fi
    sleep 1
done
echo "== systemctl list-units 'sillok*'"
in_root systemctl list-units --no-pager --all 'sillok*' || true
if [ $up != 1 ]; then
    echo "the gateway never became ready"
    in_root systemctl status --no-pager -l sillok-node@1 sillok-gateway | head -40
    in_root journalctl --no-pager -n 60 -u sillok-node@1 -u sillok-gateway
    cat "$BOOT_LOG" | tail -20
    exit 1
fi
echo "== hardening in force (sillok-node@1)"
in_root systemctl show sillok-node@1 -p User -p ProtectSystem -p NoNewPrivileges -p StateDirectory -p CapabilityBoundingSet --no-pager
in_root sh -c 'ls -ld /var/lib/sillok/node-1 /etc/sillok/cluster.json'

echo "== aws cli smoke test through the gateway unit"
KEY=$(python3 -c "import json;f=json.load(open('$ROOT/etc/sillok/cluster.json'));k=f['access_keys'][0];print(k['access_key_id'],k['secret_access_key'],f['region'])")
read -r AK SK RG <<<"$KEY"
export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=$RG AWS_DEFAULT_REGION=$RG
E=http://127.0.0.1:${P}000
head -c 2000000 /dev/urandom >"$ROOT/tmp/smoke.bin"
aws --endpoint-url $E s3 mb s3://smoke
aws --endpoint-url $E s3 cp --no-progress "$ROOT/tmp/smoke.bin" s3://smoke/smoke.bin
aws --endpoint-url $E s3 ls s3://smoke
aws --endpoint-url $E s3 cp --no-progress s3://smoke/smoke.bin "$ROOT/tmp/smoke.back"
cmp "$ROOT/tmp/smoke.bin" "$ROOT/tmp/smoke.back" && echo "smoke test: identical bytes back"
echo "== systemctl stop sillok.target"
in_root systemctl stop sillok.target
in_root systemctl list-units --no-pager --all 'sillok*' | head -14
