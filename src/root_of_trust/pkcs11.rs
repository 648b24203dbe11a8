//! A PKCS#11 token (an HSM; SoftHSM2 in tests) as a root of trust: each
//! master version is sealed with AES-256-GCM by a secret key object of its
//! own, generated in the token as sensitive and not extractable. Retiring the
//! version destroys the object, so no copy of the keyring opens it again.
//!
//! The object is named by its CKA_ID (16 random bytes), never by its object
//! handle: handles are numbers of one session and one process.
//!
//! PKCS#11 calls block, so each runs on tokio's blocking pool, in a session
//! of its own; the module is loaded and initialized once per process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{Destruction, KeyHandle, RootError, RootKind, RootOfTrust, SealContext};
use crate::crypto::{read_private_file, KeyFileAccess};

const KIND: &str = "pkcs11";
/// Bytes of a key object's CKA_ID.
const ID_LEN: usize = 16;
/// A 96-bit GCM IV, fresh for every seal.
const IV_LEN: usize = 12;
/// A 128-bit GCM tag, appended by the token to the ciphertext.
const TAG_BITS: u64 = 128;
const TAG_LEN: usize = 16;

/// Where the token is and how to log in to it. The PIN stays in its file
/// until `connect` reads it.
#[derive(Clone, Debug)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (a shared library) to load.
    pub module: PathBuf,
    /// The label of the token that holds the key objects.
    pub token_label: String,
    /// A file holding the user PIN (trailing newline ignored), readable by
    /// its owner only (and its group, with `pin_access` saying so).
    pub pin_file: PathBuf,
    pub pin_access: KeyFileAccess,
}

pub struct Pkcs11Root {
    token: Arc<Token>,
}

/// What every operation needs, shared with the blocking pool.
struct Token {
    context: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    module: PathBuf,
    label: String,
}

impl std::fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Root")
            .field("module", &self.token.module)
            .field("token_label", &self.token.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Root {
    /// Loads and initializes the module (once per process), finds the token
    /// labelled `config.token_label` and checks the PIN by logging in.
    pub async fn connect(config: Pkcs11Config) -> Result<Pkcs11Root, RootError> {
        let pin = read_pin(&config.pin_file, config.pin_access)?;
        let token = tokio::task::spawn_blocking(move || {
            let context = shared_context(&config.module)?;
            let slot = find_token(&context, &config.token_label)?;
            let token = Token {
                context,
                slot,
                pin,
                module: config.module,
                label: config.token_label,
            };
            token.session()?;
            Ok::<_, RootError>(token)
        })
        .await
        .map_err(blocking_failed)??;
        Ok(Pkcs11Root {
            token: Arc::new(token),
        })
    }

    /// Runs `operation` on the blocking pool, in a logged-in session of its own.
    async fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Session) -> Result<T, RootError> + Send + 'static,
    ) -> Result<T, RootError> {
        let token = Arc::clone(&self.token);
        tokio::task::spawn_blocking(move || {
            let session = token.session()?;
            operation(&session)
        })
        .await
        .map_err(blocking_failed)?
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> RootError {
    RootError::Unreachable {
        kind: KIND,
        reason: format!("the PKCS#11 call did not finish: {e}"),
    }
}

/// The user PIN from its file, without its trailing newline.
fn read_pin(path: &Path, access: KeyFileAccess) -> Result<AuthPin, RootError> {
    let contents = read_private_file(path, access).map_err(|e| RootError::Refused {
        kind: KIND,
        reason: format!("the PIN file: {e}"),
    })?;
    let text = std::str::from_utf8(&contents).map_err(|_| RootError::Refused {
        kind: KIND,
        reason: format!("the PIN file {} is not UTF-8", path.display()),
    })?;
    let pin = text.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(RootError::Refused {
            kind: KIND,
            reason: format!("the PIN file {} is empty", path.display()),
        });
    }
    Ok(AuthPin::from(pin))
}

/// The one context of a module in this process. A module is initialized
/// once per process (a second C_Initialize fails, and C_Finalize would end
/// every other user's sessions), so contexts are kept for the process's life.
fn shared_context(module: &Path) -> Result<Pkcs11, RootError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(module).map_err(|e| RootError::Refused {
        kind: KIND,
        reason: format!("cannot load the module {}: {e}", module.display()),
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failure("initializing the module", e, None)),
    }
    contexts.insert(module.to_path_buf(), context.clone());
    Ok(context)
}

/// The slot whose token is labelled `label`.
fn find_token(context: &Pkcs11, label: &str) -> Result<Slot, RootError> {
    let slots = context
        .get_slots_with_initialized_token()
        .map_err(|e| failure("listing the slots", e, None))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|e| failure("reading a token's information", e, None))?;
        // Labels are blank-padded to 32 bytes in the token information.
        let token_label = info.label().trim_end().to_string();
        if token_label == label {
            return Ok(slot);
        }
        found.push(token_label);
    }
    Err(RootError::Refused {
        kind: KIND,
        reason: format!("no token is labelled {label:?}; the tokens found are {found:?}"),
    })
}

impl Token {
    /// A read-write session logged in as the user. Login is per token and
    /// application: another session may already have logged in.
    fn session(&self) -> Result<Session, RootError> {
        let session = self
            .context
            .open_rw_session(self.slot)
            .map_err(|e| failure("opening a session", e, None))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(failure("logging in", e, None)),
        }
    }
}

/// The secret key objects whose CKA_ID is `handle`.
fn find_keys(session: &Session, handle: &KeyHandle) -> Result<Vec<ObjectHandle>, CkError> {
    session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Id(handle.0.clone()),
    ])
}

/// The one key object `handle` names, or NotOpened when it is gone.
fn find_key(
    session: &Session,
    handle: &KeyHandle,
    context: &SealContext,
) -> Result<ObjectHandle, RootError> {
    let keys =
        find_keys(session, handle).map_err(|e| failure("finding the key", e, Some(context)))?;
    match keys.as_slice() {
        [key] => Ok(*key),
        [] => Err(RootError::NotOpened {
            kind: KIND,
            version: context.master_version,
            reason: format!("no key object has the id {handle:?} (destroyed?)"),
        }),
        _ => Err(RootError::Refused {
            kind: KIND,
            reason: format!("{} key objects have the id {handle:?}", keys.len()),
        }),
    }
}

/// CKM_AES_GCM with `iv`, a 128-bit tag and `associated_data`.
fn aes_gcm<'a>(
    iv: &'a mut [u8],
    associated_data: &'a [u8],
    context: &SealContext,
) -> Result<Mechanism<'a>, RootError> {
    let params = GcmParams::new(iv, associated_data, TAG_BITS.into())
        .map_err(|e| failure("preparing AES-GCM", e, Some(context)))?;
    Ok(Mechanism::AesGcm(params))
}

#[async_trait::async_trait]
impl RootOfTrust for Pkcs11Root {
    fn kind(&self) -> RootKind {
        RootKind::Pkcs11
    }

    fn location(&self) -> String {
        format!(
            "{} token {:?}",
            self.token.module.display(),
            self.token.label
        )
    }

    async fn check(&self) -> Result<(), RootError> {
        self.run(|session| {
            session
                .get_session_info()
                .map_err(|e| failure("reading the session's information", e, None))?;
            Ok(())
        })
        .await
    }

    async fn create_key(&self, context: &SealContext) -> Result<KeyHandle, RootError> {
        let context = *context;
        self.run(move |session| {
            let mut id = [0u8; ID_LEN];
            rand::rng().fill_bytes(&mut id);
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(context.label().into_bytes()),
                Attribute::Id(id.to_vec()),
            ];
            session
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(|e| failure("generating a key", e, Some(&context)))?;
            Ok(KeyHandle(id.to_vec()))
        })
        .await
    }

    async fn seal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        secret: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        let (handle, context) = (handle.clone(), *context);
        let secret = Zeroizing::new(secret.to_vec());
        self.run(move |session| {
            let key = find_key(session, &handle, &context)?;
            let mut iv = [0u8; IV_LEN];
            rand::rng().fill_bytes(&mut iv);
            let associated_data = context.associated_data();
            // A copy: the module may write to the IV it is given.
            let mut params_iv = iv;
            let mechanism = aes_gcm(&mut params_iv, &associated_data, &context)?;
            let ciphertext = session
                .encrypt(&mechanism, key, &secret)
                .map_err(|e| failure("sealing", e, Some(&context)))?;
            let mut sealed = Vec::with_capacity(IV_LEN + ciphertext.len());
            sealed.extend_from_slice(&iv);
            sealed.extend_from_slice(&ciphertext);
            Ok(sealed)
        })
        .await
    }

    async fn unseal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RootError> {
        if sealed.len() < IV_LEN + TAG_LEN {
            return Err(RootError::NotOpened {
                kind: KIND,
                version: context.master_version,
                reason: format!("the sealed version is too short ({} bytes)", sealed.len()),
            });
        }
        let (handle, context, sealed) = (handle.clone(), *context, sealed.to_vec());
        self.run(move |session| {
            let key = find_key(session, &handle, &context)?;
            let (iv, ciphertext) = sealed.split_at(IV_LEN);
            let mut iv = iv.to_vec();
            let associated_data = context.associated_data();
            let mechanism = aes_gcm(&mut iv, &associated_data, &context)?;
            let opened = session
                .decrypt(&mechanism, key, ciphertext)
                .map_err(|e| decrypt_failure(e, &context))?;
            Ok(Zeroizing::new(opened))
        })
        .await
    }

    async fn destroy(&self, handle: &KeyHandle) -> Result<Destruction, RootError> {
        let handle = handle.clone();
        self.run(move |session| {
            let keys =
                find_keys(session, &handle).map_err(|e| failure("finding the key", e, None))?;
            for key in keys {
                match session.destroy_object(key) {
                    // Destroyed by someone else in between: gone all the same.
                    Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
                    Err(e) => return Err(failure("destroying the key", e, None)),
                }
            }
            Ok(Destruction::Done)
        })
        .await
    }
}

/// Why C_Decrypt failed with the key found (so the token and session
/// answer). A failed GCM tag check is CKR_ENCRYPTED_DATA_INVALID in the
/// standard, but modules differ: SoftHSM2 answers CKR_GENERAL_ERROR, others
/// CKR_DATA_INVALID or CKR_FUNCTION_FAILED. Those mean "does not open" here;
/// the device and session errors stay retryable.
fn decrypt_failure(error: CkError, context: &SealContext) -> RootError {
    match error {
        CkError::Pkcs11(
            RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::SignatureInvalid,
            _,
        ) => RootError::NotOpened {
            kind: KIND,
            version: context.master_version,
            reason: format!(
                "unsealing: {error} (the token reports a failed authentication this way: \
                 another key or context, or altered bytes)"
            ),
        },
        error => failure("unsealing", error, Some(context)),
    }
}

/// What a PKCS#11 error means to the vault: retry later (the device or the
/// session failed), fix the settings (PIN, token, mechanism), or the sealed
/// version does not open under this key (with `context`; without one such
/// errors are refusals).
fn failure(doing: &str, error: CkError, context: Option<&SealContext>) -> RootError {
    let reason = format!("{doing}: {error}");
    let rv = match &error {
        CkError::Pkcs11(rv, _) => *rv,
        CkError::LibraryLoading(_) | CkError::NullFunctionPointer | CkError::MissingSymbol(_) => {
            return RootError::Refused { kind: KIND, reason };
        }
        _ => return RootError::Unreachable { kind: KIND, reason },
    };
    match rv {
        RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::KeyHandleInvalid
        | RvError::ObjectHandleInvalid => match context {
            Some(context) => RootError::NotOpened {
                kind: KIND,
                version: context.master_version,
                reason,
            },
            None => RootError::Refused { kind: KIND, reason },
        },
        RvError::PinIncorrect
        | RvError::PinInvalid
        | RvError::PinLenRange
        | RvError::PinExpired
        | RvError::PinLocked
        | RvError::UserPinNotInitialized
        | RvError::UserTypeInvalid
        | RvError::UserAnotherAlreadyLoggedIn
        | RvError::SlotIdInvalid
        | RvError::TokenNotRecognized
        | RvError::TokenWriteProtected
        | RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::FunctionNotSupported
        | RvError::KeyTypeInconsistent
        | RvError::KeyFunctionNotPermitted
        | RvError::KeySizeRange
        | RvError::TemplateIncomplete
        | RvError::TemplateInconsistent
        | RvError::AttributeValueInvalid
        | RvError::AttributeTypeInvalid
        | RvError::ActionProhibited => RootError::Refused { kind: KIND, reason },
        // The device, the token's presence, a session, memory, a lock.
        _ => RootError::Unreachable { kind: KIND, reason },
    }
}

#[cfg(test)]
#[path = "pkcs11_tests.rs"]
mod tests;
