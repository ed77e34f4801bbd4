//! Connecting to a hub as a department or the admin, and reporting what it answers.

use crate::out;
use std::path::PathBuf;

use clap::Args;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::access_service_client::AccessServiceClient;
use xinqiao_proto::v1::audit_service_client::AuditServiceClient;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;

use crate::CliResult;
use crate::output;

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The hub's address.
    #[arg(long, env = "XINQIAO_HUB", default_value = "https://localhost:7443", global = true)]
    pub hub: String,
    /// A development PKI directory (from `certs init` or `serve --dev`), used with --as.
    #[arg(long, env = "XINQIAO_PKI", default_value = "xinqiao-data/pki", global = true)]
    pub pki: PathBuf,
    /// Act as `admin`, `evaluator` (评价方) or the department with this 统一社会信用代码, using its
    /// certificate in --pki.
    #[arg(long = "as", env = "XINQIAO_AS", global = true)]
    pub as_: Option<String>,
    /// The platform CA certificate [default: PKI/ca.crt].
    #[arg(long, env = "XINQIAO_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// This client's certificate (overrides --as).
    #[arg(long, env = "XINQIAO_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// This client's private key.
    #[arg(long, env = "XINQIAO_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    fn identity(&self) -> CliResult<ClientIdentity> {
        let ca = self
            .ca
            .clone()
            .unwrap_or_else(|| xinqiao_hub::pki::ca_cert_path(&self.pki));
        let (cert, key) = match (&self.cert, &self.key, &self.as_) {
            (Some(cert), Some(key), _) => (cert.clone(), key.clone()),
            (_, _, Some(who)) if who == "admin" => {
                let f = xinqiao_hub::pki::admin_files(&self.pki);
                (f.cert, f.key)
            }
            (_, _, Some(who)) if who == "evaluator" => {
                let f = xinqiao_hub::pki::evaluator_files(&self.pki);
                (f.cert, f.key)
            }
            (_, _, Some(code)) => {
                let f = xinqiao_hub::pki::department_files(&self.pki, code);
                (f.cert, f.key)
            }
            _ => {
                return Err(
                    "say who you are: --as admin|evaluator|<USCC> (with --pki DIR), or --cert FILE --key FILE".into(),
                );
            }
        };
        Ok(ClientIdentity { ca, cert, key })
    }

    pub async fn channel(&self) -> CliResult<Channel> {
        connect(&self.hub, &self.identity()?).await.map_err(|e| e.to_string())
    }

    pub async fn directory(&self) -> CliResult<DirectoryServiceClient<Channel>> {
        Ok(DirectoryServiceClient::new(self.channel().await?))
    }

    pub async fn access(&self) -> CliResult<AccessServiceClient<Channel>> {
        Ok(AccessServiceClient::new(self.channel().await?))
    }

    pub async fn audit(&self) -> CliResult<AuditServiceClient<Channel>> {
        Ok(AuditServiceClient::new(self.channel().await?))
    }
}

/// A refused call, as a person reads it: the code, the reason, and each invalid field.
pub fn explain(status: tonic::Status) -> String {
    let mut lines = Vec::new();
    if let Some(bad) = status.get_details_bad_request() {
        lines.extend(
            bad.field_violations
                .into_iter()
                .map(|v| format!("  - {}: {}", v.field, v.description)),
        );
    }
    if let Some(failure) = status.get_details_precondition_failure() {
        lines.extend(
            failure
                .violations
                .into_iter()
                .map(|v| format!("  - {}: {}", v.subject, v.description)),
        );
    }
    if lines.is_empty() {
        format!("{:?}: {}", status.code(), status.message())
    } else {
        format!("{:?}:\n{}", status.code(), lines.join("\n"))
    }
}

pub async fn whoami(args: ClientArgs) -> CliResult {
    let mut client = args.directory().await?;
    let me = client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    match me.identity {
        Some(pb::who_am_i_response::Identity::Admin(name)) => {
            output::emit(args.json, serde_json::json!({ "admin": name }), || {
                out!("platform admin {name}")
            })
        }
        Some(pb::who_am_i_response::Identity::Evaluator(name)) => {
            output::emit(args.json, serde_json::json!({ "evaluator": name }), || {
                out!("evaluator (评价方) {name}")
            })
        }
        Some(pb::who_am_i_response::Identity::Department(d)) => {
            output::emit(args.json, output::department_json(&d), || {
                out!("department {} {}", d.code, d.name)
            })
        }
        None => return Err("the hub named no identity".into()),
    }
    Ok(())
}
