//! Property tests over input an attacker or a careless operator controls: identity strings
//! and CSRs. Whatever arrives is either accepted as exactly what it says or refused with
//! an error — never a panic, never a different identity.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use identity::{CaConfig, CertificateAuthority, SpiffeId};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_string_parses_or_is_refused_without_panicking(input in ".{0,200}") {
        if let Ok(id) = input.parse::<SpiffeId>() {
            // Anything accepted prints back exactly as given.
            prop_assert_eq!(id.to_string(), input);
        }
    }

    #[test]
    fn valid_identities_round_trip(
        domain in "[a-z0-9][a-z0-9.-]{0,30}",
        ns in "[a-z0-9][a-z0-9-]{0,30}",
        sa in "[a-z0-9][a-z0-9-]{0,30}",
    ) {
        let text = format!("spiffe://{domain}/ns/{ns}/sa/{sa}");
        let id: SpiffeId = text.parse().unwrap();
        prop_assert_eq!(id.trust_domain(), domain.as_str());
        prop_assert_eq!(id.namespace(), ns.as_str());
        prop_assert_eq!(id.service_account(), sa.as_str());
        prop_assert_eq!(id.to_string(), text);
    }

    #[test]
    fn garbage_csrs_are_refused_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let ca = ca();
        let who = SpiffeId::new("cluster.local", "a", "b").unwrap();
        // Raw bytes, and the same bytes dressed up as a PEM CSR.
        let raw = String::from_utf8_lossy(&body).into_owned();
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", body));
        prop_assert!(ca.sign_csr(&raw, &who, None).is_err());
        prop_assert!(ca.sign_csr(&pem, &who, None).is_err());
    }
}

fn ca() -> &'static CertificateAuthority {
    static CA: std::sync::OnceLock<CertificateAuthority> = std::sync::OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap())
}
