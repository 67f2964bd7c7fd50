//! Randomness in the core: the core has no random source. Key material comes from the driver
//! through [`KeySource`] (the operating system's random source in `ringkvd`; a seeded one in a
//! simulation).

/// Where the core gets new key material.
pub trait KeySource {
    /// A new token-signing key pair: `(PKCS#8 document, public key)`.
    ///
    /// # Errors
    /// A description when the source fails.
    fn signing_key(&mut self) -> Result<(Vec<u8>, Vec<u8>), String>;
}
