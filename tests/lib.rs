//! Test support shared by the end-to-end suite (in `e2e/`) and other crates' tests.
#![allow(clippy::unwrap_used)]

/// A certificate authority made for a test with rcgen, and the PEM (certificate, key) pairs it
/// signs.
pub mod pki {
    use std::path::{Path, PathBuf};

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    pub struct Pki {
        pub ca_pem: String,
        ca: CertifiedIssuer<'static, KeyPair>,
    }

    impl Pki {
        pub fn new(name: &str) -> Pki {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Pki {
                ca_pem: ca.pem(),
                ca,
            }
        }

        /// A (certificate, key) pair for `name`, signed by this CA.
        pub fn issue(&self, name: &str) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &self.ca)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    /// Writes `pem` to `dir/name` and returns the path.
    pub fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    }
}
