#!/usr/bin/env bash
# s3cmd (from PyPI) against a Sillok gateway, with a config file for a plain
# http endpoint, path-style addressing and signature v4: mb, put (single and
# multipart), get, ls/la/du, info, cp/mv, sync both ways, del, rb.
# Run by tests/e2e/clients.rs; by hand: `. sillok-dev/cluster.env && bash tests/clients/s3cmd.sh`.
. "$(dirname "$0")/lib.sh"

CFG="$WORK/s3cmd.cfg"
# host_bucket without %(bucket)s: path-style requests to the endpoint.
cat >"$CFG" <<EOF
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = $ENDPOINT_HOSTPORT
host_bucket = $ENDPOINT_HOSTPORT
bucket_location = $AWS_REGION
use_https = False
signature_v2 = False
EOF

s3c() {
    s3cmd -c "$CFG" "$@"
}

s3c --version
MIB=$((1024 * 1024))

check_put_get() {
    local b=s3cmd-put-get
    s3c mb "s3://$b"
    random_file body.bin 123457
    : >empty.bin
    s3c put body.bin "s3://$b/dir/body.bin"
    s3c put empty.bin "s3://$b/empty.bin"
    s3c put --mime-type=image/jpeg --add-header=x-amz-meta-sender:choi body.bin "s3://$b/photo.jpg"
    s3c get "s3://$b/dir/body.bin" got.bin
    same_file got.bin body.bin
    s3c get "s3://$b/empty.bin" got-empty.bin
    same_file got-empty.bin empty.bin
    local info
    info=$(s3c info "s3://$b/photo.jpg")
    echo "$info"
    expect_contains "$info" "$(file_md5 body.bin)" "s3cmd info MD5"
    expect_contains "$info" "image/jpeg" "s3cmd info MIME type"
    expect_contains "$info" "x-amz-meta-sender: choi" "s3cmd info metadata"
    # An existing file is not overwritten without --force.
    expect_error "" s3c get "s3://$b/dir/body.bin" got.bin
    s3c get --force "s3://$b/photo.jpg" got.bin
    same_file got.bin body.bin
}

check_multipart_put() {
    local b=s3cmd-multipart
    s3c mb "s3://$b"
    random_file big.bin $((12 * MIB + 4321))
    s3c put --multipart-chunk-size-mb=5 big.bin "s3://$b/big.bin"
    s3c get "s3://$b/big.bin" got.bin
    same_file got.bin big.bin
    # s3cmd keeps the whole file's md5 in its own metadata for multipart objects.
    expect_contains "$(s3c info "s3://$b/big.bin")" "$(file_md5 big.bin)" "s3cmd info MD5 of the multipart object"
}

check_ls_la_du() {
    local b=s3cmd-ls
    s3c mb "s3://$b"
    printf '0123456789' >ten
    s3c put ten "s3://$b/top"
    s3c put ten "s3://$b/dir/a"
    s3c put ten "s3://$b/dir/b"
    expect_contains "$(s3c ls)" "s3://$b" "s3cmd ls (buckets)"
    local got
    got=$(s3c ls "s3://$b/" | awk '{print $(NF-1), $NF}')
    expect_eq "$got" "$(printf 'DIR s3://%s/dir/\n10 s3://%s/top' "$b" "$b")" "s3cmd ls s3://$b/"
    got=$(s3c ls --recursive "s3://$b" | awk '{print $(NF-1), $NF}')
    expect_eq "$got" "$(printf '10 s3://%s/dir/a\n10 s3://%s/dir/b\n10 s3://%s/top' "$b" "$b" "$b")" "s3cmd ls --recursive"
    # la: the top level of every bucket.
    expect_contains "$(s3c la)" "10  s3://$b/top" "s3cmd la"
    expect_eq "$(s3c du "s3://$b" | awk '{print $1, $2}')" "30 3" "s3cmd du (bytes, objects)"
}

check_cp_mv() {
    local b=s3cmd-cp b2=s3cmd-cp-dest
    s3c mb "s3://$b"
    s3c mb "s3://$b2"
    random_file body.bin 54321
    s3c put body.bin "s3://$b/src.bin"
    s3c cp "s3://$b/src.bin" "s3://$b2/copy.bin"
    s3c get "s3://$b2/copy.bin" got-copy.bin
    same_file got-copy.bin body.bin
    s3c mv "s3://$b/src.bin" "s3://$b/moved.bin"
    s3c get "s3://$b/moved.bin" got-moved.bin
    same_file got-moved.bin body.bin
    expect_eq "$(s3c ls "s3://$b" | awk '{print $NF}')" "s3://$b/moved.bin" "keys after mv"
}

check_sync() {
    local b=s3cmd-sync
    s3c mb "s3://$b"
    mkdir -p src/sub/deeper
    : >src/empty.bin
    printf 'hello s3cmd\n' >src/hello.txt
    random_file src/one-k.bin 1024
    random_file "src/sub/odd name.bin" 4097
    random_file "src/sub/a+b=c 100%.bin" 333
    random_file src/sub/deeper/one-m.bin "$MIB"
    random_file src/sub/nine-m.bin $((9 * MIB + 3))
    s3c sync src/ "s3://$b/tree/"
    s3c sync "s3://$b/tree/" down/
    diff -r src down
    echo "ok: synced down == src"
    # Change, delete, add; sync with --delete-removed both ways.
    random_file src/hello.txt 2000
    rm src/one-k.bin
    random_file src/sub/new.bin 777
    s3c sync --delete-removed src/ "s3://$b/tree/"
    s3c sync --delete-removed "s3://$b/tree/" down/
    diff -r src down
    echo "ok: after sync --delete-removed both ways, down == src"
    not_listed one-k.bin "one-k.bin deleted by sync --delete-removed" s3c ls --recursive "s3://$b"
}

check_del_rb() {
    local b=s3cmd-del
    s3c mb "s3://$b"
    printf 'x' >x
    local k
    for k in keep a/1 a/2 a/b/3; do
        s3c put x "s3://$b/$k"
    done
    s3c del "s3://$b/keep"
    s3c del --recursive --force "s3://$b/a/"
    expect_eq "$(s3c ls --recursive "s3://$b")" "" "keys left after del"
    s3c put x "s3://$b/again"
    expect_error BucketNotEmpty s3c rb "s3://$b"
    s3c rb --recursive --force "s3://$b"
    not_listed "s3://$b\$" "bucket gone after rb" s3c ls
}

check put_get check_put_get
check multipart_put check_multipart_put
check ls_la_du check_ls_la_du
check cp_mv check_cp_mv
check sync check_sync
check del_rb check_del_rb
finish s3cmd
