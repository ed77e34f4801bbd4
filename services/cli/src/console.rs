//! `xinqiao console`: a one-time sign-in link to the hub's web console, for this client's own
//! identity (its certificate authenticates the request, as every call's does).

use crate::out;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::console_service_client::ConsoleServiceClient;

use crate::CliResult;
use crate::client::{ClientArgs, explain};
use crate::output;

pub async fn run(args: ClientArgs) -> CliResult {
    let mut client = ConsoleServiceClient::new(args.channel().await?);
    let link = client
        .create_sign_in_link(pb::CreateSignInLinkRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let url = xinqiao_hub::console::link_url(&link, &dialled_host(&args.hub));
    let expires = link
        .expires_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    output::emit(
        args.json,
        serde_json::json!({ "url": url, "identity": link.identity, "expires_at": expires }),
        || {
            out!("{url}");
            out!(
                "(sign-in link for {}: opens once, until {expires}; keep it to yourself)",
                link.identity
            );
        },
    );
    Ok(())
}

/// The host part of the hub's address as this client dialled it (`https://HOST:PORT`).
fn dialled_host(hub: &str) -> String {
    let rest = hub.split_once("://").map_or(hub, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return format!("[{}]", v6.split(']').next().unwrap_or(v6));
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialled_host_is_read_from_the_hub_address() {
        assert_eq!(dialled_host("https://localhost:7443"), "localhost");
        assert_eq!(dialled_host("https://127.0.0.1:7443/"), "127.0.0.1");
        assert_eq!(dialled_host("hub.example.gov.cn"), "hub.example.gov.cn");
        assert_eq!(dialled_host("https://[::1]:7443"), "[::1]");
    }
}
