//! A portal link as a browser brings it back: anything in the token, and
//! tokens signed over any payload (as a leaked key would allow), and a
//! stored session value in any shape. Verification never panics, refuses
//! what was not signed with the key, and what it accepts has not expired
//! and matches the session stored for it.
#![no_main]

use arbitrary::Arbitrary;
use herald::admin::portal_sessions::{sign, verify, Claims, Stored, TokenError};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"portal-fuzz-key-0123456789abcdef";
const NOW: i64 = 1_767_225_600;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    token: &'a str,
    payload: &'a [u8],
    stored: &'a str,
}

fn signed_over(payload: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).expect("any key length");
    mac.update(payload.as_bytes());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn accepted(claims: &Claims) {
    assert!(claims.exp > NOW, "an expired link is refused");
    assert!(Stored::of(claims).matches(claims));
    let again = verify(KEY, &sign(KEY, claims), NOW).expect("re-signed claims verify");
    assert_eq!(&again, claims);
}

fuzz_target!(|input: Input<'_>| {
    match verify(KEY, input.token, NOW) {
        Ok(claims) => accepted(&claims),
        Err(TokenError::Malformed | TokenError::BadSignature | TokenError::Expired) => {}
    }
    if let Ok(claims) = verify(KEY, &signed_over(input.payload), NOW) {
        accepted(&claims);
    }
    if let Some(stored) = Stored::parse(input.stored) {
        let _ = Stored::parse(&stored.to_json()).expect("a stored session reads back");
    }
});
