//! A certificate authority made on the spot, with the certificates it signs written as PEM
//! files into a folder, for the tests of TLS (feature `testing`).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl TestCa {
    /// A new CA whose files go into `dir`; its own certificate is `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key"))
            .expect("a self-signed CA");
        std::fs::write(dir.join("ca.pem"), issuer.pem()).expect("writing ca.pem");
        Self {
            issuer,
            dir: dir.to_path_buf(),
        }
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `name` (a host name for a server, any name for a client), signed by
    /// this CA: the paths of `file.pem` and `file.key`.
    pub fn issue(&self, name: &str, file: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("a key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("leaf params")
            .signed_by(&key, &self.issuer)
            .expect("signing");
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("writing the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("writing the key");
        (cert_path, key_path)
    }
}
