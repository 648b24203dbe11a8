//! Calls of the key admin service: master rotations run to their end.

use pii_vault::pb;

use super::KeyAdminClient;

/// Runs a master rotation to the end and returns its last progress message.
pub async fn rotate_master(keys: &mut KeyAdminClient, retire: bool) -> pb::RotationProgress {
    rotation_done(start_rotation(keys, retire).await).await
}

/// Starts a master rotation and returns its progress stream.
pub async fn start_rotation(
    keys: &mut KeyAdminClient,
    retire: bool,
) -> tonic::Streaming<pb::RotationProgress> {
    keys.rotate_master_key(pb::RotateMasterKeyRequest {
        retire_previous: retire,
    })
    .await
    .unwrap()
    .into_inner()
}

/// Reads a rotation's progress to its end: every message counts within its
/// total, and the last one must say it is done.
pub async fn rotation_done(
    mut stream: tonic::Streaming<pb::RotationProgress>,
) -> pb::RotationProgress {
    let mut last = None;
    while let Some(progress) = stream.message().await.unwrap() {
        assert!(progress.rewrapped <= progress.total, "{progress:?}");
        last = Some(progress);
    }
    let last = last.expect("the rotation reported progress");
    assert!(last.done, "{last:?}");
    last
}
