//! `xinqiao certs`: the development PKI.

use crate::out;
use std::path::PathBuf;

use clap::Subcommand;
use xinqiao_domain::identity::Principal;
use xinqiao_hub::pki;

use crate::CliResult;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a CA, a hub certificate for localhost/127.0.0.1, an admin certificate and
    /// certificates for the sample departments.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// More DNS names or IP addresses for the hub certificate.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a certificate from an existing CA for a department (--dept USCC) or an admin (--admin NAME).
    Issue {
        /// The directory holding ca.crt and ca.key; the new files are written there.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        dept: Option<String>,
        #[arg(long)]
        admin: Option<String>,
    },
}

pub fn run(command: CertsCommand) -> CliResult {
    match command {
        CertsCommand::Init { out, hosts } => {
            pki::init(&out, &hosts).map_err(|e| e.to_string())?;
            out!("created the development PKI in {}:", out.display());
            out!("  ca.crt, ca.key            platform CA (keep ca.key secret)");
            out!(
                "  server.crt, server.key    the hub (localhost, 127.0.0.1{})",
                hosts.iter().map(|h| format!(", {h}")).collect::<String>()
            );
            out!("  admin.crt, admin.key      the platform admin ({})", pki::DEV_ADMIN);
            for d in pki::SAMPLE_DEPARTMENTS {
                out!("  dept-{}.crt/.key  {}", d.code, d.name);
            }
            Ok(())
        }
        CertsCommand::Issue { dir, dept, admin } => {
            let principal = match (dept, admin) {
                (Some(code), _) => Principal::Department(code),
                (None, Some(name)) => Principal::Admin(name),
                (None, None) => return Err("give --dept USCC or --admin NAME".into()),
            };
            let files = pki::issue(&dir, &principal).map_err(|e| e.to_string())?;
            out!("issued {} for {}", files.cert.display(), principal.uri());
            out!("       {}", files.key.display());
            Ok(())
        }
    }
}
