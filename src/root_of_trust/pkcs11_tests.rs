//! Against SoftHSM2, a token per test (`.ci/root-of-trust-tools` installs it):
//! `cargo test --lib root_of_trust::pkcs11 -- --include-ignored`.

use cryptoki::object::AttributeType;
use pii_vault_testkit::softhsm::SoftHsm;

use super::*;
use crate::root_of_trust::conformance::{
    self, context, sealed_version, DestroyedOpens, Destroys, Expect, SwappedHandle,
};

const EXPECT: Expect = Expect {
    destroys: Destroys::Done,
    destroyed_opens: DestroyedOpens::Never,
    swapped_handle: SwappedHandle::NotOpened,
};

fn config(hsm: &SoftHsm) -> Pkcs11Config {
    Pkcs11Config {
        module: hsm.module(),
        token_label: hsm.token_label().to_string(),
        pin_file: hsm.pin_file().to_path_buf(),
        pin_access: crate::crypto::KeyFileAccess::OwnerOnly,
    }
}

async fn connect(hsm: &SoftHsm) -> Pkcs11Root {
    Pkcs11Root::connect(config(hsm)).await.expect("connect")
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn each_version_opens_with_its_own_key() {
    let hsm = SoftHsm::new();
    let root = connect(&hsm).await;
    let [(handle_1, sealed_1), _] = conformance::two_versions_seal_and_open(&root, EXPECT).await;
    assert_eq!(handle_1.0.len(), ID_LEN);
    assert_eq!(sealed_1.len(), IV_LEN + 64 + TAG_LEN);
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn a_sealed_version_does_not_open_under_another_context_or_key() {
    let hsm = SoftHsm::new();
    let root = connect(&hsm).await;
    let foreign = KeyHandle(b"root-key-file".to_vec());
    let (handle_1, sealed_1) =
        conformance::a_sealed_version_opens_only_under_its_own_context(&root, &foreign).await;
    let mut altered = sealed_1.clone();
    altered[IV_LEN] ^= 1;
    conformance::assert_not_opened(&root, &handle_1, &context(1), &altered).await;
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn a_destroyed_version_no_longer_opens_and_the_others_still_do() {
    let hsm = SoftHsm::new();
    conformance::a_destroyed_version_no_longer_opens_and_the_others_still_do(
        &connect(&hsm).await,
        EXPECT,
    )
    .await;
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn destroying_a_version_twice_succeeds() {
    let hsm = SoftHsm::new();
    conformance::destroying_a_version_twice_succeeds(&connect(&hsm).await, EXPECT).await;
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn the_key_object_is_sensitive_and_not_extractable() {
    let hsm = SoftHsm::new();
    let root = connect(&hsm).await;
    let handle = root.create_key(&context(1)).await.expect("create");
    let attributes = root
        .run(move |session| {
            let key = find_key(session, &handle, &context(1))?;
            session
                .get_attributes(
                    key,
                    &[
                        AttributeType::Value,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Label,
                    ],
                )
                .map_err(|e| failure("reading attributes", e, None))
        })
        .await
        .expect("attributes");
    assert!(
        !attributes
            .iter()
            .any(|attribute| matches!(attribute, Attribute::Value(_))),
        "the key's value was readable"
    );
    for expected in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(context(1).label().into_bytes()),
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected:?} in {attributes:?}"
        );
    }
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn a_wrong_pin_is_refused() {
    let hsm = SoftHsm::new();
    let mut config = config(&hsm);
    config.pin_file = hsm.write_pin_file("wrong", "not-the-pin");
    let refused = Pkcs11Root::connect(config).await;
    match refused {
        Err(RootError::Refused { reason, .. }) => {
            assert!(reason.contains("logging in"), "{reason}");
            assert!(!reason.contains("not-the-pin"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn an_unknown_token_label_is_refused_by_name() {
    let hsm = SoftHsm::new();
    let mut config = config(&hsm);
    config.token_label = "no-such-token".to_string();
    let refused = Pkcs11Root::connect(config).await;
    match refused {
        Err(RootError::Refused { reason, .. }) => {
            assert!(reason.contains("\"no-such-token\""), "{reason}");
            assert!(reason.contains(hsm.token_label()), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn a_key_created_before_a_restart_opens_after_it() {
    let hsm = SoftHsm::new();
    let (handle, sealed) = {
        let root = connect(&hsm).await;
        sealed_version(&root, 1).await
    };
    let restarted = connect(&hsm).await;
    conformance::assert_opens(&restarted, &handle, 1, &sealed).await;
}
