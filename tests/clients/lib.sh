# Shared helpers for the bash client scripts in this folder. Sourced, not run.
#
# A script is a list of named checks: `check NAME FUNCTION`. Each check runs in
# its own subshell with errexit, so a failing check is reported (with the
# client's own error output) and the next one still runs. `finish` prints the
# table of results and exits non-zero if any check failed.
#
# `fail` and `same_file` end a check at once; `expect_*` note an unmet
# expectation, go on (so that one run shows every difference) and fail the
# check at its end.
#
# Environment (what `. sillok-dev/cluster.env` sets, plus):
#   SILLOK_CLIENT_WORK  scratch folder for data files (default: a new temp dir)
#   SILLOK_CHECKS       comma-separated check names to run (default: all)

set -euo pipefail

: "${AWS_ENDPOINT_URL:?source a cluster.env first (AWS_ENDPOINT_URL is not set)}"
: "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}" "${AWS_REGION:?}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
WORK="${SILLOK_CLIENT_WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
# host:port of the endpoint, e.g. 127.0.0.1:9000
ENDPOINT_HOSTPORT="${AWS_ENDPOINT_URL#*://}"
ENDPOINT_HOSTPORT="${ENDPOINT_HOSTPORT%%/*}"

_RESULTS=()
_FAILED=0
_PASSED=0

# check NAME FUNCTION [ARGS...]
check() {
    local name=$1
    shift
    if [ -n "${SILLOK_CHECKS:-}" ] && [[ ",$SILLOK_CHECKS," != *",$name,"* ]]; then
        return 0
    fi
    echo
    echo "==== check $name"
    local started=$SECONDS rc
    # Not inside `if`/`||`: errexit must stay on in the subshell.
    set +e
    (
        set -euo pipefail
        CHECK_DIR="$WORK/$name"
        mkdir -p "$CHECK_DIR"
        cd "$CHECK_DIR"
        trap _list_unmet EXIT
        "$@"
        [ ! -s "$CHECK_DIR/.failed" ]
    )
    rc=$?
    set -e
    local took=$((SECONDS - started))
    if [ "$rc" -eq 0 ]; then
        _PASSED=$((_PASSED + 1))
        _RESULTS+=("PASS  $name  (${took}s)")
        echo "==== PASS $name (${took}s)"
    else
        _FAILED=$((_FAILED + 1))
        _RESULTS+=("FAIL  $name  (exit $rc, ${took}s)")
        echo "==== FAIL $name (exit $rc, ${took}s)"
    fi
}

_list_unmet() {
    if [ -s "$CHECK_DIR/.failed" ]; then
        echo "CHECK FAILED: $(wc -l <"$CHECK_DIR/.failed") expectation(s) not met:" >&2
        sed 's/^/  - /' "$CHECK_DIR/.failed" >&2
    fi
}

finish() {
    local client=$1
    echo
    echo "==== results of $client"
    local r
    for r in "${_RESULTS[@]}"; do
        echo "  $r"
    done
    echo "==== $client checks: passed $_PASSED, failed $_FAILED"
    [ "$_FAILED" -eq 0 ]
}

fail() {
    echo "CHECK FAILED: $*" >&2
    exit 1
}

# expectation_failed MESSAGE: noted; the check fails when it ends.
expectation_failed() {
    echo "CHECK FAILED: $*" >&2
    # One line per expectation (cut ends it with a newline).
    echo "$*" | tr '\n' ' ' | cut -c1-400 >>"$CHECK_DIR/.failed"
}

# expect_eq GOT WANT WHAT
expect_eq() {
    if [ "$1" != "$2" ]; then
        expectation_failed "$3: got [$1], want [$2]"
        return 0
    fi
    echo "ok: $3 = [$1]"
}

# expect_contains HAYSTACK NEEDLE WHAT
expect_contains() {
    if [[ "$1" != *"$2"* ]]; then
        expectation_failed "$3: [$2] not found in: $1"
        return 0
    fi
    echo "ok: $3 contains [$2]"
}

# same_file GOT WANT: byte-for-byte equality, with sizes and digests on failure.
same_file() {
    if ! cmp -s "$1" "$2"; then
        echo "got:  $(stat -c %s "$1" 2>/dev/null || echo missing) bytes $(sha256sum "$1" 2>/dev/null | cut -c1-16)" >&2
        echo "want: $(stat -c %s "$2") bytes $(sha256sum "$2" | cut -c1-16)" >&2
        cmp "$1" "$2" >&2 || true
        fail "$1 differs from $2"
    fi
    echo "ok: $1 == $2 ($(stat -c %s "$2") bytes)"
}

# random_file PATH BYTES
random_file() {
    head -c "$2" /dev/urandom >"$1"
}

file_md5() {
    md5sum "$1" | cut -d' ' -f1
}

# multipart_etag FILE PART_SIZE: S3's ETag of FILE uploaded in PART_SIZE parts,
# i.e. hex(md5(md5(part1) || md5(part2) || ...)) + "-" + number of parts.
multipart_etag() {
    python3 - "$1" "$2" <<'PY'
import hashlib, sys
path, part = sys.argv[1], int(sys.argv[2])
digests = b""
n = 0
with open(path, "rb") as f:
    while True:
        chunk = f.read(part)
        if not chunk:
            break
        digests += hashlib.md5(chunk).digest()
        n += 1
print(f"{hashlib.md5(digests).hexdigest()}-{n}")
PY
}

# xml_code FILE: the <Code> of an S3 XML error body (empty if there is none).
xml_code() {
    python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("")
    sys.exit(0)
code = root.find("Code") if root.tag == "Error" else None
print(code.text if code is not None else "")
PY
}

# expect_error NEEDLE COMMAND...: COMMAND must fail, and its output must
# contain NEEDLE (an S3 error code or HTTP status as the client prints it).
expect_error() {
    local needle=$1 out
    shift
    if out=$("$@" 2>&1); then
        expectation_failed "expected an error with [$needle] from: $* -- but it succeeded: $out"
        return 0
    fi
    if [[ "$out" != *"$needle"* ]]; then
        expectation_failed "expected an error with [$needle] from: $* -- got: $out"
        return 0
    fi
    echo "ok: error [$needle] from: $*"
}

# touch_past DIR: every file's mtime two hours back, so that a sync that
# compares times sees the uploaded copies as newer.
touch_past() {
    find "$1" -type f -exec touch -d '2 hours ago' {} +
}

# slice FILE OFFSET LENGTH: LENGTH bytes of FILE from OFFSET, to stdout.
slice() {
    dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=65536 status=none
}

# not_listed PATTERN WHAT COMMAND...: COMMAND succeeds and no line of its
# output matches PATTERN (grep -E).
not_listed() {
    local pattern=$1 what=$2 out
    shift 2
    out=$("$@")
    if grep -qE -- "$pattern" <<<"$out"; then
        expectation_failed "$what: [$pattern] is still in: $out"
        return 0
    fi
    echo "ok: $what"
}

# seed_tree DIR CONTENT KEY...: files DIR/KEY holding CONTENT, for one
# recursive upload instead of one client run per key.
seed_tree() {
    local dir=$1 content=$2 key
    shift 2
    for key in "$@"; do
        mkdir -p "$(dirname "$dir/$key")"
        printf '%s' "$content" >"$dir/$key"
    done
}
