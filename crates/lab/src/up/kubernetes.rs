//! DRAFT (session 12, not yet declared in `up.rs`, not compiled): `bowline up
//! --kubernetes`'s own Kubernetes control plane — the PKI it needs and how its three
//! processes are started. Next session: declare `mod kubernetes;`, add kube 5 +
//! k8s-openapi 0.29 (`v1_35`), wire into `build::up`, test.
//! Review: `write` repeats `identity::private_file` (call that instead), and the serving
//! certificate's SAN loop repeats `CertificateAuthority::issue_server_certificate`.
//!
//! A real control plane from `bowline-kube` (kube/, `scripts/kube-build.sh`), in the lab's
//! router namespace: etcd on the router's 127.0.0.1:2379, kube-apiserver on 0.0.0.0:6443
//! (advertised as 10.255.0.1, so the `kubernetes` Service of `default` has a real endpoint
//! pods and the control plane reach), kube-controller-manager beside them. The host reaches
//! the API server through a loopback forwarder (as `--publish` does); `bowline kubeconfig`
//! prints the admin kubeconfig that points at it.
//!
//! Everything is generated at start into `<state>/kubernetes/` (0700): a cluster CA that
//! signs the serving certificate and the client certificates (admin: `system:masters`;
//! controller-manager: `system:kube-controller-manager`; the lab's kubelet:
//! `system:node:<node>` in `system:nodes`), and the service-account signing key pair.
//!
//! Owns: the files and the command lines. Must not: decide anything about pods — the lab's
//! kubelet does.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::{CONTROL_PLANE_IP, LabError};

/// The API server's port inside the router namespace.
pub const API_PORT: u16 = 6443;
/// etcd's client port on the router's loopback.
const ETCD_CLIENT: &str = "http://127.0.0.1:2379";
/// etcd's peer port on the router's loopback (one member).
const ETCD_PEER: &str = "http://127.0.0.1:2380";
/// The Service range; its first address is the `kubernetes` Service.
pub const SERVICE_RANGE: &str = "10.96.0.0/16";
/// The names and addresses the serving certificate holds.
const API_NAMES: &[&str] = &[
    "127.0.0.1",
    CONTROL_PLANE_IP,
    "10.96.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

fn pki_error(e: rcgen::Error) -> LabError {
    LabError::Invalid(format!("kubernetes: cannot generate certificates: {e}"))
}

/// The files of a lab's Kubernetes control plane.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// The files under `<state>/kubernetes`.
    pub fn new(state: &Path) -> Self {
        Self {
            dir: state.join("kubernetes"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The admin kubeconfig (the host's view: `server` is the host forwarder).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.path("admin.kubeconfig")
    }

    /// Generates the CA, the serving and client certificates, the service-account key
    /// pair and the kubeconfigs; `host_port` is where the host reaches the API server.
    pub fn generate(&self, host_port: u16, nodes: &[String]) -> Result<(), LabError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)?;
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(pki_error)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("bowline-lab-kubernetes-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key).map_err(pki_error)?.pem();
        // The controller-manager signs CSRs with it (`--cluster-signing-key-file`).
        write(&self.path("ca.key"), &ca_key.serialize_pem(), 0o600)?;
        let issuer = Issuer::new(ca, ca_key);
        write(&self.path("ca.crt"), &ca_pem, 0o644)?;

        let mut serving = CertificateParams::default();
        serving.distinguished_name = name("kube-apiserver", None);
        for n in API_NAMES {
            serving.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().map_err(pki_error)?),
            });
        }
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf("apiserver", serving, &issuer)?;

        let mut clients = vec![
            (
                "admin".to_owned(),
                "bowline-admin".to_owned(),
                Some("system:masters"),
            ),
            (
                "controller-manager".to_owned(),
                "system:kube-controller-manager".to_owned(),
                None,
            ),
        ];
        for node in nodes {
            clients.push((
                format!("node-{node}"),
                format!("system:node:{node}"),
                Some("system:nodes"),
            ));
        }
        for (file, common, group) in &clients {
            let mut params = CertificateParams::default();
            params.distinguished_name = name(common, *group);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            self.leaf(file, params, &issuer)?;
        }

        let sa = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(pki_error)?;
        write(&self.path("sa.key"), &sa.serialize_pem(), 0o600)?;
        write(&self.path("sa.pub"), &sa.public_key_pem(), 0o644)?;

        let host = format!("https://127.0.0.1:{host_port}");
        let inside = format!("https://127.0.0.1:{API_PORT}");
        write(
            &self.admin_kubeconfig(),
            &self.kubeconfig(&host, "admin")?,
            0o600,
        )?;
        write(
            &self.path("admin-router.kubeconfig"),
            &self.kubeconfig(&inside, "admin")?,
            0o600,
        )?;
        write(
            &self.path("controller-manager.kubeconfig"),
            &self.kubeconfig(&inside, "controller-manager")?,
            0o600,
        )?;
        Ok(())
    }

    /// Signs `params` with a fresh key; writes `<file>.crt` and `<file>.key`.
    fn leaf(
        &self,
        file: &str,
        mut params: CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
    ) -> Result<(), LabError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(pki_error)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, issuer).map_err(pki_error)?;
        write(&self.path(&format!("{file}.crt")), &cert.pem(), 0o644)?;
        write(
            &self.path(&format!("{file}.key")),
            &key.serialize_pem(),
            0o600,
        )
    }

    /// A kubeconfig for `server` with the client certificate `<user>.crt`, files by path.
    fn kubeconfig(&self, server: &str, user: &str) -> Result<String, LabError> {
        let ca = self.path("ca.crt");
        let crt = self.path(&format!("{user}.crt"));
        let key = self.path(&format!("{user}.key"));
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bowline-lab\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: bowline-lab\n  context:\n    cluster: bowline-lab\n    user: {user}\ncurrent-context: bowline-lab\n",
            ca.display(),
            crt.display(),
            key.display()
        ))
    }

    /// `bowline-kube etcd …` (router namespace).
    pub fn etcd_args(&self) -> Vec<String> {
        vec![
            "etcd".into(),
            format!("--data-dir={}", self.path("etcd").display()),
            format!("--listen-client-url={ETCD_CLIENT}"),
            format!("--listen-peer-url={ETCD_PEER}"),
        ]
    }

    /// `bowline-kube kube-apiserver …` (router namespace).
    pub fn apiserver_args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "kube-apiserver".into(),
            format!("--etcd-servers={ETCD_CLIENT}"),
            "--bind-address=0.0.0.0".into(),
            format!("--secure-port={API_PORT}"),
            format!("--advertise-address={CONTROL_PLANE_IP}"),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_RANGE}"),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--anonymous-auth=false".into(),
        ]
    }

    /// `bowline-kube kube-controller-manager …` (router namespace).
    pub fn controller_manager_args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "kube-controller-manager".into(),
            format!("--kubeconfig={}", p("controller-manager.kubeconfig")),
            "--leader-elect=false".into(),
            "--controllers=*".into(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            "--use-service-account-credentials=true".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            format!("--cluster-signing-cert-file={}", p("ca.crt")),
            format!("--cluster-signing-key-file={}", p("ca.key")),
        ]
    }
}

fn name(common: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
