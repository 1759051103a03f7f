//! Test certificates made with `openssl`: a CA, an intermediate it signed and leaves the
//! intermediate signed, in a scratch directory removed on drop. Shared by the TLS tests.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A scratch directory with a CA, an intermediate and leaf certificates it signed.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes the CA and intermediate, and a leaf whose subject CN is `first`.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("wsrelay-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the scratch dir");
        let pki = Pki { dir };
        std::fs::write(
            pki.path("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .expect("write ca.ext");
        std::fs::write(
            pki.path("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write leaf.ext");
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=wsrelay test CA",
        ]);
        pki.sign("inter", "/CN=wsrelay test intermediate", "ca", "ca.ext");
        pki.leaf("first");
        pki
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl (test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `NAME.key` and `NAME.pem` for `subject`, signed by `issuer`.
    pub fn sign(&self, name: &str, subject: &str, issuer: &str, ext: &str) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        let (ca, ca_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    }

    /// A leaf with CN `cn` in `cn.chain.pem` (leaf, then intermediate) and `cn.key`.
    pub fn leaf(&self, cn: &str) {
        self.sign(cn, &format!("/CN={cn}"), "inter", "leaf.ext");
        let leaf = std::fs::read(self.path(&format!("{cn}.pem"))).expect("read leaf");
        let inter = std::fs::read(self.path("inter.pem")).expect("read intermediate");
        std::fs::write(
            self.path(&format!("{cn}.chain.pem")),
            [leaf, inter].concat(),
        )
        .expect("write chain");
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
