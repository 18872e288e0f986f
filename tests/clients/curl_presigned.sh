#!/usr/bin/env bash
# Presigned URLs used with plain curl against a Sillok gateway: GET presigned
# by `aws s3 presign`, PUT presigned by boto3; tampered and expired URLs must
# get 403 with an S3 XML error body. Also virtual-host-style requests
# (<bucket>.localhost): presigned by boto3, and signed by curl's --aws-sigv4.
# Run by tests/e2e/clients.rs; by hand: `. sillok-dev/cluster.env && bash tests/clients/curl_presigned.sh`.
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

# presign_vhost METHOD KEY: a virtual-host-style presigned URL from boto3,
# http://<bucket>.localhost:<port>/<key>?X-Amz-... (curl, like browsers,
# resolves *.localhost to the loopback address).
presign_vhost() {
    python3 - "$B" "$1" "$2" "${ENDPOINT_HOSTPORT##*:}" <<'PY'
import sys, boto3
from botocore.config import Config
bucket, method, key, port = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=f"http://localhost:{port}", config=Config(s3={"addressing_style": "virtual"}))
print(s3.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key}, ExpiresIn=300))
PY
}

# curl's own SigV4 signing (curl >= 7.75). S3 wants x-amz-content-sha256, which
# curl 7.88 does not add by itself; and its query string must be given sorted
# and encoded, as curl signs it as written.
sigv4() {
    curl -sS --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
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

check_vhost_presigned() {
    random_file body.bin 77777
    local url port=${ENDPOINT_HOSTPORT##*:}
    url=$(presign_vhost put_object vhost/presigned.bin)
    echo "PUT $url"
    expect_contains "$url" "http://$B.localhost:$port/vhost/presigned.bin?" "virtual-host URL"
    expect_eq "$(http_status "$url" answer -T body.bin)" 200 "status of the virtual-host presigned PUT"
    url=$(presign_vhost get_object vhost/presigned.bin)
    expect_eq "$(http_status "$url" got.bin)" 200 "status of the virtual-host presigned GET"
    same_file got.bin body.bin
    # The same object, path-style.
    aws s3 cp --only-show-errors "s3://$B/vhost/presigned.bin" got-path.bin
    same_file got-path.bin body.bin
}

check_vhost_curl_sigv4() {
    random_file body.bin 12345
    local base="http://$B.localhost:${ENDPOINT_HOSTPORT##*:}"
    expect_eq "$(sigv4 -o answer -w '%{http_code}' -T body.bin "$base/vhost/curl%20signed.bin")" 200 "status of a signed virtual-host PUT"
    expect_eq "$(sigv4 -o got.bin -w '%{http_code}' "$base/vhost/curl%20signed.bin")" 200 "status of a signed virtual-host GET"
    same_file got.bin body.bin
    expect_eq "$(sigv4 -o list.xml -w '%{http_code}' "$base/?list-type=2&prefix=vhost%2Fcurl")" 200 "status of a virtual-host ListObjectsV2"
    expect_contains "$(cat list.xml)" "<Key>vhost/curl signed.bin</Key>" "virtual-host listing"
    expect_contains "$(cat list.xml)" "<Size>12345</Size>" "virtual-host listing"
    aws s3 cp --only-show-errors "s3://$B/vhost/curl signed.bin" got-path.bin
    same_file got-path.bin body.bin
    # A bucket that does not exist, by host name.
    expect_eq "$(sigv4 -o err.xml -w '%{http_code}' "http://no-such-bucket-here.localhost:${ENDPOINT_HOSTPORT##*:}/k")" 404 "status for a missing bucket by host"
    expect_s3_error err.xml NoSuchBucket
}

aws s3 mb "s3://$B"
check presigned_get check_presigned_get
check presigned_put check_presigned_put
check tampered_urls check_tampered_urls
check expired_url check_expired_url
check vhost_presigned check_vhost_presigned
check vhost_curl_sigv4 check_vhost_curl_sigv4
finish curl-presigned
