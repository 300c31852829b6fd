//! Progress of long CLI work (device imports, image inspections) on standard error: a
//! progress bar on a terminal, plain lines otherwise (about ten per run, and one per item for
//! short runs), so logs of scripted runs stay readable.

use std::io::{IsTerminal as _, Write};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports how far a run of `total` items has come.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    unit: &'static str,
}

impl Progress {
    /// Starts reporting a run of `total` items called `unit` ("rows", "files").
    pub fn new(total: u64, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::new(total).with_style(style)
        });
        Self {
            bar,
            total,
            done: 0,
            unit,
        }
    }

    /// Marks one more item as started, named `item`.
    pub fn advance(&mut self, item: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_message(item.to_owned());
                bar.inc(1);
            }
            None => {
                let step = (self.total / 10).max(1);
                if self.done.is_multiple_of(step) || self.done == self.total || self.total <= 10 {
                    // Progress is best effort: a closed standard error must not stop the work.
                    let _ = writeln!(
                        std::io::stderr(),
                        "[{}/{} {}] {item}",
                        self.done,
                        self.total,
                        self.unit
                    );
                }
            }
        }
    }

    /// Writes `line` to `output` without tearing the progress bar.
    pub fn print(&self, output: &mut impl Write, line: &str) -> std::io::Result<()> {
        match &self.bar {
            Some(bar) => bar.suspend(|| writeln!(output, "{line}")),
            None => writeln!(output, "{line}"),
        }
    }

    /// Removes the progress bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
