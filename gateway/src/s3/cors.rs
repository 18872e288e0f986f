//! Put/Get/DeleteBucketCors at the S3 edge: s3s's `CORSConfiguration` to and
//! from the catalog's [`CorsConfig`], validated by S3's rules before it is
//! proposed (so a bad one gets S3's code, `MalformedXML` or `InvalidRequest`).
//! Preflights and the headers on actual requests are `crate::cors`'s.

use s3s::dto::*;
use s3s::{S3Error, S3Request};
use sillok_catalog::cors::{CorsConfig, CorsRule};

use super::SillokS3;
use crate::error::GatewayError;

fn rule_of(r: CORSRule) -> CorsRule {
    CorsRule {
        id: r.id,
        allowed_origins: r.allowed_origins,
        allowed_methods: r.allowed_methods,
        allowed_headers: r.allowed_headers.unwrap_or_default(),
        expose_headers: r.expose_headers.unwrap_or_default(),
        max_age_seconds: r.max_age_seconds,
    }
}

fn dto_of(r: CorsRule) -> CORSRule {
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    CORSRule {
        id: r.id,
        allowed_origins: r.allowed_origins,
        allowed_methods: r.allowed_methods,
        allowed_headers: some(r.allowed_headers),
        expose_headers: some(r.expose_headers),
        max_age_seconds: r.max_age_seconds,
    }
}

impl SillokS3 {
    pub(super) async fn do_put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> Result<PutBucketCorsOutput, S3Error> {
        let input = req.input;
        self.catalog.require_bucket(&input.bucket).await?;
        let cors = CorsConfig { rules: input.cors_configuration.cors_rules.into_iter().map(rule_of).collect() };
        if let Err(e) = cors.validate() {
            return Err(match e.s3_code() {
                "MalformedXML" => GatewayError::MalformedXml(format!(
                    "The XML you provided was not well-formed or did not validate against our published schema: {e}"
                )),
                _ => GatewayError::InvalidRequest(e.to_string()),
            }
            .into());
        }
        self.catalog.set_bucket_cors(&input.bucket, Some(cors)).await?;
        Ok(PutBucketCorsOutput::default())
    }

    pub(super) async fn do_get_bucket_cors(&self, input: GetBucketCorsInput) -> Result<GetBucketCorsOutput, S3Error> {
        let cors = self.catalog.bucket_cors(&input.bucket).await?.ok_or(GatewayError::NoSuchCorsConfiguration)?;
        Ok(GetBucketCorsOutput { cors_rules: Some(cors.rules.into_iter().map(dto_of).collect()) })
    }

    pub(super) async fn do_delete_bucket_cors(
        &self,
        input: DeleteBucketCorsInput,
    ) -> Result<DeleteBucketCorsOutput, S3Error> {
        // S3 answers 204 whether or not the bucket had a configuration.
        if self.catalog.bucket_cors(&input.bucket).await?.is_some() {
            self.catalog.set_bucket_cors(&input.bucket, None).await?;
        }
        Ok(DeleteBucketCorsOutput::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_between_s3s_and_the_catalog() {
        let dto = CORSRule {
            id: Some("web".into()),
            allowed_origins: vec!["https://*.chat.example".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_headers: Some(vec!["*".into()]),
            expose_headers: None,
            max_age_seconds: Some(600),
        };
        let stored = rule_of(dto.clone());
        assert_eq!(stored.allowed_headers, ["*"]);
        assert!(stored.expose_headers.is_empty());
        let back = dto_of(stored);
        assert_eq!(format!("{back:?}"), format!("{dto:?}"));
    }
}
