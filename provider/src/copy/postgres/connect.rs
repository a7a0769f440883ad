//! Connecting to a PostgreSQL server as libpq would (a URL or its parts, `sslmode`),
//! with errors that say what to fix, and the server's identity: whether two connections
//! reach one database is the server's answer, never a comparison of connection strings.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// How the connection is encrypted, with libpq's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain TCP.
    Disable,
    /// Encrypted when the server offers it, the certificate not checked (libpq's default).
    Prefer,
    /// Encrypted, the certificate not checked.
    Require,
    /// Encrypted, the certificate checked against the system's roots (and `sslrootcert`)
    /// and the host name.
    VerifyFull,
}

impl Tls {
    pub fn parse(mode: &str) -> Result<Tls> {
        Ok(match mode {
            "disable" => Tls::Disable,
            "prefer" | "allow" => Tls::Prefer,
            "require" => Tls::Require,
            "verify-full" => Tls::VerifyFull,
            "verify-ca" => bail!(
                "sslmode verify-ca is not supported: use verify-full (which also checks the host name) or require"
            ),
            other => bail!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-full"
            ),
        })
    }
}

/// One side's server and database, ready to connect to.
#[derive(Clone)]
pub struct Endpoint {
    config: Config,
    tls: Tls,
    root_cert: Option<String>,
    /// `user@host:port/database`, for messages (no password).
    pub label: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.label)
    }
}

/// The parts of a connection, as given (any may be unset when a URL gives it).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

/// A URL without the query parameters this module handles itself (tokio-postgres knows
/// no verify-full), and those parameters.
fn split_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None, None);
    };
    let (mut mode, mut root) = (None, None);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|param| match param.split_once('=') {
            Some(("sslmode", value)) => {
                mode = Some(value.to_string());
                false
            }
            Some(("sslrootcert", value)) => {
                root = Some(value.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let url = match kept.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", kept.join("&")),
    };
    (url, mode, root)
}

impl Endpoint {
    /// `side` names the input in errors (`source`, `target`).
    pub fn new(side: &str, parts: &Parts) -> Result<Endpoint> {
        let (mut config, url_mode, url_root) = match &parts.url {
            Some(url) => {
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    bail!("{side}.url must start with postgresql:// (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)");
                }
                let (url, mode, root) = split_tls_params(url);
                let config: Config = url
                    .parse()
                    .map_err(|e| anyhow!("{side}.url is not a PostgreSQL connection URL: {e}"))?;
                (config, mode, root)
            }
            None => (Config::new(), None, None),
        };
        if let Some(host) = &parts.host {
            config.host(host);
        }
        if let Some(port) = parts.port {
            config.port(port);
        }
        if let Some(database) = &parts.database {
            config.dbname(database);
        }
        if let Some(user) = &parts.user {
            config.user(user);
        }
        if let Some(password) = &parts.password {
            config.password(password);
        }
        if config.get_hosts().is_empty() {
            bail!("{side}: no host: set {side}.host or {side}.url");
        }
        let Some(user) = config.get_user().map(str::to_string) else {
            bail!("{side}: no user: set {side}.user or put it in {side}.url");
        };
        let database = config.get_dbname().unwrap_or(&user).to_string();
        config.dbname(&database);
        let mode = parts.sslmode.clone().or(url_mode);
        let tls = Tls::parse(mode.as_deref().unwrap_or("prefer"))
            .with_context(|| format!("{side}.sslmode"))?;
        config.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            Tls::Require | Tls::VerifyFull => SslMode::Require,
        });
        config.application_name("stackmigrate");
        config.connect_timeout(std::time::Duration::from_secs(15));
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        Ok(Endpoint {
            label: format!("{user}@{host}:{port}/{database}"),
            config,
            tls,
            root_cert: parts.sslrootcert.clone().or(url_root),
        })
    }

    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// The environment that points `pg_dump` at this endpoint.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGDATABASE", self.database().to_string()),
            ("PGUSER", self.user().to_string()),
            (
                "PGSSLMODE",
                match self.tls {
                    Tls::Disable => "disable",
                    Tls::Prefer => "prefer",
                    Tls::Require => "require",
                    Tls::VerifyFull => "verify-full",
                }
                .to_string(),
            ),
        ];
        if let Some(tokio_postgres::config::Host::Tcp(host)) = self.config.get_hosts().first() {
            env.push(("PGHOST", host.clone()));
        }
        if let Some(port) = self.config.get_ports().first() {
            env.push(("PGPORT", port.to_string()));
        }
        if let Some(password) = self.config.get_password() {
            env.push(("PGPASSWORD", String::from_utf8_lossy(password).into_owned()));
        }
        if let Some(root) = &self.root_cert {
            env.push(("PGSSLROOTCERT", root.clone()));
        }
        env
    }

    /// A session set up so that both sides print values alike (the MD5 content hashes
    /// are over values' text): UTC, ISO dates, every float digit, hex bytea. Without
    /// JIT: each range's scans would be compiled anew, at a cost above what they gain.
    pub async fn connect(&self) -> Result<Client> {
        let client = match self.tls {
            Tls::Disable => {
                let (client, connection) = self
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(|e| self.explain(e))?;
                tokio::spawn(connection);
                client
            }
            tls => {
                let connector = tokio_postgres_rustls::MakeRustlsConnect::new(self.rustls(tls)?);
                let (client, connection) = self
                    .config
                    .connect(connector)
                    .await
                    .map_err(|e| self.explain(e))?;
                tokio::spawn(connection);
                client
            }
        };
        client
            .batch_execute(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
                 SET extra_float_digits = 3; SET bytea_output = 'hex'; SET search_path = pg_catalog; \
                 SET jit = off",
            )
            .await
            .with_context(|| format!("setting up the session on {}", self.label))?;
        Ok(client)
    }

    fn rustls(&self, tls: Tls) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?;
        if tls != Tls::VerifyFull {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            roots.add(cert).ok();
        }
        if let Some(path) = &self.root_cert {
            let pem = std::fs::read(path).with_context(|| format!("reading sslrootcert {path}"))?;
            for cert in rustls_pemfile_certs(&pem) {
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate in sslrootcert {path}"))?;
            }
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }

    /// What went wrong connecting, and what would fix it.
    fn explain(&self, error: tokio_postgres::Error) -> anyhow::Error {
        let label = &self.label;
        match error.code() {
            Some(code) if *code == SqlState::INVALID_PASSWORD => anyhow!(
                "password authentication failed for user {:?} at {label}: check the password (a secret input or the stack output holding the URL)",
                self.user()
            ),
            Some(code) if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => anyhow!(
                "{label} refused user {:?}: {error}",
                self.user()
            ),
            Some(code) if *code == SqlState::INVALID_CATALOG_NAME => anyhow!(
                "database {:?} does not exist at {label}: create it first (CREATE DATABASE), or name an existing one",
                self.database()
            ),
            _ => anyhow!("cannot connect to PostgreSQL at {label}: {error}"),
        }
    }
}

/// The certificates in a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// libpq's `require`: encrypted, the certificate not checked (RDS's CA is in no system
/// store); the handshake's signatures still are.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Who a database is, as its server says: the cluster's system identifier (or, where
/// the role may not read it, the postmaster's start time) and the database's OID.
pub async fn identity(client: &Client) -> Result<String> {
    let cluster = match client
        .query_one("SELECT system_identifier::text FROM pg_control_system()", &[])
        .await
    {
        Ok(row) => row.get::<_, String>(0),
        Err(_) => client
            .query_one("SELECT pg_postmaster_start_time()::text || '@' || COALESCE(inet_server_port()::text, '')", &[])
            .await?
            .get(0),
    };
    let database: String = client
        .query_one(
            "SELECT oid::text FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await?
        .get(0);
    Ok(format!("{cluster}/{database}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(parts: Parts) -> Result<Endpoint> {
        Endpoint::new("target", &parts)
    }

    #[test]
    fn a_url_and_its_parts_make_one_endpoint_named_without_its_password() {
        let from_url = endpoint(Parts {
            url: Some(
                "postgresql://app:s3cret@db.example:6543/docprocessing?sslmode=require".into(),
            ),
            ..Parts::default()
        })
        .unwrap();
        assert_eq!(from_url.label, "app@db.example:6543/docprocessing");
        assert_eq!(from_url.tls, Tls::Require);
        let overridden = endpoint(Parts {
            url: Some("postgresql://app:s3cret@db.example/docprocessing".into()),
            database: Some("other".into()),
            sslmode: Some("disable".into()),
            ..Parts::default()
        })
        .unwrap();
        assert_eq!(overridden.label, "app@db.example:5432/other");
        assert_eq!(overridden.tls, Tls::Disable);
        let parts = endpoint(Parts {
            host: Some("127.0.0.1".into()),
            user: Some("postgres".into()),
            ..Parts::default()
        })
        .unwrap();
        assert_eq!(parts.label, "postgres@127.0.0.1:5432/postgres");
        assert_eq!(parts.tls, Tls::Prefer);
    }

    #[test]
    fn bad_connections_say_what_is_missing_or_wrong() {
        let error = |parts| format!("{:#}", endpoint(parts).unwrap_err());
        assert!(error(Parts::default()).contains("no host: set target.host or target.url"));
        assert!(error(Parts {
            host: Some("h".into()),
            ..Parts::default()
        })
        .contains("no user"));
        assert!(error(Parts {
            url: Some("mysql://h/db".into()),
            ..Parts::default()
        })
        .contains("must start with postgresql://"));
        assert!(error(Parts {
            url: Some("postgresql://u@h/db?sslmode=verify-ca".into()),
            ..Parts::default()
        })
        .contains("verify-ca is not supported"));
    }
}
