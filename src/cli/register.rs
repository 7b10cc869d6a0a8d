use std::path::PathBuf;
use std::process::ExitCode;

/// `hallmark register`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files to register: `.pub`, `.wmkey`, `.fp`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Registry directory (default: $HALLMARK_REGISTRY, else ./keys).
    #[arg(long)]
    pub registry: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let dir = a.registry.unwrap_or_else(hallmark::registry::default_dir);
    let entries = hallmark::registry::register(&dir, &a.files)?;
    let mut out = std::io::stdout().lock();
    for e in entries {
        writeln!(out, "registered {:?} {} -> {}", e.kind, e.name, e.path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}
