//! Encryption of secrets kept at rest (identity provider client secrets): XChaCha20-Poly1305 with
//! a random nonce per value, stored as nonce || ciphertext.

use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit},
};
use sha2::{Digest, Sha256};

use super::tokens::random_bytes;

const NONCE_LEN: usize = 24;

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// Any key material; it is hashed to the 32-byte key.
    pub fn new(key_material: &[u8]) -> Self {
        let key = Sha256::digest(key_material);
        Self { cipher: XChaCha20Poly1305::new(&key) }
    }

    pub fn seal(&self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let ciphertext =
            self.cipher.encrypt(nonce, plaintext).map_err(|_| anyhow::anyhow!("encrypting a secret failed"))?;
        Ok([nonce_bytes.as_slice(), &ciphertext].concat())
    }

    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            anyhow::bail!("sealed secret is too short");
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| anyhow::anyhow!("decrypting a secret failed (wrong EDGEFLOW_ENCRYPTION_KEY?)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_detects_tampering() {
        let secret_box = SecretBox::new(b"key");
        let mut sealed = secret_box.seal(b"client secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"client"));
        assert_eq!(secret_box.open(&sealed).unwrap(), b"client secret");
        assert!(SecretBox::new(b"other key").open(&sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(secret_box.open(&sealed).is_err());
    }
}
