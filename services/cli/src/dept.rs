//! `xinqiao dept`: departments.

use clap::{Args, Subcommand};
use xinqiao_proto::v1 as pb;

use crate::client::{ClientArgs, explain};
use crate::{CliResult, output};

#[derive(Args)]
pub struct DeptArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: DeptCommand,
}

#[derive(Subcommand)]
enum DeptCommand {
    /// Register a department (admin).
    Register(Profile),
    /// Change a department's name, division code or contact (admin).
    Update(Profile),
    /// Refuse a department's certificates from now on (admin).
    Deactivate {
        code: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Accept a deactivated department again (admin).
    Reactivate { code: String },
    /// List departments.
    List {
        /// Include deactivated departments.
        #[arg(long)]
        all: bool,
    },
    /// Show one department.
    Show { code: String },
}

#[derive(Args)]
struct Profile {
    /// 统一社会信用代码 (18 characters).
    #[arg(long)]
    code: String,
    #[arg(long)]
    name: String,
    /// 行政区划代码 (6 digits).
    #[arg(long)]
    division: String,
    #[arg(long, default_value = "")]
    contact: String,
}

pub async fn run(args: DeptArgs) -> CliResult {
    let json = args.client.json;
    let mut client = args.client.directory().await?;
    match args.command {
        DeptCommand::Register(p) => {
            let request = pb::RegisterDepartmentRequest {
                code: p.code,
                name: p.name,
                division_code: p.division,
                contact: p.contact,
            };
            let d = client.register_department(request).await.map_err(explain)?.into_inner();
            output::departments(json, &[d]);
        }
        DeptCommand::Update(p) => {
            let request = pb::UpdateDepartmentRequest {
                code: p.code,
                name: p.name,
                division_code: p.division,
                contact: p.contact,
            };
            let d = client.update_department(request).await.map_err(explain)?.into_inner();
            output::departments(json, &[d]);
        }
        DeptCommand::Deactivate { code, reason } => {
            let d = client
                .deactivate_department(pb::DeactivateDepartmentRequest { code, reason })
                .await
                .map_err(explain)?;
            output::departments(json, &[d.into_inner()]);
        }
        DeptCommand::Reactivate { code } => {
            let d = client
                .reactivate_department(pb::ReactivateDepartmentRequest { code })
                .await
                .map_err(explain)?;
            output::departments(json, &[d.into_inner()]);
        }
        DeptCommand::Show { code } => {
            let d = client
                .get_department(pb::GetDepartmentRequest { code })
                .await
                .map_err(explain)?;
            output::departments(json, &[d.into_inner()]);
        }
        DeptCommand::List { all } => {
            let mut list = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = pb::ListDepartmentsRequest {
                    page_size: 500,
                    page_token,
                    include_inactive: all,
                };
                let page = client.list_departments(request).await.map_err(explain)?.into_inner();
                list.extend(page.departments);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::departments(json, &list);
        }
    }
    Ok(())
}
