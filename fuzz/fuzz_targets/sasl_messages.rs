//! The SASL parsers that read bytes from unauthenticated peers or from the broker's own
//! configuration (`strata_sasl`): the PLAIN message, SCRAM client-first and client-final (and
//! the client's view of server-first and server-final), JAAS lines, the OAUTHBEARER message,
//! JSON Web Key Sets and JWTs (both validators).
//!
//! The first byte picks the parser, the rest is its input. A SCRAM server is also driven
//! through a whole exchange: the input's first half as client-first (with a known
//! credential), the second half as client-final.
//!
//! Checks: nothing panics; a PLAIN message that parses has a non-empty user and password and
//! no NUL in them; a JAAS line that parses has a non-empty module name; a SCRAM exchange
//! driven by random bytes never authenticates; an OAUTHBEARER message that parses has a
//! non-empty token.
#![no_main]

#[global_allocator]
static ALLOCATOR: strata_protocol::alloc::ReservingAllocator =
    strata_protocol::alloc::ReservingAllocator;

use libfuzzer_sys::fuzz_target;
use strata_sasl::scram::{
    parse_client_final, parse_client_first, ScramClient, ScramCredential, ScramMechanism,
    ScramServer, ServerStep,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let mechanism = if selector & 0x80 == 0 {
        ScramMechanism::Sha256
    } else {
        ScramMechanism::Sha512
    };
    match selector % 8 {
        0 => {
            if let Ok(m) = strata_sasl::plain::parse(input) {
                assert!(!m.user.is_empty() && !m.password.is_empty());
                assert!(!m.user.contains('\0') && !m.password.contains('\0'));
            }
        }
        1 => {
            let _ = parse_client_first(mechanism, input);
        }
        2 => {
            let _ = parse_client_final(mechanism, input);
        }
        3 => {
            if let Ok(text) = std::str::from_utf8(input) {
                if let Ok(entry) = strata_sasl::jaas::parse(text) {
                    assert!(!entry.login_module.is_empty());
                }
            }
        }
        4 => {
            // The client reading a server's messages (the Rust client's side).
            let (first, last) = input.split_at(input.len() / 2);
            let mut client = ScramClient::with_nonce(mechanism, "user", "pencil", "abc");
            if client.final_message(first).is_ok() {
                let _ = client.verify_server_final(last);
            }
        }
        6 => {
            if let Ok(m) = strata_sasl::oauthbearer::parse(input) {
                assert!(!m.token.is_empty());
            }
        }
        7 => {
            // A key set from the first half, a token from the second, both validators.
            use strata_sasl::oauthbearer::{Jwks, SignedRules, UnsecuredRules, Validator};
            let (first, last) = input.split_at(input.len() / 2);
            let keys = Jwks::parse(first).ok();
            if let Ok(token) = std::str::from_utf8(last) {
                let now = 1_800_000_000_000;
                let _ = Validator::Unsecured(UnsecuredRules::default()).validate(token, None, now);
                let _ =
                    Validator::Signed(SignedRules::default()).validate(token, keys.as_ref(), now);
                let _ = strata_sasl::oauthbearer::key_id(token);
            }
        }
        _ => {
            let (first, last) = input.split_at(input.len() / 2);
            let mut server = ScramServer::new(mechanism);
            // The server computes no PBKDF2 (only HMACs), so executions stay fast; a proof
            // needs the ClientKey, which random bytes cannot forge: nothing may authenticate.
            let credential = ScramCredential::from_salted_password(mechanism, b"k", b"s", 4096);
            if let Ok(ServerStep::Continue(_)) = server.step(first, |_| Some(credential)) {
                assert!(!matches!(
                    server.step(last, |_| None),
                    Ok(ServerStep::Done { .. })
                ));
            }
        }
    }
});
