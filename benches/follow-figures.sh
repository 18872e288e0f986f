#!/usr/bin/env bash
# Catalog following at 100,000 buckets and 100,000 keys: what one change
# costs a gateway and a storage node that follow the catalog, for each
# binary given (one run, loopback, release builds).
#   1. A small `sillok dev` cluster (the last binary) gives a cluster file and
#      a catalog backup; it is stopped. The backup gets BUCKETS buckets and
#      KEYS keys added (python3).
#   2. For each binary: one catalog replica restored from that backup
#      (failure detector off, so that nothing but our changes is applied),
#      storage node 1 and one gateway, each following the catalog. Then N
#      bucket creations (`sillok admin bucket create`), one at a time: after
#      each is acknowledged, the gateway's metrics page is polled until its
#      applied index moved (the latency). Over the N changes, from /proc:
#      bytes written to disk (write_bytes) and CPU time (utime+stime) of
#      the gateway and of the node, divided by N; then STRACE_N more changes
#      under strace for the bytes each received from the replicas' ports.
#   3. Misses and listings: MISSES HEADs of unknown buckets (distinct names:
#      a name found missing is remembered for a second) and MISSES
#      ListBuckets at the gateway (curl --aws-sigv4), timed, then again under
#      strace for the bytes the gateway received from the replicas per call:
#      a whole view read from the leader (before read indexes) or a read
#      index and the changes the gateway lacked.
# Usage: benches/follow-figures.sh OUT_DIR LABEL=BIN [LABEL=BIN ...]
#   (N=200, STRACE_N=20, MISSES=5, BUCKETS=100000, KEYS=100000 by default)
set -euo pipefail
OUT=$1
shift
N=${N:-200}
SN=${STRACE_N:-20}
MISSES=${MISSES:-5}
NB=${BUCKETS:-100000}
NK=${KEYS:-100000}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/sillok-follow.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
LAST=${!#}
LAST=${LAST#*=}
TICK=$(getconf CLK_TCK)

"$LAST" dev --data "$W/dev" --port 0 --sites 3 --nodes-per-site 1 --profile 2+1 --pgs 64 >"$OUT/dev.log" 2>&1 &
DEV=$!
for _ in $(seq 600); do [ -f "$W/dev/cluster.env" ] && break; sleep 0.1; done
set -a
. "$W/dev/cluster.env"
set +a
for _ in $(seq 100); do "$LAST" admin catalog backup --out "$W/small.json" >/dev/null 2>&1 && break; sleep 0.2; done
kill "$DEV"
wait "$DEV" 2>/dev/null || true
python3 - "$W/small.json" "$W/big.json" "$NB" "$NK" "$SILLOK_ADMIN_KEY_ID" <<'PY'
import json, sys
src, dst, nb, nk, admin = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
b = json.load(open(src))
c = b["catalog"]
for i in range(nb):
    n = f"bench-{i:06d}"
    c["buckets"][n] = {"name": n, "owner": admin, "created_at": 1700000000, "storage_class": "STANDARD"}
tmpl = c["keys"][admin]
for i in range(nk):
    k = dict(tmpl, id=f"BENCHKEY{i:06d}", secret=f"bench-secret-{i:06d}-0123456789abcdefghij", permissions=["read", "write"])
    c["keys"][k["id"]] = k
json.dump(b, open(dst, "w"))
PY
echo "backup with $NB buckets and $NK keys: $(du -h "$W/big.json" | cut -f1)" | tee "$OUT/summary.txt"
# One catalog replica (the first of the dev cluster's): the restored catalog
# is large and this machine is shared; followers and figures are the same.
python3 - "$W/dev/cluster.json" "$W/cluster.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["catalog_replicas"] = c["catalog_replicas"][:1]
json.dump(c, open(sys.argv[2], "w"))
PY
chmod 600 "$W/cluster.json"
SILLOK_CATALOG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["catalog_replicas"][0]["addr"])' "$W/cluster.json")
export SILLOK_CATALOG
RPORTS=$(python3 -c 'import json,sys; print(" ".join(r["addr"].rsplit(":", 1)[1] for r in json.load(open(sys.argv[1]))["catalog_replicas"]))' "$W/cluster.json")
REPLICAS=$(python3 -c 'import json,sys; print(" ".join(str(r["id"]) for r in json.load(open(sys.argv[1]))["catalog_replicas"]))' "$W/cluster.json")

io() { # pid -> "rchar write_bytes cpu_ticks"
  local r w
  r=$(awk '/^rchar/ {print $2}' "/proc/$1/io")
  w=$(awk '/^write_bytes/ {print $2}' "/proc/$1/io")
  echo "$r $w $(awk '{print $14 + $15}' "/proc/$1/stat")"
}
metric() { curl -s "$1/_sillok/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

printf 'binary\tcall\tbytes_from_replicas/call\tms_median\tms_max\n' >"$OUT/misses.tsv"
printf 'binary\tfollower\tbytes_from_replicas/change\tdisk_bytes_written/change\tcpu_ms/change\tlatency_ms_median\tlatency_ms_p90\n' >"$OUT/figures.tsv"
for spec in "$@"; do
  label=${spec%%=*}
  bin=${spec#*=}
  D="$W/$label"
  mkdir -p "$D"
  RUN=()
  for id in $REPLICAS; do
    "$bin" catalog --cluster "$W/cluster.json" --id "$id" --data "$D/replica-$id" --restore-from "$W/big.json" \
      --down-after-ms 86400000 --out-after-ms 86400000 --heartbeat-ms 500 --election-min-ms 5000 \
      --election-max-ms 10000 --rpc-timeout-ms 10000 >"$OUT/$label-replica-$id.log" 2>&1 &
    RUN+=($!)
    PIDS+=($!)
  done
  for _ in $(seq 600); do "$bin" admin status --timeout-secs 2 >/dev/null 2>&1 && break; sleep 0.5; done
  "$bin" node --cluster "$W/cluster.json" --id 1 --data "$D/node-1" >"$OUT/$label-node.log" 2>&1 &
  NODE=$!
  RUN+=($NODE)
  PIDS+=($NODE)
  "$bin" gateway --cluster "$W/cluster.json" --data "$D/gateway" --listen 127.0.0.1:0 \
    --addr-file "$D/gateway.addr" >"$OUT/$label-gateway.log" 2>&1 &
  GW=$!
  RUN+=($GW)
  PIDS+=($GW)
  for _ in $(seq 1200); do [ -s "$D/gateway.addr" ] && break; sleep 0.1; done
  EP="http://$(cat "$D/gateway.addr")"
  sleep 5 # let the gateway settle (first view saved, probes started)
  read -r _ g_w0 g_c0 <<<"$(io $GW)"
  read -r _ n_w0 n_c0 <<<"$(io $NODE)"
  : >"$D/latency"
  for i in $(seq "$N"); do
    before=$(metric "$EP" sillok_catalog_applied_index)
    "$bin" admin bucket create "new-$label-$i" >/dev/null
    t0=$(date +%s%N)
    while :; do
      now=$(metric "$EP" sillok_catalog_applied_index)
      [ -n "$now" ] && [ "$now" -gt "$before" ] && break
      sleep 0.002
    done
    echo $(( ($(date +%s%N) - t0) / 1000 )) >>"$D/latency"
  done
  read -r _ g_w1 g_c1 <<<"$(io $GW)"
  read -r _ n_w1 n_c1 <<<"$(io $NODE)"
  # Bytes received from the catalog replicas: tokio reads sockets with
  # recv*, which /proc's rchar does not count, so a second, shorter run of
  # SN changes under strace sums what the gateway's and the node's reads
  # from the replicas' ports returned (strace slows them: no times here).
  strace -f -qq -yy -s 0 -e trace=read,recvfrom,recvmsg -o "$D/gw.strace" -p $GW 2>/dev/null &
  ST1=$!
  strace -f -qq -yy -s 0 -e trace=read,recvfrom,recvmsg -o "$D/node.strace" -p $NODE 2>/dev/null &
  ST2=$!
  sleep 1
  for i in $(seq "$SN"); do
    before=$(metric "$EP" sillok_catalog_applied_index)
    "$bin" admin bucket create "strace-$label-$i" >/dev/null
    while :; do
      now=$(metric "$EP" sillok_catalog_applied_index)
      [ -n "$now" ] && [ "$now" -gt "$before" ] && break
      sleep 0.01
    done
  done
  sleep 1
  kill $ST1 $ST2 2>/dev/null || true
  wait $ST1 $ST2 2>/dev/null || true
  recv() { # strace file -> bytes read from the replicas' ports
    awk -v ports="$RPORTS" 'BEGIN {n = split(ports, p, " "); for (i = 1; i <= n; i++) want[p[i]] = 1}
      match($0, /->[0-9.]+:[0-9]+\]>/) { port = substr($0, RSTART, RLENGTH); sub(/^->[0-9.]+:/, "", port); sub(/\]>$/, "", port)
        if ((port in want) && match($0, /= [0-9]+$/)) s += substr($0, RSTART + 2) }
      END {printf "%.0f", s / '"$SN"'}' "$1"
  }
  g_recv=$(recv "$D/gw.strace")
  n_recv=$(recv "$D/node.strace")
  lat=$(sort -n "$D/latency" | awk '{a[NR]=$1} END {printf "%.1f\t%.1f", a[int(NR*0.5)+1]/1000, a[int(NR*0.9)+1]/1000}')
  per() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN {printf "%.0f", (b - a) / n}'; }
  cpu() { awk -v a="$1" -v b="$2" -v n="$N" -v t="$TICK" 'BEGIN {printf "%.2f", (b - a) * 1000 / t / n}'; }
  printf '%s\tgateway\t%s\t%s\t%s\t%s\n' "$label" "$g_recv" "$(per $g_w0 $g_w1)" "$(cpu $g_c0 $g_c1)" "$lat" >>"$OUT/figures.tsv"
  printf '%s\tnode\t%s\t%s\t%s\t-\t-\n' "$label" "$n_recv" "$(per $n_w0 $n_w1)" "$(cpu $n_c0 $n_c1)" >>"$OUT/figures.tsv"
  # 3. Misses and listings, signed by the dev cluster's S3 key (restored
  # with the backup).
  s3() { # -> "status seconds"
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
      --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
  }
  calls() { # kind round -> one line "status seconds" per call
    for i in $(seq "$MISSES"); do
      case $1 in
        miss) s3 -I "$EP/no-such-bucket-$label-$2-$i" ;;
        list) s3 "$EP/" ;;
      esac
    done
  }
  for kind in miss list; do
    calls $kind timed >"$D/$kind.times"
    strace -f -qq -yy -s 0 -e trace=read,recvfrom,recvmsg -o "$D/$kind.strace" -p $GW 2>/dev/null &
    ST=$!
    sleep 1
    calls $kind straced >/dev/null
    sleep 1
    kill $ST 2>/dev/null || true
    wait $ST 2>/dev/null || true
    bytes=$(SN=$MISSES recv "$D/$kind.strace")
    ms=$(awk '{print $2 * 1000}' "$D/$kind.times" | sort -n | awk '{a[NR]=$1} END {printf "%.1f\t%.1f", a[int((NR+1)/2)], a[NR]}')
    echo "$label $kind statuses: $(cut -d' ' -f1 "$D/$kind.times" | sort | uniq -c | xargs)" >>"$OUT/summary.txt"
    printf '%s\t%s\t%s\t%s\n' "$label" "$kind" "$bytes" "$ms" >>"$OUT/misses.tsv"
  done
  curl -s "$EP/_sillok/metrics" | grep -E '^sillok_catalog_(follow|changes|whole|buckets|applied|read_index|fresh|negative)' >"$OUT/$label-gateway-metrics.txt" || true
  echo "$label: gateway RSS $(awk '/VmRSS/ {print $2, $3}' /proc/$GW/status), state dir $(du -sh "$D/gateway" | cut -f1)" | tee -a "$OUT/summary.txt"
  for p in "${RUN[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
done
column -t -s $'\t' "$OUT/figures.tsv" | tee -a "$OUT/summary.txt"
column -t -s $'\t' "$OUT/misses.tsv" | tee -a "$OUT/summary.txt"
