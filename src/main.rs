use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = countersign::cli::Cli::parse();
    match countersign::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
