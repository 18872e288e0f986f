#!/usr/bin/env bash
# The aws cli (v1, from PyPI) against a Sillok gateway, part 1: the high-level
# `aws s3` commands: mb/rb, cp (files, stdin/stdout, encoded keys), sync both
# ways with --delete, ls, rm --recursive, and a 100 MiB multipart upload, each
# checked on the bytes and sizes that come back. Part 2: aws_cli_s3api.sh.
# Run by tests/e2e/clients.rs; by hand: `. sillok-dev/cluster.env && bash tests/clients/aws_cli_s3.sh`.
. "$(dirname "$0")/lib.sh"

# The endpoint comes from AWS_ENDPOINT_URL; nothing else is configured.
aws --version

MIB=$((1024 * 1024))

# head_json BUCKET KEY: head-object's JSON response.
head_json() {
    aws s3api head-object --bucket "$1" --key "$2" --output json
}

check_buckets() {
    local b=cli-buckets
    aws s3 mb "s3://$b"
    expect_contains "$(aws s3 ls)" " $b" "aws s3 ls"
    expect_error BucketAlreadyOwnedByYou aws s3 mb "s3://$b"
    aws s3api head-bucket --bucket "$b"
    expect_error 404 aws s3api head-bucket --bucket cli-no-such-bucket
    aws s3 rb "s3://$b"
    not_listed " $b\$" "$b gone after rb" aws s3 ls
}

check_cp() {
    local b=cli-cp
    aws s3 mb "s3://$b"
    random_file small.bin 123457
    : >empty.bin
    aws s3 cp --no-progress small.bin "s3://$b/dir/small.bin"
    aws s3 cp --no-progress empty.bin "s3://$b/empty.bin"
    aws s3 cp --no-progress "s3://$b/dir/small.bin" got-small.bin
    same_file got-small.bin small.bin
    aws s3 cp --no-progress "s3://$b/empty.bin" got-empty.bin
    same_file got-empty.bin empty.bin
    # A single PUT's ETag is the MD5 of the body.
    expect_eq "$(head_json "$b" dir/small.bin | jq -r .ETag)" "\"$(file_md5 small.bin)\"" "ETag of dir/small.bin"
    expect_eq "$(head_json "$b" empty.bin | jq -r .ContentLength)" 0 "ContentLength of empty.bin"
    # stdin to object, object to stdout.
    aws s3 cp --no-progress - "s3://$b/stream.bin" <small.bin
    aws s3 cp --no-progress "s3://$b/stream.bin" - >got-stream.bin
    same_file got-stream.bin small.bin
    # Keys that need URL encoding.
    local key='with space/ünïcode +plus&amp=1.bin'
    aws s3 cp --no-progress small.bin "s3://$b/$key"
    aws s3 cp --no-progress "s3://$b/$key" got-odd.bin
    same_file got-odd.bin small.bin
    expect_contains "$(aws s3 ls "s3://$b/with space/")" "ünïcode +plus&amp=1.bin" "listing of an encoded key"
}

check_sync() {
    local b=cli-sync
    aws s3 mb "s3://$b"
    mkdir -p src/sub/deeper
    : >src/empty.bin
    printf 'hello sillok\n' >src/hello.txt
    random_file src/one-k.bin 1024
    random_file "src/sub/odd name.bin" 4097
    random_file "src/sub/a+b=c 100%.bin" 333 # listed URL-encoded: '+' and '%' must survive
    random_file src/sub/hundred-k.bin 102400
    random_file src/sub/deeper/one-m.bin "$MIB"
    random_file src/sub/nine-m.bin $((9 * MIB + 3)) # over the 8 MiB threshold: multipart
    touch_past src
    aws s3 sync --no-progress src "s3://$b/tree"

    # The recursive listing has every file with its size ("size key" lines).
    (cd src && find . -type f -printf '%s tree/%P\n' | LC_ALL=C sort -k2) >want-listing
    aws s3 ls --recursive "s3://$b/tree/" | sed -E 's/^[0-9-]+ [0-9:]+ +//' | LC_ALL=C sort -k2 >got-listing
    diff got-listing want-listing || fail "aws s3 ls --recursive differs from the synced files"

    aws s3 sync --no-progress "s3://$b/tree" down
    diff -r src down
    echo "ok: synced down == src"

    # Nothing changed: a second sync uploads nothing.
    local again
    again=$(aws s3 sync --no-progress src "s3://$b/tree")
    expect_eq "$again" "" "output of a sync with nothing to do"

    # Change one file, delete one, add one; sync --delete both ways.
    random_file src/hello.txt 2000
    rm src/one-k.bin
    random_file src/new.bin 777
    aws s3 sync --no-progress --delete src "s3://$b/tree"
    aws s3 sync --no-progress --delete "s3://$b/tree" down
    diff -r src down
    echo "ok: after sync --delete both ways, down == src"
    not_listed one-k.bin "one-k.bin deleted by sync --delete" aws s3 ls --recursive "s3://$b/tree/"
}

check_ls() {
    local b=cli-ls
    aws s3 mb "s3://$b"
    seed_tree tree a1 a/1 a/2 b/3
    seed_tree tree 'top object' top
    aws s3 cp --only-show-errors --recursive tree "s3://$b/"
    local got
    got=$(aws s3 ls "s3://$b/" | sed 's/^ *//' | sed -E 's/^[0-9-]+ [0-9:]+ +//')
    expect_eq "$got" "$(printf 'PRE a/\nPRE b/\n10 top')" "aws s3 ls s3://$b/"
    got=$(aws s3 ls "s3://$b/a/" | sed -E 's/^[0-9-]+ [0-9:]+ +//')
    expect_eq "$got" "$(printf '2 1\n2 2')" "aws s3 ls s3://$b/a/"
    got=$(aws s3 ls --recursive "s3://$b" | sed -E 's/^[0-9-]+ [0-9:]+ +//')
    expect_eq "$got" "$(printf '2 a/1\n2 a/2\n2 b/3\n10 top')" "aws s3 ls --recursive"
    # ls of a prefix that matches nothing prints nothing and fails (exit 1), as against S3.
    if got=$(aws s3 ls "s3://$b/nothing/"); then fail "ls of an empty prefix succeeded: $got"; fi
    expect_eq "$got" "" "ls of an empty prefix"
}

check_rm() {
    local b=cli-rm
    aws s3 mb "s3://$b"
    seed_tree tree x keep.txt del/one del/two del/sub/three delx
    aws s3 cp --only-show-errors --recursive tree "s3://$b/"
    aws s3 rm "s3://$b/keep.txt"
    expect_error 404 aws s3api head-object --bucket "$b" --key keep.txt
    aws s3 rm --recursive "s3://$b/del/"
    expect_eq "$(aws s3 ls --recursive "s3://$b" | awk '{print $4}')" "delx" "keys left after rm --recursive del/"
    # Deleting a missing key succeeds (204), as on S3.
    aws s3 rm "s3://$b/never-existed"
    expect_error BucketNotEmpty aws s3 rb "s3://$b"
    aws s3 rb --force "s3://$b"
    expect_error NoSuchBucket aws s3 ls "s3://$b"
}

check_multipart_100mib() {
    local b=cli-big size=$((100 * MIB + 1234567))
    aws s3 mb "s3://$b"
    random_file big.bin "$size"
    local t=$SECONDS
    aws s3 cp --only-show-errors big.bin "s3://$b/big.bin"
    echo "upload of $size bytes: $((SECONDS - t))s"
    t=$SECONDS
    aws s3 cp --only-show-errors "s3://$b/big.bin" got.bin
    echo "download: $((SECONDS - t))s"
    same_file got.bin big.bin
    local head
    head=$(head_json "$b" big.bin)
    expect_eq "$(jq -r .ContentLength <<<"$head")" "$size" "ContentLength"
    # aws s3 cp --no-progress uploads 8 MiB parts: 13 of them.
    expect_eq "$(jq -r .ETag <<<"$head")" "\"$(multipart_etag big.bin $((8 * MIB)))\"" "multipart ETag"
}

check buckets check_buckets
check cp check_cp
check sync check_sync
check ls check_ls
check rm check_rm
check multipart_100mib check_multipart_100mib
finish aws-cli-s3
