//! `xml_bodies`: the XML request bodies the gateway receives, parsed the way
//! s3s parses them (`s3s::xml::Deserializer`, `Deserialize`, then
//! `expect_eof`): `CompleteMultipartUpload` (`CompletedMultipartUpload`),
//! `Delete` (DeleteObjects) and `CreateBucketConfiguration`.
//!
//! Input: the body. Each of the three types is parsed from it.
//!
//! Invariant: nothing panics; a body that parses serialises (with s3s's
//! `Serializer`) to XML that parses back to an equal value, except for a
//! known s3s quirk: an `<ETag>` that is not a valid quoted ETag is kept
//! verbatim as a strong ETag (control characters and all: `<ETag>a\x01b</ETag>`),
//! is then written quoted, and a quoted ETag with such bytes does not parse (regression:
//! `s3s_unquoted_etag_does_not_round_trip`); and s3s writes ETags into XML
//! without escaping, so an ETag holding `&` or `<` (`<ETag>a&amp;b</ETag>`)
//! makes ill-formed or injected XML (regression:
//! `s3s_etag_serialised_unescaped`). Values holding such ETags are not
//! round-tripped.

use std::fmt::Debug;

use s3s::dto::{CompletedMultipartUpload, CreateBucketConfiguration, Delete, ETag};
use s3s::xml::{DeResult, Deserialize, Deserializer, Serialize, Serializer};

/// Parses a whole body as s3s does for a request.
pub fn parse<T: for<'xml> Deserialize<'xml>>(body: &[u8]) -> DeResult<T> {
    let mut d = Deserializer::new(body);
    let value = T::deserialize(&mut d)?;
    d.expect_eof()?;
    Ok(value)
}

/// Whether s3s would read this ETag back from what it writes: the quoted
/// form, written without XML escaping (so `&` and `<` break the document).
fn quotable(e: &ETag) -> bool {
    if e.value().contains(['&', '<']) {
        return false;
    }
    let quoted = match e {
        ETag::Strong(v) => format!("\"{v}\""),
        ETag::Weak(v) => format!("W/\"{v}\""),
    };
    ETag::parse_http_header(quoted.as_bytes()).is_ok_and(|again| &again == e)
}

/// The ETags a body carries.
trait ETags {
    fn etags(&self) -> Vec<&ETag>;
}

impl ETags for CompletedMultipartUpload {
    fn etags(&self) -> Vec<&ETag> {
        self.parts.iter().flatten().filter_map(|p| p.e_tag.as_ref()).collect()
    }
}

impl ETags for Delete {
    fn etags(&self) -> Vec<&ETag> {
        self.objects.iter().filter_map(|o| o.e_tag.as_ref()).collect()
    }
}

impl ETags for CreateBucketConfiguration {
    fn etags(&self) -> Vec<&ETag> {
        Vec::new()
    }
}

fn round_trip<T>(body: &[u8])
where
    T: for<'xml> Deserialize<'xml> + Serialize + PartialEq + Debug + ETags,
{
    let Ok(value) = parse::<T>(body) else { return };
    if !value.etags().into_iter().all(quotable) {
        return;
    }
    let mut xml = Vec::new();
    {
        let mut s = Serializer::new(&mut xml);
        s.decl().expect("xml declaration");
        value.serialize(&mut s).expect("serialising into a Vec");
    }
    match parse::<T>(&xml) {
        Ok(again) => assert_eq!(
            again,
            value,
            "{} re-serialised as {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&xml)
        ),
        Err(e) => panic!("{:?} re-serialised as {}, which does not parse: {e:?}", value, String::from_utf8_lossy(&xml)),
    }
}

pub fn run(data: &[u8]) {
    round_trip::<CompletedMultipartUpload>(data);
    round_trip::<Delete>(data);
    round_trip::<CreateBucketConfiguration>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_bodies_parse() {
        let c = br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"a"</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>"#;
        let parsed = parse::<CompletedMultipartUpload>(c).unwrap();
        assert_eq!(parsed.parts.unwrap()[0].part_number, Some(1));
        let d = b"<Delete><Object><Key>a&amp;b</Key></Object><Quiet>true</Quiet></Delete>";
        assert_eq!(parse::<Delete>(d).unwrap().objects[0].key, "a&b");
        let b = b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";
        assert!(parse::<CreateBucketConfiguration>(b).unwrap().location_constraint.is_some());
        for body in [&c[..], d, b] {
            run(body);
        }
    }
}
