#!/usr/bin/env bash
# rclone (Debian's package) against a Sillok gateway, configured only through
# environment variables as an S3 remote named `sillok`: copy, sync, check
# --download, md5sum compared with local md5sum, cat with offsets, delete.
# Run by tests/e2e/clients.rs; by hand: `. sillok-dev/cluster.env && bash tests/clients/rclone.sh`.
. "$(dirname "$0")/lib.sh"

# rclone 1.60's S3 backend fails on AWS_CA_BUNDLE ("unsupported transport");
# the endpoint is plain http, so no bundle is needed.
unset AWS_CA_BUNDLE
# An empty config file so that a user's own rclone.conf plays no part.
export RCLONE_CONFIG="$WORK/rclone.conf"
: >"$RCLONE_CONFIG"
export RCLONE_CONFIG_SILLOK_TYPE=s3
export RCLONE_CONFIG_SILLOK_PROVIDER=Other
export RCLONE_CONFIG_SILLOK_ENV_AUTH=false
export RCLONE_CONFIG_SILLOK_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
export RCLONE_CONFIG_SILLOK_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_SILLOK_ENDPOINT="$AWS_ENDPOINT_URL"
export RCLONE_CONFIG_SILLOK_REGION="$AWS_REGION"
export RCLONE_CONFIG_SILLOK_FORCE_PATH_STYLE=true

rclone version | sed -n 1p
MIB=$((1024 * 1024))

# make_tree DIR: files of varied sizes, 0 B to 12 MiB.
make_tree() {
    mkdir -p "$1/sub/deeper"
    : >"$1/empty.bin"
    printf 'hello rclone\n' >"$1/hello.txt"
    random_file "$1/one-k.bin" 1024
    random_file "$1/sub/odd name ü.bin" 4097
    random_file "$1/sub/a+b=c 100%.bin" 333
    random_file "$1/sub/deeper/one-m.bin" "$MIB"
    random_file "$1/sub/twelve-m.bin" $((12 * MIB + 5))
}

# md5_listing DIR: "md5  path" of every file, sorted by path.
md5_listing() {
    (cd "$1" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
        printf '%s  %s\n' "$(file_md5 "$f")" "$f"
    done)
}

check_copy_and_md5sum() {
    rclone mkdir sillok:rclone-copy
    make_tree src
    rclone copy src sillok:rclone-copy/tree
    rclone copy sillok:rclone-copy/tree down
    diff -r src down
    echo "ok: copied down == src"
    # rclone's md5 of each object (the ETag, or its own md5 metadata for
    # multipart uploads) equals the local md5sum.
    rclone md5sum sillok:rclone-copy/tree | LC_ALL=C sort -k2 >got-md5
    md5_listing src | LC_ALL=C sort -k2 >want-md5
    diff got-md5 want-md5 || fail "rclone md5sum differs from md5sum"
    echo "ok: rclone md5sum == md5sum"
    # Sizes as rclone lists them.
    rclone ls sillok:rclone-copy/tree | sed 's/^ *//' | LC_ALL=C sort -k2 >got-ls
    (cd src && find . -type f -printf '%s %P\n' | LC_ALL=C sort -k2) >want-ls
    diff got-ls want-ls || fail "rclone ls differs from the local sizes"
}

check_multipart_upload() {
    # Over a lowered upload cutoff, rclone uploads in 5 MiB parts.
    rclone mkdir sillok:rclone-multipart
    random_file big.bin $((17 * MIB + 77))
    rclone copyto --s3-upload-cutoff 5M --s3-chunk-size 5M big.bin sillok:rclone-multipart/big.bin
    rclone copyto sillok:rclone-multipart/big.bin got.bin
    same_file got.bin big.bin
    expect_eq "$(rclone md5sum sillok:rclone-multipart/big.bin | cut -d' ' -f1)" "$(file_md5 big.bin)" "rclone md5sum of the multipart object"
    expect_eq "$(rclone size --json sillok:rclone-multipart | jq -c '[.count, .bytes]')" "[1,$((17 * MIB + 77))]" "rclone size"
}

check_sync_and_check_download() {
    rclone mkdir sillok:rclone-sync
    make_tree src
    rclone sync src sillok:rclone-sync/tree
    rclone check --download src sillok:rclone-sync/tree
    echo "ok: check --download after the first sync"
    # Change, delete, add; sync again; the remote follows.
    random_file src/hello.txt 3000
    rm src/one-k.bin
    random_file src/sub/new.bin 65537
    rclone sync src sillok:rclone-sync/tree
    rclone check --download src sillok:rclone-sync/tree
    rclone check src sillok:rclone-sync/tree
    echo "ok: check (hashes) and check --download after the second sync"
    rclone sync sillok:rclone-sync/tree down
    diff -r src down
    echo "ok: synced down == src"
    not_listed one-k.bin "one-k.bin deleted from the remote" rclone lsf -R sillok:rclone-sync/tree
    # A remote object that differs: check --download must notice.
    random_file other.bin 1024
    rclone copyto other.bin sillok:rclone-sync/tree/sub/new.bin
    if rclone check --download src sillok:rclone-sync/tree; then fail "check --download missed a changed object"; fi
    echo "ok: check --download noticed the changed object"
}

check_cat_offsets() {
    rclone mkdir sillok:rclone-cat
    random_file body.bin 200000
    rclone copyto body.bin sillok:rclone-cat/body.bin
    rclone cat --offset 1000 --count 5000 sillok:rclone-cat/body.bin >part.bin
    slice body.bin 1000 5000 >want.bin
    same_file part.bin want.bin
    rclone cat --tail 777 sillok:rclone-cat/body.bin >tail.bin
    tail -c 777 body.bin >want-tail.bin
    same_file tail.bin want-tail.bin
}

check_delete_and_purge() {
    rclone mkdir sillok:rclone-delete
    make_tree src
    rclone copy src sillok:rclone-delete
    rclone deletefile sillok:rclone-delete/hello.txt
    rclone delete --include '*.bin' sillok:rclone-delete/sub
    expect_eq "$(rclone lsf -R --files-only sillok:rclone-delete | LC_ALL=C sort | tr '\n' ' ')" \
        "empty.bin one-k.bin " "files left"
    rclone purge sillok:rclone-delete
    not_listed ' rclone-delete$' "bucket gone after purge" rclone lsd sillok:
}

check copy_and_md5sum check_copy_and_md5sum
check multipart_upload check_multipart_upload
check sync_and_check_download check_sync_and_check_download
check cat_offsets check_cat_offsets
check delete_and_purge check_delete_and_purge
finish rclone
