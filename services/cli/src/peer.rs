//! `xinqiao peer`: the peer hubs of federation (平台级联), admin only.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::federation_service_client::FederationServiceClient;

use crate::client::{ClientArgs, explain};
use crate::output::{emit, table};
use crate::{CliResult, out};

#[derive(Args)]
pub struct PeerArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: PeerCommand,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Register a peer hub: its division code, address, CA bundle, relation and what is exposed
    /// to it. Its CA is trusted from now on, for that hub's identity only.
    Add {
        /// The peer's 行政区划代码 (6 digits), as its certificate names it.
        #[arg(long)]
        division: String,
        #[arg(long)]
        name: String,
        /// Where it serves: https://host:port
        #[arg(long)]
        address: String,
        /// The CA certificate(s) its certificates are issued by (PEM file); trusted for that
        /// hub's identity only.
        #[arg(long)]
        peer_ca: PathBuf,
        #[arg(long, value_enum)]
        relation: RelationArg,
        /// Expose this hub's published catalogue to it (a parent only; 目录汇聚).
        #[arg(long)]
        expose_catalogue: bool,
        /// Expose only entries of these classification prefixes (repeatable).
        #[arg(long = "classification")]
        classifications: Vec<String>,
    },
    /// List the registered peer hubs.
    List,
    /// Show one peer hub.
    Show { division: String },
    /// Forget a peer hub; for a child, the entries aggregated through it are withdrawn.
    Remove { division: String },
    /// Pull a child's catalogue changes now.
    Sync { division: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum RelationArg {
    Parent,
    Child,
    Peer,
}

impl From<RelationArg> for pb::PeerRelation {
    fn from(r: RelationArg) -> Self {
        match r {
            RelationArg::Parent => pb::PeerRelation::Parent,
            RelationArg::Child => pb::PeerRelation::Child,
            RelationArg::Peer => pb::PeerRelation::Peer,
        }
    }
}

fn relation_name(value: i32) -> &'static str {
    match pb::PeerRelation::try_from(value) {
        Ok(pb::PeerRelation::Parent) => "parent",
        Ok(pb::PeerRelation::Child) => "child",
        Ok(pb::PeerRelation::Peer) => "peer",
        _ => "unknown",
    }
}

fn exposure_text(p: &pb::Peer) -> String {
    match &p.exposure {
        Some(e) if e.catalogue && e.classifications.is_empty() => "catalogue".into(),
        Some(e) if e.catalogue => format!("catalogue ({})", e.classifications.join(", ")),
        _ => "nothing".into(),
    }
}

fn peer_json(p: &pb::Peer) -> Value {
    json!({
        "division_code": p.division_code,
        "name": p.name,
        "address": p.address,
        "relation": relation_name(p.relation),
        "exposure": {
            "catalogue": p.exposure.as_ref().is_some_and(|e| e.catalogue),
            "classifications": p.exposure.as_ref().map(|e| e.classifications.clone()).unwrap_or_default(),
        },
        "catalogue_cursor": p.catalogue_cursor,
        "added_by": p.added_by,
        "ca_pem": p.ca_pem,
    })
}

fn peers(as_json: bool, list: &[pb::Peer]) {
    emit(as_json, Value::Array(list.iter().map(peer_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|p| {
                vec![
                    p.division_code.clone(),
                    p.name.clone(),
                    relation_name(p.relation).into(),
                    p.address.clone(),
                    exposure_text(p),
                    p.catalogue_cursor.to_string(),
                ]
            })
            .collect();
        table(
            &[
                "division (行政区划代码)",
                "name",
                "relation",
                "address",
                "exposed",
                "cursor",
            ],
            &rows,
        );
    });
}

pub async fn run(args: PeerArgs) -> CliResult {
    let json = args.client.json;
    let mut client = FederationServiceClient::new(args.client.channel().await?);
    match args.command {
        PeerCommand::Add {
            division,
            name,
            address,
            peer_ca,
            relation,
            expose_catalogue,
            classifications,
        } => {
            let ca_pem = std::fs::read_to_string(&peer_ca).map_err(|e| format!("{}: {e}", peer_ca.display()))?;
            let request = pb::AddPeerRequest {
                division_code: division,
                name,
                address,
                ca_pem,
                relation: pb::PeerRelation::from(relation).into(),
                exposure: Some(pb::PeerExposure {
                    catalogue: expose_catalogue,
                    classifications,
                }),
            };
            let peer = client.add_peer(request).await.map_err(explain)?.into_inner();
            peers(json, &[peer]);
        }
        PeerCommand::List => {
            let list = client
                .list_peers(pb::ListPeersRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            peers(json, &list.peers);
        }
        PeerCommand::Show { division } => {
            let peer = client
                .get_peer(pb::GetPeerRequest {
                    division_code: division,
                })
                .await
                .map_err(explain)?
                .into_inner();
            peers(json, &[peer]);
        }
        PeerCommand::Remove { division } => {
            let removed = client
                .remove_peer(pb::RemovePeerRequest {
                    division_code: division.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            emit(
                json,
                json!({ "removed": division, "withdrawn_entries": removed.withdrawn_entries }),
                || {
                    out!(
                        "removed peer hub {division}; {} aggregated entries withdrawn",
                        removed.withdrawn_entries
                    )
                },
            );
        }
        PeerCommand::Sync { division } => {
            let synced = client
                .sync_peer(pb::SyncPeerRequest {
                    division_code: division.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            emit(
                json,
                json!({ "division_code": division, "applied": synced.applied, "catalogue_cursor": synced.catalogue_cursor }),
                || {
                    out!(
                        "pulled from {division}: {} changes applied, cursor {}",
                        synced.applied,
                        synced.catalogue_cursor
                    )
                },
            );
        }
    }
    Ok(())
}
