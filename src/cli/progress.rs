//! A byte-count progress bar on stderr, shown only when stderr is a terminal and the input is
//! large enough to be worth one.

use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const MIN_BYTES: u64 = 256 << 20;

/// A bar sized to the bytes under `model` (hidden unless stderr is a TTY).
pub fn bar(model: &Path) -> ProgressBar {
    if !super::stderr_is_tty() {
        return ProgressBar::hidden();
    }
    let total: u64 = walkdir::WalkDir::new(model)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    if total < MIN_BYTES {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        pb.set_style(style);
    }
    pb
}
