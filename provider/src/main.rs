//! The plugin binary. The engine starts it, reads the port from its first line of
//! output, and talks gRPC to it. `--schema` prints the package schema instead.

use pulumi_gestalt_proto::pulumi::pulumirpc::resource_provider_server::ResourceProviderServer;
use stackmigrate::{registry, schema, server::Provider};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--schema") {
        print!("{}", schema::package_schema_text(&registry::all()));
        return Ok(());
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
