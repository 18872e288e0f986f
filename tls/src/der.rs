//! The few things this crate reads out of an X.509 certificate's DER, with a
//! minimal reader rather than a full X.509 parser: the subject alternative
//! names of type URI (the identity, `crate::identity`), and a CA
//! certificate's subject and subject key identifier (to issue certificates
//! under a CA loaded from PEM, `crate::ca`).
//!
//! The reader walks definite-length DER only and answers `None` on anything
//! else (a truncated or malformed input, an indefinite length, a length over
//! 2^32): it never panics and never reads outside the input.

/// One DER element: its tag byte and its contents.
#[derive(Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

/// The elements of a DER sequence's (or set's) contents, in order.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

pub(crate) const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
/// `[3] EXPLICIT Extensions` in a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `[6] IMPLICIT IA5String` in GeneralName: a URI.
const GENERAL_NAME_URI: u8 = 0x86;
/// 2.5.29.17, subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.29.14, subjectKeyIdentifier.
const OID_SKI: &[u8] = &[0x55, 0x1d, 0x0e];

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// The next element, or `None` at the end or on malformed input (the
    /// reader is then left empty).
    pub fn next_tlv(&mut self) -> Option<Tlv<'a>> {
        let parsed = parse_one(self.rest);
        match parsed {
            Some((tlv, rest)) => {
                self.rest = rest;
                Some(tlv)
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }

    /// The next element if it has this tag (else nothing is consumed).
    fn take_if(&mut self, tag: u8) -> Option<Tlv<'a>> {
        let (tlv, rest) = parse_one(self.rest)?;
        if tlv.tag != tag {
            return None;
        }
        self.rest = rest;
        Some(tlv)
    }

    /// The next element, which must have this tag.
    fn expect(&mut self, tag: u8) -> Option<Tlv<'a>> {
        let tlv = self.next_tlv()?;
        (tlv.tag == tag).then_some(tlv)
    }
}

fn parse_one(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags (low five bits all set) do not occur in what we read.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (digits, after) = rest.split_at(n);
        rest = after;
        digits.iter().fold(0usize, |acc, &d| (acc << 8) | usize::from(d))
    };
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    Some((Tlv { tag, body }, rest))
}

/// The parts of a certificate's TBSCertificate this crate reads.
struct Tbs<'a> {
    subject: Tlv<'a>,
    /// The contents of the `extensions` SEQUENCE, if any.
    extensions: Option<&'a [u8]>,
}

fn tbs(cert_der: &[u8]) -> Option<Tbs<'_>> {
    let cert = Reader::new(cert_der).expect(SEQUENCE)?;
    let tbs = Reader::new(cert.body).expect(SEQUENCE)?;
    let mut r = Reader::new(tbs.body);
    r.take_if(0xa0); // version
    r.expect(0x02)?; // serialNumber
    r.expect(SEQUENCE)?; // signature algorithm
    r.expect(SEQUENCE)?; // issuer
    r.expect(SEQUENCE)?; // validity
    let subject = r.expect(SEQUENCE)?;
    r.expect(SEQUENCE)?; // subjectPublicKeyInfo
    r.take_if(0x81); // issuerUniqueID
    r.take_if(0x82); // subjectUniqueID
    let extensions = match r.take_if(EXTENSIONS) {
        Some(e) => Some(Reader::new(e.body).expect(SEQUENCE)?.body),
        None => None,
    };
    Some(Tbs { subject, extensions })
}

/// The value (the OCTET STRING's contents) of the extension with this OID.
fn extension<'a>(extensions: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    let mut exts = Reader::new(extensions);
    while let Some(ext) = exts.next_tlv() {
        if ext.tag != SEQUENCE {
            return None;
        }
        let mut e = Reader::new(ext.body);
        if e.expect(OID)?.body != oid {
            continue;
        }
        e.take_if(BOOLEAN); // critical
        return Some(e.expect(OCTET_STRING)?.body);
    }
    None
}

/// The URIs among a certificate's subject alternative names (none if it has
/// no such extension); `None` if the certificate cannot be read.
pub(crate) fn san_uris(cert_der: &[u8]) -> Option<Vec<String>> {
    let tbs = tbs(cert_der)?;
    let Some(san) = tbs.extensions.and_then(|e| extension(e, OID_SAN)) else {
        return Some(Vec::new());
    };
    let names = Reader::new(san).expect(SEQUENCE)?;
    let mut r = Reader::new(names.body);
    let mut uris = Vec::new();
    while let Some(name) = r.next_tlv() {
        if name.tag == GENERAL_NAME_URI {
            uris.push(String::from_utf8(name.body.to_vec()).ok()?);
        }
    }
    Some(uris)
}

/// A certificate's subject key identifier, if it has one.
pub(crate) fn subject_key_id(cert_der: &[u8]) -> Option<Vec<u8>> {
    let ski = extension(tbs(cert_der)?.extensions?, OID_SKI)?;
    Some(Reader::new(ski).expect(OCTET_STRING)?.body.to_vec())
}

/// One attribute of a distinguished name: its OID's arcs, the string's DER
/// tag and its bytes.
pub(crate) struct DnAttribute<'a> {
    pub oid: Vec<u64>,
    pub tag: u8,
    pub value: &'a [u8],
}

/// A certificate's subject, attribute by attribute in order; `None` if it
/// cannot be read or has a multi-valued RDN (not representable by rcgen).
pub(crate) fn subject(cert_der: &[u8]) -> Option<Vec<DnAttribute<'_>>> {
    let subject = tbs(cert_der)?.subject;
    let mut rdns = Reader::new(subject.body);
    let mut out = Vec::new();
    while let Some(rdn) = rdns.next_tlv() {
        if rdn.tag != SET {
            return None;
        }
        let mut set = Reader::new(rdn.body);
        let atv = set.expect(SEQUENCE)?;
        if set.next_tlv().is_some() {
            return None;
        }
        let mut a = Reader::new(atv.body);
        let oid = oid_arcs(a.expect(OID)?.body)?;
        let value = a.next_tlv()?;
        out.push(DnAttribute { oid, tag: value.tag, value: value.body });
    }
    Some(out)
}

/// The arcs of an OBJECT IDENTIFIER's contents.
fn oid_arcs(body: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for &b in body {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    (body.last().is_some_and(|b| b & 0x80 == 0)).then_some(arcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        assert!(san_uris(&[]).is_none());
        assert!(san_uris(&[0x30]).is_none());
        assert!(san_uris(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_none());
        assert!(san_uris(&[0x30, 0x80, 0, 0]).is_none());
        assert!(san_uris(&[0x30, 0x03, 0x30, 0x01]).is_none());
        // Every prefix of a real certificate is refused, none panics.
        let ca = crate::Ca::generate("t").unwrap();
        let der = ca.cert_der();
        for n in 0..der.len() {
            assert!(san_uris(&der[..n]).is_none());
            assert!(subject(&der[..n]).is_none());
        }
        assert_eq!(san_uris(der), Some(vec![]));
    }

    #[test]
    fn oids_decode() {
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]), Some(vec![1, 2, 840, 113549]));
        assert_eq!(oid_arcs(&[0x2a, 0x86]), None);
    }
}
