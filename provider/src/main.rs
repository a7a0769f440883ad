//! The plugin binary. The engine starts it, reads the port from its first line of
//! output, and talks gRPC to it. `--schema`, `--version` and `--help` answer people.

use pulumi_gestalt_proto::pulumi::pulumirpc::resource_provider_server::ResourceProviderServer;
use stackmigrate::{registry, schema, server::Provider};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const HELP: &str = "\
pulumi-resource-stackmigrate: the stackmigrate Pulumi provider plugin.

The Pulumi engine starts this program; users do not run it. To use the provider, declare
stackmigrate resources in a Pulumi program and run `pulumi preview` (the dry run),
`pulumi up` (copy and verify) and `pulumi destroy` (roll back).

Usage:
  pulumi-resource-stackmigrate [ENGINE_ADDRESS]   serve the provider over gRPC; print the port
  pulumi-resource-stackmigrate --schema           print the package schema (JSON)
  pulumi-resource-stackmigrate --version          print the version
  pulumi-resource-stackmigrate --help             print this help
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--schema") => {
            print!("{}", schema::package_schema_text(&registry::all()));
            return Ok(());
        }
        Some("--version" | "-V") => {
            println!("pulumi-resource-stackmigrate {}", schema::VERSION);
            return Ok(());
        }
        Some("--help" | "-h") => {
            print!("{HELP}");
            return Ok(());
        }
        _ => {}
    }
    // The engine passes its own address as the first argument that is not a flag.
    let engine = args.iter().find(|a| !a.starts_with('-')).cloned();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    tonic::transport::Server::builder()
        .add_service(
            ResourceProviderServer::new(Provider::new(engine))
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
