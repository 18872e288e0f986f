#!/usr/bin/env python3
"""boto3 (newest from PyPI, default settings: its default request checksums
included) against a Sillok gateway. Each check creates its own bucket and
compares the bytes and fields that come back with what it sent.

Run by tests/e2e/clients.rs; by hand:
    . sillok-dev/cluster.env && python3 -u tests/clients/boto3_client.py
Environment: AWS_ENDPOINT_URL, AWS_REGION and the keys (cluster.env),
SILLOK_CLIENT_WORK (scratch folder, default a new temp dir) and SILLOK_CHECKS
(comma-separated check names to run; default all).
"""

import base64
import hashlib
import http.client
import os
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zlib

import boto3
import botocore
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

MIB = 1024 * 1024
REGION = os.environ["AWS_REGION"]
ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
WORK = os.environ.get("SILLOK_CLIENT_WORK") or tempfile.mkdtemp()
os.makedirs(WORK, exist_ok=True)

# The endpoint comes from AWS_ENDPOINT_URL, the keys from AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY: no other configuration.
s3 = boto3.client("s3", region_name=REGION)

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def multipart_etag(data, part_size):
    digests = b"".join(hashlib.md5(data[i : i + part_size]).digest() for i in range(0, len(data), part_size))
    return f'"{hashlib.md5(digests).hexdigest()}-{(len(data) + part_size - 1) // part_size}"'


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def sha256_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


# Unmet expectations of the running check: noted, the check goes on (so that
# one run shows every difference) and fails when it ends. Exceptions and
# differing bytes end it at once.
UNMET = []


def unmet(message):
    print(f"CHECK FAILED: {message}")
    UNMET.append(message[:400])


def expect_eq(got, want, what):
    if got != want:
        unmet(f"{what}: got {got!r}, want {want!r}")
        return
    shown = got if not isinstance(got, (bytes, bytearray)) else f"<{len(got)} bytes>"
    print(f"ok: {what} = {shown!r}")


def expect_bytes(got, want, what):
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise AssertionError(f"{what}: {len(got)} bytes, want {len(want)}; first difference at byte {first}")
    print(f"ok: {what}: {len(got)} bytes equal")


def expect_client_error(code, status, fn, **kwargs):
    """`fn(**kwargs)` must raise ClientError with Error.Code `code` and HTTP `status`."""
    try:
        fn(**kwargs)
    except ClientError as e:
        got_code = e.response.get("Error", {}).get("Code")
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if got_code != code or got_status != status:
            unmet(f"{fn.__name__}: want {code} ({status}), got {got_code} ({got_status}): {e}")
        else:
            print(f"ok: {fn.__name__} -> {code} ({status})")
        return e
    shown = {k: (v if not isinstance(v, (bytes, bytearray)) else f"<{len(v)} bytes>") for k, v in kwargs.items()}
    unmet(f"{fn.__name__}({shown}) succeeded; want {code} ({status})")
    return None


def xml_fields(body):
    """Top-level child elements of an XML document, namespace stripped
    (("", {}) if the body is no XML)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", {}
    return root.tag.split("}")[-1], {child.tag.split("}")[-1]: child.text for child in root}


@check
def check_put_get_range(bucket):
    body = os.urandom(1_000_003)
    put = s3.put_object(Bucket=bucket, Key="obj.bin", Body=body, Metadata={"sender": "lee"}, ContentType="video/mp4")
    expect_eq(put["ETag"], f'"{md5_hex(body)}"', "PutObject ETag")
    got = s3.get_object(Bucket=bucket, Key="obj.bin")
    expect_bytes(got["Body"].read(), body, "GetObject body")
    expect_eq(got["ContentLength"], len(body), "ContentLength")
    expect_eq(got["ContentType"], "video/mp4", "ContentType")
    expect_eq(got["Metadata"], {"sender": "lee"}, "Metadata")
    expect_eq(got["ETag"], put["ETag"], "GetObject ETag")
    part = s3.get_object(Bucket=bucket, Key="obj.bin", Range="bytes=1000-1999")
    expect_eq(part["ResponseMetadata"]["HTTPStatusCode"], 206, "status of a ranged GET")
    expect_eq(part["ContentRange"], f"bytes 1000-1999/{len(body)}", "ContentRange")
    expect_bytes(part["Body"].read(), body[1000:2000], "bytes 1000-1999")
    suffix = s3.get_object(Bucket=bucket, Key="obj.bin", Range="bytes=-777")
    expect_bytes(suffix["Body"].read(), body[-777:], "bytes=-777")
    empty = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    expect_eq(empty["ETag"], f'"{md5_hex(b"")}"', "ETag of an empty object")
    expect_bytes(s3.get_object(Bucket=bucket, Key="empty")["Body"].read(), b"", "empty object")


@check
def check_default_checksums(bucket):
    # boto3's default (request_checksum_calculation=when_supported): a CRC32
    # of every PutObject body goes with the request.
    body = os.urandom(300_001)
    put = s3.put_object(Bucket=bucket, Key="crc.bin", Body=body)
    expect_eq(put.get("ChecksumCRC32"), crc32_b64(body), "PutObject ChecksumCRC32")
    head = s3.head_object(Bucket=bucket, Key="crc.bin", ChecksumMode="ENABLED")
    expect_eq(head.get("ChecksumCRC32"), crc32_b64(body), "HeadObject ChecksumCRC32 (ChecksumMode=ENABLED)")
    # With ChecksumMode=ENABLED, botocore also validates the body against it.
    got = s3.get_object(Bucket=bucket, Key="crc.bin", ChecksumMode="ENABLED")
    expect_eq(got.get("ChecksumCRC32"), crc32_b64(body), "GetObject ChecksumCRC32")
    expect_bytes(got["Body"].read(), body, "GetObject body (validated by botocore)")
    # Another algorithm, asked for explicitly.
    put = s3.put_object(Bucket=bucket, Key="sha.bin", Body=body, ChecksumAlgorithm="SHA256")
    expect_eq(put.get("ChecksumSHA256"), sha256_b64(body), "PutObject ChecksumSHA256")
    head = s3.head_object(Bucket=bucket, Key="sha.bin", ChecksumMode="ENABLED")
    expect_eq(head.get("ChecksumSHA256"), sha256_b64(body), "HeadObject ChecksumSHA256")


@check
def check_checksum_mismatch_rejected(bucket):
    body = os.urandom(10_000)
    wrong = crc32_b64(body + b"x")
    expect_client_error("BadDigest", 400, s3.put_object, Bucket=bucket, Key="bad.bin", Body=body, ChecksumCRC32=wrong)
    expect_client_error("404", 404, s3.head_object, Bucket=bucket, Key="bad.bin")
    expect_client_error(
        "BadDigest",
        400,
        s3.put_object,
        Bucket=bucket,
        Key="bad.bin",
        Body=body,
        ContentMD5=base64.b64encode(hashlib.md5(body + b"x").digest()).decode(),
    )


@check
def check_upload_download_file_multipart(bucket):
    # s3transfer's defaults: multipart over 8 MiB, in 8 MiB parts.
    src = os.path.join(WORK, "boto3-big.bin")
    data = os.urandom(20 * MIB + 12345)
    with open(src, "wb") as f:
        f.write(data)
    t = time.monotonic()
    s3.upload_file(src, bucket, "big.bin")
    print(f"upload_file: {time.monotonic() - t:.1f}s")
    dst = os.path.join(WORK, "boto3-big.got")
    t = time.monotonic()
    s3.download_file(bucket, "big.bin", dst)
    print(f"download_file: {time.monotonic() - t:.1f}s")
    expect_eq(sha256_file(dst), hashlib.sha256(data).hexdigest(), "sha256 of the downloaded file")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    expect_eq(head["ContentLength"], len(data), "ContentLength")
    expect_eq(head["ETag"], multipart_etag(data, 8 * MIB), "multipart ETag (3 parts of 8 MiB)")
    # The same through file objects, with 5 MiB parts.
    cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    with open(src, "rb") as f:
        s3.upload_fileobj(f, bucket, "big5.bin", Config=cfg)
    with open(dst, "wb") as f:
        s3.download_fileobj(bucket, "big5.bin", f, Config=cfg)
    expect_eq(sha256_file(dst), hashlib.sha256(data).hexdigest(), "sha256 after upload_fileobj/download_fileobj")
    expect_eq(s3.head_object(Bucket=bucket, Key="big5.bin")["ETag"], multipart_etag(data, 5 * MIB), "ETag, 5 MiB parts")


@check
def check_copy_object(bucket):
    body = os.urandom(70_001)
    key = "dir/sp ace+ü.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"a": "1"}, ContentType="text/plain")
    out = s3.copy_object(Bucket=bucket, Key="copy.bin", CopySource={"Bucket": bucket, "Key": key})
    expect_eq(out["CopyObjectResult"]["ETag"], f'"{md5_hex(body)}"', "CopyObjectResult.ETag")
    got = s3.get_object(Bucket=bucket, Key="copy.bin")
    expect_bytes(got["Body"].read(), body, "copy")
    expect_eq(got["Metadata"], {"a": "1"}, "Metadata copied (COPY)")
    expect_eq(got["ContentType"], "text/plain", "ContentType copied (COPY)")
    s3.copy_object(
        Bucket=bucket,
        Key="replaced.bin",
        CopySource={"Bucket": bucket, "Key": key},
        MetadataDirective="REPLACE",
        Metadata={"a": "2"},
        ContentType="application/x-test",
    )
    got = s3.get_object(Bucket=bucket, Key="replaced.bin")
    expect_bytes(got["Body"].read(), body, "copy with REPLACE")
    expect_eq(got["Metadata"], {"a": "2"}, "Metadata (REPLACE)")
    expect_eq(got["ContentType"], "application/x-test", "ContentType (REPLACE)")
    # Conditional copy.
    expect_client_error(
        "PreconditionFailed",
        412,
        s3.copy_object,
        Bucket=bucket,
        Key="never.bin",
        CopySource={"Bucket": bucket, "Key": key},
        CopySourceIfMatch='"0123456789abcdef0123456789abcdef"',
    )
    # A managed copy over the multipart threshold: UploadPartCopy with ranges.
    big = os.urandom(11 * MIB + 3)
    s3.put_object(Bucket=bucket, Key="big-src.bin", Body=big)
    cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.copy({"Bucket": bucket, "Key": "big-src.bin"}, bucket, "big-copy.bin", Config=cfg)
    expect_bytes(s3.get_object(Bucket=bucket, Key="big-copy.bin")["Body"].read(), big, "multipart copy")
    expect_eq(s3.head_object(Bucket=bucket, Key="big-copy.bin")["ETag"], multipart_etag(big, 5 * MIB), "ETag of the copy")


@check
def check_delete_objects(bucket):
    keys = ["k1", "k2", "k3", "dir/k 4", "k5"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    out = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "k1"}, {"Key": "dir/k 4"}, {"Key": "missing"}], "Quiet": False}
    )
    expect_eq(sorted(d["Key"] for d in out.get("Deleted", [])), ["dir/k 4", "k1", "missing"], "Deleted (not quiet)")
    expect_eq(out.get("Errors", []), [], "Errors (not quiet)")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k2"}, {"Key": "k3"}], "Quiet": True})
    expect_eq(out.get("Deleted", []), [], "Deleted (quiet)")
    expect_eq(out.get("Errors", []), [], "Errors (quiet)")
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    expect_eq(left, ["k5"], "keys left")
    expect_bytes(s3.get_object(Bucket=bucket, Key="k5")["Body"].read(), b"k5", "the kept object")


@check
def check_list_paginator(bucket):
    # boto3 asks for URL-encoded listings: '+', '%' and spaces must come back as they went in.
    keys = [f"p/{i:02d}.jpg" for i in range(23)] + ["q/x", "q/y/z", "r", "s/a+b=c 100%.jpg"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="p/", PaginationConfig={"PageSize": 5}))
    expect_eq([len(p.get("Contents", [])) for p in pages], [5, 5, 5, 5, 3], "page sizes")
    expect_eq([p["KeyCount"] for p in pages], [5, 5, 5, 5, 3], "KeyCount of each page")
    expect_eq([p["IsTruncated"] for p in pages], [True, True, True, True, False], "IsTruncated of each page")
    got = [o["Key"] for p in pages for o in p["Contents"]]
    expect_eq(got, sorted(k for k in keys if k.startswith("p/")), "keys over all pages")
    expect_eq({o["Size"] for p in pages for o in p["Contents"]}, {len("p/00.jpg")}, "sizes")
    expect_eq(
        {o["ETag"] for p in pages for o in p["Contents"] if o["Key"] == "p/07.jpg"}, {f'"{md5_hex(b"p/07.jpg")}"'}, "ETag"
    )
    # Delimiter, two per page: prefixes and keys together make up the pages.
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2}))
    prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    contents = [o["Key"] for p in pages for o in p.get("Contents", [])]
    expect_eq(prefixes, ["p/", "q/", "s/"], "CommonPrefixes over pages")
    expect_eq(contents, ["r"], "Contents over pages")
    # Version 1 listing through its paginator (markers).
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 7}))
    expect_eq([o["Key"] for p in pages for o in p["Contents"]], sorted(keys), "ListObjects (v1) over pages")
    got = s3.list_objects_v2(Bucket=bucket, Prefix="s/")
    expect_eq([o["Key"] for o in got.get("Contents", [])], ["s/a+b=c 100%.jpg"], "a key with '+', '=', ' ' and '%' listed")


@check
def check_presigned_put_get(bucket):
    body = os.urandom(200_003)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre/signed.bin"}, ExpiresIn=300)
    print(f"presigned PUT: {put_url}")
    u = urllib.parse.urlsplit(put_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("PUT", f"{u.path}?{u.query}", body=body, headers={"Content-Length": str(len(body))})
    resp = conn.getresponse()
    answer = resp.read()
    expect_eq(resp.status, 200, f"status of the presigned PUT ({answer[:300]!r})")
    expect_eq(resp.getheader("ETag"), f'"{md5_hex(body)}"', "ETag of the presigned PUT")
    conn.close()
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre/signed.bin"}, ExpiresIn=300)
    with urllib.request.urlopen(get_url, timeout=60) as r:
        expect_eq(r.status, 200, "status of the presigned GET")
        expect_bytes(r.read(), body, "presigned GET")
    # A Range header on a presigned GET, and a response-* override.
    override_url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "pre/signed.bin", "ResponseContentType": "image/webp"},
        ExpiresIn=300,
    )
    req = urllib.request.Request(override_url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(req, timeout=60) as r:
        expect_eq(r.status, 206, "status of a ranged presigned GET")
        expect_eq(r.headers["Content-Type"], "image/webp", "response-content-type override")
        expect_bytes(r.read(), body[10:20], "ranged presigned GET")
    # Tampered: another key with the same signature.
    bad = get_url.replace("pre/signed.bin", "pre/other.bin")
    try:
        urllib.request.urlopen(bad, timeout=60)
        raise AssertionError("a presigned URL for another key was accepted")
    except urllib.error.HTTPError as e:
        tag, fields = xml_fields(e.read())
        expect_eq((e.code, tag, fields.get("Code")), (403, "Error", "SignatureDoesNotMatch"), "tampered presigned GET")


def presigned_post(bucket):
    """A browser-upload form: a fixed key, Content-Type and metadata, a 201
    answer, at most 1,000,000 bytes. (The `${filename}` key variable is not
    supported: s3s does not pass the file name on; docs/s3-compatibility.md.)"""
    conditions = [
        {"Content-Type": "image/png"},
        {"success_action_status": "201"},
        {"x-amz-meta-sender": "park"},
        ["content-length-range", 1, 1_000_000],
    ]
    fields = {"Content-Type": "image/png", "success_action_status": "201", "x-amz-meta-sender": "park"}
    post = s3.generate_presigned_post(bucket, "uploads/cat.png", Fields=fields, Conditions=conditions, ExpiresIn=300)
    print(f"presigned POST to {post['url']} with fields {sorted(post['fields'])}")
    return post


@check
def check_presigned_post(bucket):
    body = os.urandom(100_001)
    post = presigned_post(bucket)
    r = requests.post(post["url"], data=post["fields"], files={"file": ("cat.png", body, "image/png")}, timeout=60)
    print(f"POST -> {r.status_code} {r.text[:500]}")
    expect_eq(r.status_code, 201, "status of the POST (success_action_status=201)")
    tag, answer = xml_fields(r.content)
    expect_eq(tag, "PostResponse", "root element of the answer")
    expect_eq(answer.get("Bucket"), bucket, "PostResponse Bucket")
    expect_eq(answer.get("Key"), "uploads/cat.png", "PostResponse Key")
    expect_eq(answer.get("ETag"), f'"{md5_hex(body)}"', "PostResponse ETag")
    got = s3.get_object(Bucket=bucket, Key="uploads/cat.png")
    expect_bytes(got["Body"].read(), body, "object uploaded by POST")
    expect_eq(got["ContentType"], "image/png", "ContentType from the form")
    expect_eq(got["Metadata"], {"sender": "park"}, "Metadata from the form")


@check
def check_presigned_post_of_carriage_returns(bucket):
    # A file of '\r' bytes: every read of the body ends with a byte that may
    # start the form's boundary. s3s's form parser then buffered the whole next
    # read and failed valid uploads past 64 KiB (400); the gateway now feeds
    # it small frames. The bytes must come back exactly.
    body = b"\r" * 999_999
    post = presigned_post(bucket)
    for attempt in range(3):
        r = requests.post(post["url"], data=post["fields"], files={"file": ("cr.png", body, "image/png")}, timeout=60)
        expect_eq(r.status_code, 201, f"status of a POST of 999,999 carriage returns (try {attempt + 1})")
        got = s3.get_object(Bucket=bucket, Key="uploads/cat.png")["Body"].read()
        expect_eq((len(got), got == body), (len(body), True), "the carriage returns read back")


@check
def check_presigned_post_policy(bucket):
    body = os.urandom(1000)
    post = presigned_post(bucket)
    # Over the policy's content-length-range: 400 EntityTooLarge, nothing stored.
    r = requests.post(
        post["url"], data=post["fields"], files={"file": ("huge.png", os.urandom(1_000_001), "image/png")}, timeout=60
    )
    expect_eq((r.status_code, xml_fields(r.content)[1].get("Code")), (400, "EntityTooLarge"), "POST over the size limit")
    # A form field the policy does not allow: 403 AccessDenied ("Invalid
    # according to Policy: Policy Condition failed").
    tampered = dict(post["fields"], **{"x-amz-meta-sender": "kim"})
    r = requests.post(post["url"], data=tampered, files={"file": ("evil.png", body, "image/png")}, timeout=60)
    expect_eq((r.status_code, xml_fields(r.content)[1].get("Code")), (403, "AccessDenied"), "POST against the policy")
    # A forged signature: 403 SignatureDoesNotMatch.
    forged = dict(post["fields"])
    sig = forged["x-amz-signature"]
    forged["x-amz-signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    r = requests.post(post["url"], data=forged, files={"file": ("forged.png", body, "image/png")}, timeout=60)
    expect_eq((r.status_code, xml_fields(r.content)[1].get("Code")), (403, "SignatureDoesNotMatch"), "forged POST")
    # None of the three rejected forms stored anything.
    expect_eq([o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])], [], "keys after rejected POSTs")


@check
def check_error_codes(bucket):
    s3.put_object(Bucket=bucket, Key="small", Body=b"0123456789")
    expect_client_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="missing")
    expect_client_error("NoSuchBucket", 404, s3.get_object, Bucket="py-no-such-bucket", Key="k")
    expect_client_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket="py-no-such-bucket")
    expect_client_error("InvalidRange", 416, s3.get_object, Bucket=bucket, Key="small", Range="bytes=10-20")
    expect_client_error("404", 404, s3.head_object, Bucket=bucket, Key="missing")
    expect_client_error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket=bucket)
    expect_client_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket=bucket)
    stranger = boto3.client(
        "s3", region_name=REGION, aws_access_key_id="AKIDNOSUCHKEY00000000", aws_secret_access_key="x" * 40
    )
    expect_client_error("InvalidAccessKeyId", 403, stranger.list_buckets)
    forger = boto3.client(
        "s3",
        region_name=REGION,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"] + "x",
    )
    expect_client_error("SignatureDoesNotMatch", 403, forger.get_object, Bucket=bucket, Key="small")


@check
def check_conditional_requests(bucket):
    body = os.urandom(5000)
    etag = s3.put_object(Bucket=bucket, Key="c.bin", Body=body)["ETag"]
    expect_client_error("304", 304, s3.get_object, Bucket=bucket, Key="c.bin", IfNoneMatch=etag)
    expect_client_error("PreconditionFailed", 412, s3.get_object, Bucket=bucket, Key="c.bin", IfMatch='"00ff"')
    expect_bytes(s3.get_object(Bucket=bucket, Key="c.bin", IfMatch=etag)["Body"].read(), body, "GET If-Match current")
    # Conditional writes: If-None-Match: * creates only; If-Match replaces only that version.
    s3.put_object(Bucket=bucket, Key="new.bin", Body=b"first", IfNoneMatch="*")
    expect_client_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="new.bin", Body=b"second", IfNoneMatch="*")
    expect_bytes(s3.get_object(Bucket=bucket, Key="new.bin")["Body"].read(), b"first", "kept after If-None-Match: *")
    etag2 = s3.put_object(Bucket=bucket, Key="c.bin", Body=b"v2", IfMatch=etag)["ETag"]
    expect_eq(etag2, f'"{md5_hex(b"v2")}"', "ETag after a conditional overwrite")
    expect_client_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="c.bin", Body=b"v3", IfMatch=etag)
    expect_bytes(s3.get_object(Bucket=bucket, Key="c.bin")["Body"].read(), b"v2", "kept after a stale If-Match")


@check
def check_versioning(bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    expect_eq(s3.get_bucket_versioning(Bucket=bucket).get("Status"), "Enabled", "versioning status")
    v1 = s3.put_object(Bucket=bucket, Key="v.txt", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v.txt", Body=b"two")["VersionId"]
    expect_bytes(s3.get_object(Bucket=bucket, Key="v.txt", VersionId=v1)["Body"].read(), b"one", "GET by version id")
    marker = s3.delete_object(Bucket=bucket, Key="v.txt")
    expect_eq(marker.get("DeleteMarker"), True, "a DELETE in a versioned bucket makes a delete marker")
    expect_client_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="v.txt")
    listed = s3.list_object_versions(Bucket=bucket)
    expect_eq([v["VersionId"] for v in listed.get("Versions", [])], [v2, v1], "versions, newest first")
    expect_eq([(m["VersionId"], m["IsLatest"]) for m in listed.get("DeleteMarkers", [])],
              [(marker["VersionId"], True)], "the delete marker is the latest")
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1})
    ids = [v["VersionId"] for p in pages for v in p.get("Versions", []) + p.get("DeleteMarkers", [])]
    expect_eq(sorted(ids), sorted([v1, v2, marker["VersionId"]]), "every version through the paginator, one per page")
    s3.delete_object(Bucket=bucket, Key="v.txt", VersionId=marker["VersionId"])
    expect_bytes(s3.get_object(Bucket=bucket, Key="v.txt")["Body"].read(), b"two", "current again once the marker is deleted")


@check
def check_exact_answers(bucket):
    """Answers S3's reference pins exactly (issue 16), as boto3 sees them."""
    # boto3 refuses non-ASCII metadata before sending it; an RFC 2047
    # encoded word is ASCII, stored decoded, and comes back encoded (boto3
    # does not decode it).
    title = "사진 café"
    try:
        s3.put_object(Bucket=bucket, Key="m", Body=b"x", Metadata={"title": title})
        unmet("boto3 sent non-ASCII metadata (it refused it client-side when this check was written)")
    except botocore.exceptions.ParamValidationError:
        print("ok: boto3 refuses non-ASCII metadata before sending it")
    encoded = "=?UTF-8?B?" + base64.b64encode(title.encode()).decode() + "?="
    s3.put_object(Bucket=bucket, Key="m", Body=b"x", Metadata={"title": encoded})
    got = s3.head_object(Bucket=bucket, Key="m")["Metadata"].get("title", "")
    expect_eq(got, encoded, "RFC 2047 metadata as boto3 gets it back")
    # A 304 carries the validators a 200 would.
    etag = s3.put_object(Bucket=bucket, Key="p", Body=b"page", CacheControl="max-age=60")["ETag"]
    e = expect_client_error("304", 304, s3.get_object, Bucket=bucket, Key="p", IfNoneMatch=etag)
    if e is not None:
        h = e.response["ResponseMetadata"]["HTTPHeaders"]
        expect_eq((h.get("etag"), h.get("cache-control")), (etag, "max-age=60"), "ETag and Cache-Control on the 304")
    expect_client_error("KeyTooLongError", 400, s3.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x")
    # A repeated completion answers as the first; HEAD of a part is a 206.
    mp = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=mp["UploadId"], PartNumber=1, Body=b"y" * 1000)
    done = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    first = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=mp["UploadId"], MultipartUpload=done)
    again = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=mp["UploadId"], MultipartUpload=done)
    expect_eq(again["ETag"], first["ETag"], "ETag of a repeated CompleteMultipartUpload")
    h = s3.head_object(Bucket=bucket, Key="mp", PartNumber=1)
    got = (h["ResponseMetadata"]["HTTPStatusCode"], h.get("PartsCount"), h["ContentLength"], h.get("ContentRange"))
    expect_eq(got, (206, 1, 1000, "bytes 0-999/1000"), "HEAD partNumber=1: status, PartsCount, length, range")


def main():
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}, endpoint {s3.meta.endpoint_url}, region {REGION}")
    only = {c for c in os.environ.get("SILLOK_CHECKS", "").split(",") if c}
    results = []
    for fn in CHECKS:
        name = fn.__name__.removeprefix("check_")
        if only and name not in only:
            continue
        print(f"\n==== check {name}", flush=True)
        started = time.monotonic()
        bucket = "py-" + name.replace("_", "-")
        UNMET.clear()
        try:
            s3.create_bucket(Bucket=bucket)
            fn(bucket)
            ok = not UNMET
        except Exception:
            traceback.print_exc(file=sys.stdout)
            ok = False
        if UNMET:
            print(f"CHECK FAILED: {len(UNMET)} expectation(s) not met:")
            for m in UNMET:
                print(f"  - {m}")
        took = time.monotonic() - started
        results.append((ok, name, took))
        print(f"==== {'PASS' if ok else 'FAIL'} {name} ({took:.0f}s)", flush=True)
    print("\n==== results of boto3")
    for ok, name, took in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}  ({took:.0f}s)")
    failed = sum(1 for ok, _, _ in results if not ok)
    print(f"==== boto3 checks: passed {len(results) - failed}, failed {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
