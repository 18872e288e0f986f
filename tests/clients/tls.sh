#!/usr/bin/env bash
# The aws cli and boto3 against a `sillok dev --tls` gateway, with their
# default https path: the CA comes from AWS_CA_BUNDLE (cluster.env sets it),
# never --no-verify-ssl. Up and down a few MiB, multipart included, checked on
# the bytes; a client without the CA and plain HTTP to the HTTPS port are
# refused, each with its own clear error.
# Run by tests/e2e/tls.rs; by hand: `sillok dev --tls`, then
# `. sillok-dev/cluster.env && bash tests/clients/tls.sh`.
. "$(dirname "$0")/lib.sh"

: "${AWS_CA_BUNDLE:?source the cluster.env of a \`sillok dev --tls\` cluster (AWS_CA_BUNDLE is not set)}"
aws --version

MIB=$((1024 * 1024))

check_the_endpoint_is_https() {
    expect_eq "${AWS_ENDPOINT_URL%%://*}" https "the scheme of AWS_ENDPOINT_URL"
    [ -s "$AWS_CA_BUNDLE" ] || fail "AWS_CA_BUNDLE $AWS_CA_BUNDLE is empty or missing"
    expect_contains "$(head -1 "$AWS_CA_BUNDLE")" "BEGIN CERTIFICATE" "the CA bundle"
}

check_aws_cli_cp() {
    local b=tls-cli
    aws s3 mb "s3://$b"
    random_file small.bin 300001
    # Over the aws cli's 8 MiB multipart threshold: 2 parts.
    random_file big.bin $((12 * MIB + 5))
    aws s3 cp --no-progress small.bin "s3://$b/small.bin"
    aws s3 cp --no-progress big.bin "s3://$b/big.bin"
    aws s3 cp --no-progress "s3://$b/small.bin" got-small.bin
    aws s3 cp --no-progress "s3://$b/big.bin" got-big.bin
    same_file got-small.bin small.bin
    same_file got-big.bin big.bin
    expect_eq "$(aws s3api head-object --bucket "$b" --key big.bin --query ETag --output text)" \
        "\"$(multipart_etag big.bin $((8 * MIB)))\"" "the multipart ETag of big.bin"
}

check_boto3() {
    python3 - <<'PY'
import hashlib, os, sys
import boto3
from boto3.s3.transfer import TransferConfig

MIB = 1024 * 1024
s3 = boto3.client("s3", region_name=os.environ["AWS_REGION"])  # endpoint and CA from the environment
s3.create_bucket(Bucket="tls-boto3")
small = os.urandom(200_003)
s3.put_object(Bucket="tls-boto3", Key="small", Body=small)
got = s3.get_object(Bucket="tls-boto3", Key="small")["Body"].read()
assert got == small, f"put/get: {len(got)} bytes back, want {len(small)}"
print("ok: put_object/get_object of 200003 bytes")
big = os.urandom(11 * MIB + 7)
with open("big.bin", "wb") as f:
    f.write(big)
config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
s3.upload_file("big.bin", "tls-boto3", "big", Config=config)
s3.download_file("tls-boto3", "big", "got-big.bin", Config=config)
with open("got-big.bin", "rb") as f:
    assert f.read() == big, "upload_file/download_file: the bytes differ"
etag = s3.head_object(Bucket="tls-boto3", Key="big")["ETag"]
assert etag.strip('"').endswith("-3"), f"upload_file of 11 MiB in 5 MiB parts: ETag {etag}"
print(f"ok: upload_file (multipart, ETag {etag}) and download_file of {len(big)} bytes")
PY
}

check_a_client_without_the_ca_is_refused() {
    # One attempt each: a refused certificate is retried otherwise.
    export AWS_MAX_ATTEMPTS=1
    expect_error CERTIFICATE_VERIFY_FAILED env -u AWS_CA_BUNDLE aws s3 ls
    local out
    if out=$(env -u AWS_CA_BUNDLE python3 -c 'import boto3, os; boto3.client("s3", region_name=os.environ["AWS_REGION"]).list_buckets()' 2>&1); then
        expectation_failed "boto3 without the CA listed the buckets"
    else
        expect_contains "$out" "SSLError" "boto3 without the CA"
    fi
}

check_plain_http_is_refused() {
    expect_error "speaks HTTPS only" aws s3 ls --endpoint-url "http://$ENDPOINT_HOSTPORT"
}

check https_endpoint check_the_endpoint_is_https
check aws_cli_cp check_aws_cli_cp
check boto3 check_boto3
check untrusted_client check_a_client_without_the_ca_is_refused
check plain_http check_plain_http_is_refused
finish tls
