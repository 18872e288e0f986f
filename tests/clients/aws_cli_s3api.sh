#!/usr/bin/env bash
# The aws cli (v1, from PyPI) against a Sillok gateway, part 2: `aws s3api`
# calls (put/head/get with metadata and ranges, copy-object, delete-objects,
# list-objects-v2, the multipart API, conditional GETs), each checked on the
# bytes and fields S3 returns. Part 1: aws_cli_s3.sh.
# Run by tests/e2e/clients.rs; by hand: `. sillok-dev/cluster.env && bash tests/clients/aws_cli_s3api.sh`.
. "$(dirname "$0")/lib.sh"

# The endpoint comes from AWS_ENDPOINT_URL; nothing else is configured.
aws --version

MIB=$((1024 * 1024))

# head_json BUCKET KEY: head-object's JSON response.
head_json() {
    aws s3api head-object --bucket "$1" --key "$2" --output json
}

check_put_head_metadata() {
    local b=cli-meta
    aws s3 mb "s3://$b"
    random_file body.bin 54321
    local put
    put=$(aws s3api put-object --bucket "$b" --key photo.png --body body.bin \
        --content-type image/png --metadata sender=kim,room=42 \
        --cache-control max-age=60 --content-disposition 'attachment; filename="cat.png"' --output json)
    expect_eq "$(jq -r .ETag <<<"$put")" "\"$(file_md5 body.bin)\"" "put-object ETag"
    local head
    head=$(head_json "$b" photo.png)
    echo "$head"
    expect_eq "$(jq -r .ContentLength <<<"$head")" 54321 "ContentLength"
    expect_eq "$(jq -r .ETag <<<"$head")" "\"$(file_md5 body.bin)\"" "ETag"
    expect_eq "$(jq -r .ContentType <<<"$head")" image/png "ContentType"
    expect_eq "$(jq -r .Metadata.sender <<<"$head")" kim "Metadata.sender"
    expect_eq "$(jq -r .Metadata.room <<<"$head")" 42 "Metadata.room"
    expect_eq "$(jq -r .CacheControl <<<"$head")" max-age=60 "CacheControl"
    expect_eq "$(jq -r .ContentDisposition <<<"$head")" 'attachment; filename="cat.png"' "ContentDisposition"
    aws s3api get-object --bucket "$b" --key photo.png got.bin >get.json
    same_file got.bin body.bin
    expect_eq "$(jq -r .ContentType get.json)" image/png "get-object ContentType"
    expect_eq "$(jq -r .Metadata.sender get.json)" kim "get-object Metadata.sender"
}

check_get_range() {
    local b=cli-range size=300000
    aws s3 mb "s3://$b"
    random_file body.bin $size
    aws s3api put-object --bucket "$b" --key r.bin --body body.bin >/dev/null
    aws s3api get-object --bucket "$b" --key r.bin --range bytes=1000-1999 part.bin >resp.json
    slice body.bin 1000 1000 >want.bin
    same_file part.bin want.bin
    expect_eq "$(jq -r .ContentRange resp.json)" "bytes 1000-1999/$size" "ContentRange"
    expect_eq "$(jq -r .ContentLength resp.json)" 1000 "ContentLength of the range"
    # Suffix range: the last 500 bytes.
    aws s3api get-object --bucket "$b" --key r.bin --range bytes=-500 suffix.bin >resp.json
    tail -c 500 body.bin >want.bin
    same_file suffix.bin want.bin
    expect_eq "$(jq -r .ContentRange resp.json)" "bytes $((size - 500))-$((size - 1))/$size" "ContentRange of bytes=-500"
    # Open range from an offset to the end.
    aws s3api get-object --bucket "$b" --key r.bin --range "bytes=$((size - 10))-" tail.bin >/dev/null
    tail -c 10 body.bin >want.bin
    same_file tail.bin want.bin
    # A range that starts past the end: 416 InvalidRange.
    expect_error InvalidRange aws s3api get-object --bucket "$b" --key r.bin --range "bytes=$size-" nothing.bin
}

check_copy_object() {
    local b=cli-copy b2=cli-copy-dest
    aws s3 mb "s3://$b"
    aws s3 mb "s3://$b2"
    random_file src.bin 70001
    local key='dir/sp ace+ü.bin'
    aws s3api put-object --bucket "$b" --key "$key" --body src.bin --content-type text/plain --metadata a=1 >/dev/null
    local out
    out=$(aws s3api copy-object --bucket "$b" --key copy.bin --copy-source "$b/$key" --output json)
    echo "$out"
    expect_eq "$(jq -r .CopyObjectResult.ETag <<<"$out")" "\"$(file_md5 src.bin)\"" "CopyObjectResult.ETag"
    aws s3api get-object --bucket "$b" --key copy.bin got.bin >get.json
    same_file got.bin src.bin
    expect_eq "$(jq -r .ContentType get.json)" text/plain "copied ContentType (directive COPY)"
    expect_eq "$(jq -r .Metadata.a get.json)" 1 "copied Metadata.a (directive COPY)"
    # To another bucket, replacing the metadata.
    aws s3api copy-object --bucket "$b2" --key replaced.bin --copy-source "$b/$key" \
        --metadata-directive REPLACE --metadata a=2 --content-type application/x-test >/dev/null
    aws s3api get-object --bucket "$b2" --key replaced.bin got2.bin >get2.json
    same_file got2.bin src.bin
    expect_eq "$(jq -r .ContentType get2.json)" application/x-test "ContentType (directive REPLACE)"
    expect_eq "$(jq -r .Metadata.a get2.json)" 2 "Metadata.a (directive REPLACE)"
    # Copying a missing key: NoSuchKey.
    expect_error NoSuchKey aws s3api copy-object --bucket "$b" --key x --copy-source "$b/missing"
    # aws s3 cp/mv between S3 URLs: server-side copies; a 9 MiB object is
    # copied with UploadPartCopy (over the 8 MiB multipart threshold).
    random_file nine.bin $((9 * MIB + 17))
    aws s3 cp --only-show-errors nine.bin "s3://$b/nine.bin"
    aws s3 cp --only-show-errors "s3://$b/nine.bin" "s3://$b2/nine-copy.bin"
    aws s3 cp --only-show-errors "s3://$b2/nine-copy.bin" got-nine.bin
    same_file got-nine.bin nine.bin
    aws s3 mv --only-show-errors "s3://$b/copy.bin" "s3://$b2/moved.bin"
    aws s3 cp --only-show-errors "s3://$b2/moved.bin" got-moved.bin
    same_file got-moved.bin src.bin
    expect_error 404 aws s3api head-object --bucket "$b" --key copy.bin
}

check_delete_objects() {
    local b=cli-delete-objects
    aws s3 mb "s3://$b"
    seed_tree tree x k1 k2 k3 'dir/k 4'
    aws s3 cp --only-show-errors --recursive tree "s3://$b/"
    local out
    out=$(aws s3api delete-objects --bucket "$b" --output json \
        --delete '{"Objects":[{"Key":"k1"},{"Key":"dir/k 4"},{"Key":"missing"}]}')
    echo "$out"
    # S3 reports a missing key as deleted too.
    expect_eq "$(jq -c '[.Deleted[].Key] | sort' <<<"$out")" '["dir/k 4","k1","missing"]' "Deleted keys"
    expect_eq "$(jq -c '.Errors // []' <<<"$out")" '[]' "Errors"
    expect_eq "$(aws s3api list-objects-v2 --bucket "$b" --query 'Contents[].Key' --output json | jq -c .)" '["k2","k3"]' "keys left"
    # Quiet mode: no Deleted entries in the answer.
    out=$(aws s3api delete-objects --bucket "$b" --output json --delete '{"Objects":[{"Key":"k2"}],"Quiet":true}')
    echo "$out"
    [ -n "$out" ] || out='{}'
    expect_eq "$(jq -c '(.Deleted // []) | length' <<<"$out")" 0 "Deleted entries in quiet mode"
    expect_eq "$(aws s3api list-objects-v2 --bucket "$b" --query 'Contents[].Key' --output json | jq -c .)" '["k3"]' "keys left after the quiet delete"
}

check_list_objects_v2() {
    local b=cli-list
    aws s3 mb "s3://$b"
    seed_tree tree 12345 photos/2025/c.jpg photos/2026/a.jpg photos/2026/b.jpg photos/top.jpg readme videos/x.mp4
    aws s3 cp --only-show-errors --recursive tree "s3://$b/"
    local out
    # One page (--no-paginate): the cli drops KeyCount when it merges pages.
    out=$(aws s3api list-objects-v2 --bucket "$b" --prefix photos/ --delimiter / --no-paginate --output json)
    echo "$out"
    expect_eq "$(jq -c '[.CommonPrefixes[].Prefix]' <<<"$out")" '["photos/2025/","photos/2026/"]' "CommonPrefixes under photos/"
    expect_eq "$(jq -c '[.Contents[] | [.Key, .Size]]' <<<"$out")" '[["photos/top.jpg",5]]' "Contents under photos/"
    expect_eq "$(jq -r .KeyCount <<<"$out")" 3 "KeyCount (keys + common prefixes)"
    out=$(aws s3api list-objects-v2 --bucket "$b" --delimiter / --output json)
    expect_eq "$(jq -c '[.CommonPrefixes[].Prefix]' <<<"$out")" '["photos/","videos/"]' "top-level CommonPrefixes"
    expect_eq "$(jq -c '[.Contents[].Key]' <<<"$out")" '["readme"]' "top-level Contents"
    out=$(aws s3api list-objects-v2 --bucket "$b" --start-after photos/2026/b.jpg --output json)
    expect_eq "$(jq -c '[.Contents[].Key]' <<<"$out")" '["photos/top.jpg","readme","videos/x.mp4"]' "StartAfter"
    # One key per page: the cli follows the continuation tokens.
    out=$(aws s3api list-objects-v2 --bucket "$b" --page-size 1 --output json)
    expect_eq "$(jq -c '[.Contents[].Key]' <<<"$out")" \
        '["photos/2025/c.jpg","photos/2026/a.jpg","photos/2026/b.jpg","photos/top.jpg","readme","videos/x.mp4"]' "all keys, 1 per page"
    out=$(aws s3api list-objects-v2 --bucket "$b" --max-items 4 --page-size 3 --output json)
    expect_eq "$(jq -c '[.Contents[].Key]' <<<"$out")" \
        '["photos/2025/c.jpg","photos/2026/a.jpg","photos/2026/b.jpg","photos/top.jpg"]' "first 4 keys"
    local token
    token=$(jq -r .NextToken <<<"$out")
    out=$(aws s3api list-objects-v2 --bucket "$b" --starting-token "$token" --page-size 3 --output json)
    expect_eq "$(jq -c '[.Contents[].Key]' <<<"$out")" '["readme","videos/x.mp4"]' "the rest after --starting-token"
}

check_multipart_api() {
    local b=cli-multipart
    aws s3 mb "s3://$b"
    random_file p1 $((5 * MIB))
    random_file p2 $((5 * MIB))
    random_file p3 1234567
    cat p1 p2 p3 >whole.bin
    local uid
    uid=$(aws s3api create-multipart-upload --bucket "$b" --key mp.bin --content-type video/mp4 \
        --metadata room=7 --query UploadId --output text)
    echo "UploadId $uid"
    expect_contains "$(aws s3api list-multipart-uploads --bucket "$b" --output json | jq -c '[.Uploads[] | [.Key, .UploadId]]')" \
        "[\"mp.bin\",\"$uid\"]" "list-multipart-uploads"
    # Parts out of order, as a parallel uploader sends them.
    local e1 e2 e3
    e2=$(aws s3api upload-part --bucket "$b" --key mp.bin --upload-id "$uid" --part-number 2 --body p2 --query ETag --output text)
    e3=$(aws s3api upload-part --bucket "$b" --key mp.bin --upload-id "$uid" --part-number 3 --body p3 --query ETag --output text)
    e1=$(aws s3api upload-part --bucket "$b" --key mp.bin --upload-id "$uid" --part-number 1 --body p1 --query ETag --output text)
    expect_eq "$e1" "\"$(file_md5 p1)\"" "ETag of part 1"
    expect_eq "$e2" "\"$(file_md5 p2)\"" "ETag of part 2"
    expect_eq "$e3" "\"$(file_md5 p3)\"" "ETag of part 3"
    local parts
    parts=$(aws s3api list-parts --bucket "$b" --key mp.bin --upload-id "$uid" --output json)
    expect_eq "$(jq -c '[.Parts[] | [.PartNumber, .Size, .ETag]]' <<<"$parts")" \
        "$(jq -cn --arg e1 "$e1" --arg e2 "$e2" --arg e3 "$e3" "[[1,$((5 * MIB)),\$e1],[2,$((5 * MIB)),\$e2],[3,1234567,\$e3]]")" "list-parts"
    local done_json
    done_json=$(aws s3api complete-multipart-upload --bucket "$b" --key mp.bin --upload-id "$uid" --output json \
        --multipart-upload "$(jq -cn --arg e1 "$e1" --arg e2 "$e2" --arg e3 "$e3" \
            '{Parts:[{PartNumber:1,ETag:$e1},{PartNumber:2,ETag:$e2},{PartNumber:3,ETag:$e3}]}')")
    echo "$done_json"
    local want_etag
    want_etag="\"$(multipart_etag whole.bin $((5 * MIB)))\""
    expect_eq "$(jq -r .ETag <<<"$done_json")" "$want_etag" "complete-multipart-upload ETag"
    aws s3api get-object --bucket "$b" --key mp.bin got.bin >get.json
    same_file got.bin whole.bin
    expect_eq "$(jq -r .ETag get.json)" "$want_etag" "get-object ETag"
    expect_eq "$(jq -r .ContentLength get.json)" "$(stat -c %s whole.bin)" "ContentLength"
    expect_eq "$(jq -r .ContentType get.json)" video/mp4 "ContentType from create-multipart-upload"
    expect_eq "$(jq -r .Metadata.room get.json)" 7 "Metadata from create-multipart-upload"
    expect_eq "$(aws s3api list-multipart-uploads --bucket "$b" --output json | jq -c '.Uploads // []')" '[]' "uploads left after completion"
    # A ranged read across the boundary of parts 1 and 2.
    aws s3api get-object --bucket "$b" --key mp.bin --range "bytes=$((5 * MIB - 100))-$((5 * MIB + 99))" span.bin >/dev/null
    slice whole.bin $((5 * MIB - 100)) 200 >want-span.bin
    same_file span.bin want-span.bin
}

check_multipart_errors() {
    local b=cli-multipart-errors
    aws s3 mb "s3://$b"
    random_file small1 $((1 * MIB))
    random_file small2 $((1 * MIB))
    local uid e1 e2
    uid=$(aws s3api create-multipart-upload --bucket "$b" --key small.bin --query UploadId --output text)
    e1=$(aws s3api upload-part --bucket "$b" --key small.bin --upload-id "$uid" --part-number 1 --body small1 --query ETag --output text)
    e2=$(aws s3api upload-part --bucket "$b" --key small.bin --upload-id "$uid" --part-number 2 --body small2 --query ETag --output text)
    # Parts other than the last must be at least 5 MiB.
    expect_error EntityTooSmall aws s3api complete-multipart-upload --bucket "$b" --key small.bin --upload-id "$uid" \
        --multipart-upload "$(jq -cn --arg e1 "$e1" --arg e2 "$e2" '{Parts:[{PartNumber:1,ETag:$e1},{PartNumber:2,ETag:$e2}]}')"
    # A part that was never uploaded (wrong ETag).
    expect_error InvalidPart aws s3api complete-multipart-upload --bucket "$b" --key small.bin --upload-id "$uid" \
        --multipart-upload '{"Parts":[{"PartNumber":1,"ETag":"\"00000000000000000000000000000000\""}]}'
    # Parts not in ascending order.
    expect_error InvalidPartOrder aws s3api complete-multipart-upload --bucket "$b" --key small.bin --upload-id "$uid" \
        --multipart-upload "$(jq -cn --arg e1 "$e1" --arg e2 "$e2" '{Parts:[{PartNumber:2,ETag:$e2},{PartNumber:1,ETag:$e1}]}')"
    expect_error NoSuchUpload aws s3api upload-part --bucket "$b" --key small.bin --upload-id not-an-upload \
        --part-number 1 --body small1
    # A single part smaller than 5 MiB is fine: it is the last one.
    local done_json
    done_json=$(aws s3api complete-multipart-upload --bucket "$b" --key small.bin --upload-id "$uid" --output json \
        --multipart-upload "$(jq -cn --arg e1 "$e1" '{Parts:[{PartNumber:1,ETag:$e1}]}')")
    expect_eq "$(jq -r .ETag <<<"$done_json")" "\"$(multipart_etag small1 $((5 * MIB)))\"" "ETag of a 1-part upload"
    aws s3api get-object --bucket "$b" --key small.bin got.bin >/dev/null
    same_file got.bin small1
}

check_abort_multipart() {
    local b=cli-abort
    aws s3 mb "s3://$b"
    random_file p1 $((5 * MIB))
    local uid
    uid=$(aws s3api create-multipart-upload --bucket "$b" --key aborted.bin --query UploadId --output text)
    aws s3api upload-part --bucket "$b" --key aborted.bin --upload-id "$uid" --part-number 1 --body p1 >/dev/null
    aws s3api abort-multipart-upload --bucket "$b" --key aborted.bin --upload-id "$uid"
    expect_error NoSuchUpload aws s3api list-parts --bucket "$b" --key aborted.bin --upload-id "$uid"
    expect_error NoSuchUpload aws s3api upload-part --bucket "$b" --key aborted.bin --upload-id "$uid" --part-number 2 --body p1
    expect_eq "$(aws s3api list-multipart-uploads --bucket "$b" --output json | jq -c '.Uploads // []')" '[]' "uploads after abort"
    expect_error 404 aws s3api head-object --bucket "$b" --key aborted.bin
    # The aborted upload left nothing behind: the bucket can be deleted.
    aws s3 rb "s3://$b"
}

check_conditional_get() {
    local b=cli-conditional
    aws s3 mb "s3://$b"
    random_file body.bin 4096
    aws s3api put-object --bucket "$b" --key c.bin --body body.bin >/dev/null
    local etag
    etag=$(head_json "$b" c.bin | jq -r .ETag)
    # If-None-Match with the current ETag: 304 Not Modified.
    expect_error 304 aws s3api get-object --bucket "$b" --key c.bin --if-none-match "$etag" out.bin
    expect_error 304 aws s3api head-object --bucket "$b" --key c.bin --if-none-match "$etag"
    # If-None-Match with another ETag: the object.
    aws s3api get-object --bucket "$b" --key c.bin --if-none-match '"0123456789abcdef0123456789abcdef"' got1.bin >/dev/null
    same_file got1.bin body.bin
    # If-Match with the current ETag: the object; with another: 412.
    aws s3api get-object --bucket "$b" --key c.bin --if-match "$etag" got2.bin >/dev/null
    same_file got2.bin body.bin
    expect_error PreconditionFailed aws s3api get-object --bucket "$b" --key c.bin \
        --if-match '"0123456789abcdef0123456789abcdef"' out.bin
    # Dates: modified since tomorrow → 304; unmodified since 2001 → 412.
    expect_error 304 aws s3api get-object --bucket "$b" --key c.bin \
        --if-modified-since "$(date -u -d tomorrow +%Y-%m-%dT%H:%M:%SZ)" out.bin
    expect_error PreconditionFailed aws s3api get-object --bucket "$b" --key c.bin \
        --if-unmodified-since 2001-01-01T00:00:00Z out.bin
    aws s3api get-object --bucket "$b" --key c.bin --if-modified-since 2001-01-01T00:00:00Z got3.bin >/dev/null
    same_file got3.bin body.bin
}

check put_head_metadata check_put_head_metadata
check get_range check_get_range
check copy_object check_copy_object
check delete_objects check_delete_objects
check list_objects_v2 check_list_objects_v2
check multipart_api check_multipart_api
check multipart_errors check_multipart_errors
check abort_multipart check_abort_multipart
check conditional_get check_conditional_get
finish aws-cli-s3api
