//! The `Upstash-Signature` JWT (spec §8): compact JWS, HS256 keyed with the UTF-8 bytes of the
//! user's current signing key, claims `iss`, `sub`, `iat`, `exp`, `nbf`, `jti` and `body`.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a signature stays valid.
pub const SIGNATURE_LIFETIME_SECS: i64 = 300;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub nbf: i64,
    pub jti: String,
    pub body: String,
}

/// base64url (with `=` padding) of SHA-256 over the exact body bytes.
pub fn body_hash(body: &[u8]) -> String {
    URL_SAFE.encode(Sha256::digest(body))
}

/// Signs one delivery attempt. `nbf` is 0 unless `nbf_is_iat` (the docs' older example).
pub fn sign(key: &str, url: &str, body: &[u8], now_secs: i64, jti: String, nbf_is_iat: bool) -> String {
    let claims = Claims {
        iss: "Upstash".to_string(),
        sub: url.to_string(),
        iat: now_secs,
        exp: now_secs + SIGNATURE_LIFETIME_SECS,
        nbf: if nbf_is_iat { now_secs } else { 0 },
        jti,
        body: body_hash(body),
    };
    let claims = serde_json::to_vec(&claims).expect("claims serialise");
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(claims));
    let signature = mac(key, signing_input.as_bytes()).finalize().into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn mac(key: &str, input: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key");
    mac.update(input);
    mac
}

/// Why a signature was refused by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("signature mismatch")]
    Signature,
    #[error("claim {0} does not match")]
    Claim(&'static str),
    #[error("token expired or not yet valid")]
    Time,
}

/// Verifies a token the way the SDK receivers do: signature, issuer, time window, optional
/// subject, then the body hash (ignoring `=` padding). Used by tests and tools, not by the
/// delivery path.
pub fn verify(token: &str, key: &str, body: &[u8], url: Option<&str>, now_secs: i64) -> Result<Claims, VerifyError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| VerifyError::Malformed)?;
    mac(key, format!("{header}.{payload}").as_bytes()).verify_slice(&signature).map_err(|_| VerifyError::Signature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or(VerifyError::Malformed)?;
    if claims.iss != "Upstash" {
        return Err(VerifyError::Claim("iss"));
    }
    if now_secs > claims.exp || now_secs < claims.nbf {
        return Err(VerifyError::Time);
    }
    if url.is_some_and(|url| url != claims.sub) {
        return Err(VerifyError::Claim("sub"));
    }
    if claims.body.trim_end_matches('=') != body_hash(body).trim_end_matches('=') {
        return Err(VerifyError::Claim("body"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r";

    #[test]
    fn signed_tokens_verify_and_carry_the_documented_claims() {
        let token = sign(KEY, "http://127.0.0.1:9/a?b=1", b"hello", 1_700_000_000, "jwt_x".into(), false);
        let claims = verify(&token, KEY, b"hello", Some("http://127.0.0.1:9/a?b=1"), 1_700_000_100).unwrap();
        assert_eq!(claims.iss, "Upstash");
        assert_eq!(claims.exp, 1_700_000_300);
        assert_eq!(claims.nbf, 0);
        assert!(claims.body.ends_with('='));
        let header = token.split('.').next().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(header).unwrap(), HEADER.as_bytes());
    }

    #[test]
    fn body_hash_is_padded_url_safe_sha256() {
        // SHA-256("") in base64url with padding.
        assert_eq!(body_hash(b""), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn tampering_is_detected() {
        let token = sign(KEY, "http://x/", b"body", 1_700_000_000, "jwt_y".into(), true);
        assert_eq!(verify(&token, "sig_other", b"body", None, 1_700_000_000), Err(VerifyError::Signature));
        assert_eq!(verify(&token, KEY, b"other", None, 1_700_000_000), Err(VerifyError::Claim("body")));
        assert_eq!(verify(&token, KEY, b"body", Some("http://y/"), 1_700_000_000), Err(VerifyError::Claim("sub")));
        assert_eq!(verify(&token, KEY, b"body", None, 1_700_000_301), Err(VerifyError::Time));
        assert_eq!(verify(&token, KEY, b"body", None, 1_699_999_999), Err(VerifyError::Time));
    }
}
