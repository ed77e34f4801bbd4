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
    /// Issue a certificate from an existing CA for a department (--dept USCC), an admin (--admin
    /// NAME), an evaluator (--evaluator NAME, 评价方: reads the scorecard only) or a hub's own
    /// identity for federation (--hub DIVISION, 行政区划代码: presented to its peer hubs).
    Issue {
        /// The directory holding ca.crt and ca.key; the new files are written there.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, group = "who", required_unless_present_any = ["admin", "evaluator", "hub"])]
        dept: Option<String>,
        #[arg(long, group = "who")]
        admin: Option<String>,
        #[arg(long, group = "who")]
        evaluator: Option<String>,
        #[arg(long, group = "who")]
        hub: Option<String>,
    },
    /// Revoke a certificate: add it to the CA's revocation list DIR/crl.pem. A hub serving this
    /// PKI (or configured with tls.crl pointing at the list) refuses it within seconds.
    Revoke {
        /// The directory holding ca.crt, ca.key and crl.pem.
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to revoke (PEM or DER), issued by that CA.
        #[arg(long)]
        cert: PathBuf,
        /// Why (RFC 5280 reason code); left out of the list when not given.
        #[arg(long, value_enum)]
        reason: Option<Reason>,
    },
}

/// RFC 5280 reason codes, by their RFC names. Certificate hold is left out: a revocation here is
/// final.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Reason {
    #[value(name = "unspecified")]
    Unspecified,
    #[value(name = "keyCompromise")]
    KeyCompromise,
    #[value(name = "cACompromise", alias = "caCompromise")]
    CaCompromise,
    #[value(name = "affiliationChanged")]
    AffiliationChanged,
    #[value(name = "superseded")]
    Superseded,
    #[value(name = "cessationOfOperation")]
    CessationOfOperation,
    #[value(name = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

impl From<Reason> for pki::RevocationReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Unspecified => pki::RevocationReason::Unspecified,
            Reason::KeyCompromise => pki::RevocationReason::KeyCompromise,
            Reason::CaCompromise => pki::RevocationReason::CaCompromise,
            Reason::AffiliationChanged => pki::RevocationReason::AffiliationChanged,
            Reason::Superseded => pki::RevocationReason::Superseded,
            Reason::CessationOfOperation => pki::RevocationReason::CessationOfOperation,
            Reason::PrivilegeWithdrawn => pki::RevocationReason::PrivilegeWithdrawn,
        }
    }
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
            out!(
                "  evaluator.crt/.key        an evaluator (评价方, {}): reads the scorecard only",
                pki::DEV_EVALUATOR
            );
            for d in pki::SAMPLE_DEPARTMENTS {
                out!("  dept-{}.crt/.key  {}", d.code, d.name);
            }
            Ok(())
        }
        CertsCommand::Issue {
            dir,
            dept,
            admin,
            evaluator,
            hub,
        } => {
            let principal = match (dept, admin, evaluator, hub) {
                (Some(code), ..) => Principal::Department(code),
                (None, Some(name), ..) => Principal::Admin(name),
                (None, None, Some(name), _) => Principal::Evaluator(name),
                (None, None, None, Some(division)) => Principal::Hub(division),
                (None, None, None, None) => {
                    return Err("give --dept USCC, --admin NAME, --evaluator NAME or --hub DIVISION".into());
                }
            };
            let files = pki::issue(&dir, &principal).map_err(|e| e.to_string())?;
            out!("issued {} for {}", files.cert.display(), principal.uri());
            out!("       {}", files.key.display());
            Ok(())
        }
        CertsCommand::Revoke { dir, cert, reason } => {
            let revocation = pki::revoke(&dir, &cert, reason.map(Into::into)).map_err(|e| e.to_string())?;
            if revocation.already_revoked {
                out!(
                    "{} (serial {}) is already revoked; {} left as it was",
                    cert.display(),
                    revocation.serial,
                    revocation.crl.display()
                );
            } else {
                out!(
                    "revoked {} (serial {}): {} is now CRL number {}, listing {} certificate(s)",
                    cert.display(),
                    revocation.serial,
                    revocation.crl.display(),
                    revocation.crl_number,
                    revocation.listed
                );
                out!(
                    "a hub using this list refuses the certificate within seconds (one started before the list existed: restart it)"
                );
            }
            Ok(())
        }
    }
}
