//! The web console (控制台): server-rendered pages for admins, departments and evaluators.
//!
//! The console is another edge, like the HTTP edge (`web`): it holds no rules of its own. Every
//! page and form calls the gRPC services in process, through the same layers as a call from the
//! network ([`InProcess`]: metrics, the audit trail, the status corrections), with a request
//! carrying the signed-in identity as a verified certificate would. So a department sees and does
//! in a browser exactly what the API lets it, and the trail records it the same way. A status
//! becomes a page: INVALID_ARGUMENT's field violations are shown beside their fields.
//!
//! Sign-in: a browser that presents a client certificate (on the hub's port, or on the console's
//! own) is that certificate's identity. Otherwise a person runs `xinqiao console --as …`, which
//! calls `ConsoleService.CreateSignInLink` with its certificate and prints a one-time link bound
//! to that identity (see `session`). Sessions are cookies (`__Host-`, Secure, HttpOnly,
//! SameSite=Strict) holding a secret whose hash is stored; every form carries a CSRF token
//! derived from the session secret.

mod api;
mod pages;
mod session;
mod views;

use std::sync::Arc;

use xinqiao_domain::identity::Principal;
use xinqiao_proto::v1 as pb;
use xinqiao_store::Store;

use crate::config::ConsoleSettings;

pub use api::{InProcess, InProcessService};
pub use session::{ConsoleApi, LinkSettings, keep_purging};

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub(crate) api: InProcess,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) session_ttl: chrono::Duration,
}

impl Console {
    pub fn new(api: InProcess, store: Arc<dyn Store>, settings: &ConsoleSettings) -> Console {
        let session_ttl = settings.session_ttl_secs.unwrap_or(8 * 3600).clamp(60, 7 * 24 * 3600);
        Console {
            api,
            store,
            session_ttl: chrono::Duration::seconds(i64::try_from(session_ttl).unwrap_or(8 * 3600)),
        }
    }
}

/// The console's routes, under `/console`.
pub fn routes(console: Console) -> axum::Router {
    pages::routes(console)
}

/// The signed-in person, as the pages see them.
#[derive(Clone, Debug)]
pub(crate) struct Visitor {
    pub principal: Principal,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Visitor {
    pub fn is_admin(&self) -> bool {
        matches!(self.principal, Principal::Admin(_))
    }

    pub fn is_evaluator(&self) -> bool {
        matches!(self.principal, Principal::Evaluator(_))
    }
}

/// The sign-in link's answer, for tests and the CLI.
pub fn link_url(link: &pb::SignInLink, dialled_host: &str) -> String {
    if link.console_url.is_empty() {
        format!("https://{dialled_host}:{}{}", link.console_port, link.path)
    } else {
        format!("{}{}", link.console_url.trim_end_matches('/'), link.path)
    }
}
