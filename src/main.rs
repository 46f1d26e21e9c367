use clap::Parser;

/// mimalloc instead of the system allocator: a call through the gateway makes many small,
/// short-lived allocations (JSON values, header maps, buffers) across threads, and glibc's
/// malloc/free took about a fifth of the gateway's CPU. Only the binary chooses; the library
/// stays allocator-agnostic.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = countersign::cli::Cli::parse();
    // Before any HTTP client is built (the telemetry exporter builds its own).
    countersign::tls::install_provider();
    match countersign::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            // The same prefix as clap's own errors and the policy commands' findings.
            eprintln!("error: {}", countersign::cli::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
