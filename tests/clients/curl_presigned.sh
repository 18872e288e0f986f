#!/usr/bin/env bash
# Presigned URLs used with plain curl against a Sillok gateway: GET presigned
# by `aws s3 presign`, PUT presigned by boto3; tampered and expired URLs must
# get 403 with an S3 XML error body.
# Run by tests/real_clients.rs; by hand: `. sillok-dev/cluster.env && bash tests/clients/curl_presigned.sh`.
. "$(dirname "$0")/lib.sh"

curl --version | sed -n 1p

B=curl-presigned

# presign_put KEY SECONDS: a presigned PUT URL from boto3.
presign_put() {
    python3 - "$B" "$1" "$2" <<'PY'
import sys, boto3
bucket, key, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
print(boto3.client("s3").generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=secs))
PY
}

# http_status URL OUT [CURL ARGS...]: curl's status code; the body goes to OUT.
http_status() {
    local url=$1 out=$2
    shift 2
    curl -sS -o "$out" -w '%{http_code}' "$@" "$url"
}

# expect_s3_error FILE CODE: FILE is an S3 XML error body with that Code.
expect_s3_error() {
    head -c 600 "$1"
    echo
    expect_eq "$(xml_code "$1")" "$2" "<Code> of the XML error body"
}

check_presigned_get() {
    random_file body.bin 333333
    aws s3 cp --only-show-errors body.bin "s3://$B/get/object.bin"
    local url
    url=$(aws s3 presign "s3://$B/get/object.bin" --expires-in 300)
    echo "GET $url"
    expect_eq "$(http_status "$url" got.bin)" 200 "status of the presigned GET"
    same_file got.bin body.bin
    # With a Range header.
    expect_eq "$(http_status "$url" part.bin -r 1000-1999)" 206 "status of a ranged presigned GET"
    slice body.bin 1000 1000 >want-part.bin
    same_file part.bin want-part.bin
    # HEAD is a different method: the signature (made for GET) does not match.
    expect_eq "$(http_status "$url" /dev/null -I)" 403 "status of HEAD with a GET signature"
}

check_presigned_put() {
    random_file body.bin 250001
    local url
    url=$(presign_put put/uploaded.bin 300)
    echo "PUT $url"
    expect_eq "$(http_status "$url" answer -T body.bin -D headers)" 200 "status of the presigned PUT"
    expect_contains "$(tr -d '\r' <headers | grep -i '^etag:')" "\"$(file_md5 body.bin)\"" "ETag header of the PUT"
    aws s3 cp --only-show-errors "s3://$B/put/uploaded.bin" got.bin
    same_file got.bin body.bin
    # An empty body.
    : >empty
    url=$(presign_put put/empty 300)
    expect_eq "$(http_status "$url" answer -T empty)" 200 "status of an empty presigned PUT"
    aws s3 cp --only-show-errors "s3://$B/put/empty" got-empty
    same_file got-empty empty
}

check_tampered_urls() {
    random_file body.bin 1000
    aws s3 cp --only-show-errors body.bin "s3://$B/t/object.bin"
    local url bad
    url=$(aws s3 presign "s3://$B/t/object.bin" --expires-in 300)
    # One hex digit of the signature changed.
    bad=$(python3 - "$url" <<'PY'
import sys, re
url = sys.argv[1]
m = re.search(r"X-Amz-Signature=([0-9a-f])", url)
flipped = "1" if m.group(1) == "0" else "0"
print(url[: m.start(1)] + flipped + url[m.end(1):])
PY
)
    expect_eq "$(http_status "$bad" err.xml)" 403 "status with a changed signature"
    expect_s3_error err.xml SignatureDoesNotMatch
    # Another key under the same signature.
    bad=${url/t\/object.bin/t\/other.bin}
    expect_eq "$(http_status "$bad" err.xml)" 403 "status for another key"
    expect_s3_error err.xml SignatureDoesNotMatch
    # A longer lifetime than was signed.
    bad=${url/X-Amz-Expires=300/X-Amz-Expires=3000}
    expect_eq "$(http_status "$bad" err.xml)" 403 "status with a changed X-Amz-Expires"
    expect_s3_error err.xml SignatureDoesNotMatch
    # A presigned PUT used for another key.
    url=$(presign_put t/put.bin 300)
    bad=${url/t\/put.bin/t\/object.bin}
    expect_eq "$(http_status "$bad" err.xml -T body.bin)" 403 "status of a PUT to another key"
    expect_s3_error err.xml SignatureDoesNotMatch
    # Nothing was overwritten.
    aws s3 cp --only-show-errors "s3://$B/t/object.bin" got.bin
    same_file got.bin body.bin
}

check_expired_url() {
    printf 'short-lived' >body
    aws s3 cp --only-show-errors body "s3://$B/e/object"
    local url
    url=$(aws s3 presign "s3://$B/e/object" --expires-in 1)
    sleep 3
    expect_eq "$(http_status "$url" err.xml)" 403 "status of an expired URL"
    expect_s3_error err.xml AccessDenied
}

aws s3 mb "s3://$B"
check presigned_get check_presigned_get
check presigned_put check_presigned_put
check tampered_urls check_tampered_urls
check expired_url check_expired_url
finish curl-presigned
