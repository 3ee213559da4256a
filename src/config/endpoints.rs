//! Endpoints and identifiers: DLI and IAM endpoints derived from a region, the accepted shapes
//! of project ids, regions and endpoint URLs (docs/dli-api.md, "Endpoints").

/// Project ids: 1 to 64 ASCII letters and digits (docs/dli-api.md, "Endpoints").
pub fn is_valid_project_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(super) fn is_valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The DLI endpoint of a region (docs/dli-api.md, "Endpoints": `eu-west-101` is the one `.eu`
/// exception).
pub fn dli_endpoint_for(region: &str) -> String {
    format!("https://dli.{region}.{}", domain_for(region))
}

/// The default IAM endpoint of a region.
pub fn iam_endpoint_for(region: &str) -> String {
    format!("https://iam.{region}.{}", domain_for(region))
}

fn domain_for(region: &str) -> &'static str {
    if region == "eu-west-101" {
        "myhuaweicloud.eu"
    } else {
        "myhuaweicloud.com"
    }
}

/// Accepts `http(s)://host[:port]` with an optional trailing `/`; returns it without the slash.
pub(super) fn normalize_endpoint(raw: &str) -> Result<String, &'static str> {
    let url = reqwest::Url::parse(raw)
        .map_err(|_| "is not a URL such as \"https://dli.cn-north-4.myhuaweicloud.com\"")?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("must use https:// (or http:// for simulators and local proxies)");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment");
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err("must not have a path (the API path is added by the client)");
    }
    Ok(raw.trim_end_matches('/').to_string())
}
