//! Receiving files: the sink side of the legacy SCP protocol (`scp -t <path>`, what libssh2's
//! `scp_send` and Python's `scp` module speak) and `cat > <path>`.
//!
//! Bytes stream through SHA-256 and the fwtool [`ImageInspector`]; only small files (up to
//! [`TEXT_LIMIT`] bytes of UTF-8) are kept whole, so a 64 MiB image costs the simulator a few
//! hundred KiB at most.

use flashfleet_boards::ImageInspector;
use sha2::{Digest, Sha256};

use crate::device::{StoredUpload, UploadedFile};

/// Uploads up to this size that are valid UTF-8 are also kept as text files, so
/// `cat > /etc/openwisp/firmware_checksum` and `file()` work as on a device.
pub(crate) const TEXT_LIMIT: usize = 4096;

/// One file being received.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) path: String,
    hasher: Sha256,
    inspector: ImageInspector,
    received: u64,
    text: Option<Vec<u8>>,
}

impl Upload {
    pub(crate) fn new(path: String) -> Upload {
        Upload {
            path,
            hasher: Sha256::new(),
            inspector: ImageInspector::new(),
            received: 0,
            text: Some(Vec::new()),
        }
    }

    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.inspector.update(bytes);
        self.received += bytes.len() as u64;
        if let Some(text) = &mut self.text {
            if text.len() + bytes.len() <= TEXT_LIMIT {
                text.extend_from_slice(bytes);
            } else {
                self.text = None;
            }
        }
    }

    /// The summary to store, and the text content when the file is small text.
    pub(crate) fn finish(self, complete: bool) -> (String, StoredUpload, Option<String>) {
        let inspection = self.inspector.finish().map_err(|error| error.to_string());
        let (metadata_present, signature_present) = match &inspection {
            Ok(inspection) => (inspection.metadata.is_some(), inspection.signature_present),
            Err(_) => (false, false),
        };
        let file = UploadedFile {
            size: self.received,
            sha256: hex::encode(self.hasher.finalize()),
            metadata_present,
            signature_present,
            complete,
        };
        let text = self.text.and_then(|text| String::from_utf8(text).ok());
        (self.path, StoredUpload { file, inspection }, text)
    }
}

/// The SCP sink (`scp -t`): reads `C<mode> <size> <name>` headers and file bodies, answering
/// each step with a zero byte.
#[derive(Debug)]
pub(crate) struct ScpSink {
    target: String,
    state: ScpState,
}

#[derive(Debug)]
enum ScpState {
    /// Waiting for a control line (`C`, `T`, `D`, `E`); holds the bytes of the line so far.
    Control(Vec<u8>),
    /// Receiving a file body.
    Body { upload: Upload, remaining: u64 },
    /// The body is complete; waiting for the source's zero byte.
    BodyEnd,
    /// A protocol error was reported; everything else is ignored.
    Failed,
}

/// What the sink wants done after being fed.
#[derive(Debug, Default)]
pub(crate) struct ScpStep {
    /// Bytes to send back on the channel (acknowledgements or an error line).
    pub(crate) reply: Vec<u8>,
    /// A file whose body arrived completely.
    pub(crate) finished: Option<Upload>,
    /// A file that starts now (its previous content must be dropped).
    pub(crate) started: Option<String>,
    /// The exit status to end with after a protocol error.
    pub(crate) failed: bool,
}

/// Control lines longer than this are a protocol error.
const MAX_CONTROL_LINE: usize = 4096;

impl ScpSink {
    /// A sink writing to `target` (a file, or a directory the file names go into).
    pub(crate) fn new(target: String) -> ScpSink {
        ScpSink {
            target,
            state: ScpState::Control(Vec::new()),
        }
    }

    /// The upload under way, if a body is being received.
    pub(crate) fn current_upload(&self) -> Option<&Upload> {
        match &self.state {
            ScpState::Body { upload, .. } => Some(upload),
            _ => None,
        }
    }

    /// Takes the upload under way, leaving the sink failed (the connection is going away).
    pub(crate) fn abandon(&mut self) -> Option<Upload> {
        match std::mem::replace(&mut self.state, ScpState::Failed) {
            ScpState::Body { upload, .. } => Some(upload),
            _ => None,
        }
    }

    /// Whether the sink stopped in the middle of a file or after an error.
    pub(crate) fn is_incomplete(&self) -> bool {
        matches!(self.state, ScpState::Body { .. } | ScpState::Failed)
    }

    /// Feeds bytes received on the channel.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        is_directory: impl Fn(&str) -> bool,
    ) -> ScpStep {
        let mut step = ScpStep::default();
        while !bytes.is_empty() {
            match &mut self.state {
                ScpState::Failed => return step,
                ScpState::Control(line) => {
                    let Some(newline) = bytes.iter().position(|&byte| byte == b'\n') else {
                        line.extend_from_slice(bytes);
                        if line.len() > MAX_CONTROL_LINE {
                            self.fail(&mut step, "protocol error: control line too long");
                        }
                        return step;
                    };
                    line.extend_from_slice(&bytes[..newline]);
                    bytes = &bytes[newline + 1..];
                    let line = std::mem::take(line);
                    self.control(&line, &mut step, &is_directory);
                }
                ScpState::Body { upload, remaining } => {
                    let take = (*remaining).min(bytes.len() as u64) as usize;
                    upload.feed(&bytes[..take]);
                    *remaining -= take as u64;
                    bytes = &bytes[take..];
                    if *remaining == 0
                        && let ScpState::Body { upload, .. } =
                            std::mem::replace(&mut self.state, ScpState::BodyEnd)
                    {
                        step.finished = Some(upload);
                    }
                }
                ScpState::BodyEnd => {
                    if bytes[0] == 0 {
                        step.reply.push(0);
                        self.state = ScpState::Control(Vec::new());
                        bytes = &bytes[1..];
                    } else {
                        self.fail(&mut step, "protocol error: expected the end of the file");
                        return step;
                    }
                }
            }
        }
        step
    }

    fn control(&mut self, line: &[u8], step: &mut ScpStep, is_directory: &impl Fn(&str) -> bool) {
        let line = String::from_utf8_lossy(line);
        let mut kind = line.chars();
        match kind.next() {
            Some('C') => {
                let mut fields = line[1..].splitn(3, ' ');
                let (Some(mode), Some(size), Some(name)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    return self.fail(step, "protocol error: bad file header");
                };
                let (Ok(_), Ok(size)) = (u32::from_str_radix(mode, 8), size.parse::<u64>()) else {
                    return self.fail(step, "protocol error: bad file header");
                };
                if name.is_empty() || name.contains('/') || name == ".." {
                    return self.fail(step, &format!("error: unexpected filename: {name}"));
                }
                let path = if is_directory(&self.target) {
                    format!("{}/{name}", self.target.trim_end_matches('/'))
                } else {
                    self.target.clone()
                };
                step.started = Some(path.clone());
                let upload = Upload::new(path);
                step.reply.push(0);
                if size == 0 {
                    step.finished = Some(upload);
                    self.state = ScpState::BodyEnd;
                } else {
                    self.state = ScpState::Body {
                        upload,
                        remaining: size,
                    };
                }
            }
            // Times (`-p`), directories (`-r`, not simulated: files go into the target) and
            // their ends are acknowledged.
            Some('T' | 'D' | 'E') => {
                step.reply.push(0);
                self.state = ScpState::Control(Vec::new());
            }
            // A warning or error from the source: it gives up on this file.
            Some('\u{1}' | '\u{2}') => self.state = ScpState::Control(Vec::new()),
            _ => self.fail(step, "protocol error: unexpected control line"),
        }
    }

    fn fail(&mut self, step: &mut ScpStep, message: &str) {
        step.reply.push(1);
        step.reply
            .extend_from_slice(format!("scp: {message}\n").as_bytes());
        step.failed = true;
        self.state = ScpState::Failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_directory(_: &str) -> bool {
        false
    }

    #[test]
    fn a_file_arriving_in_pieces_is_acknowledged_at_each_step() {
        let mut sink = ScpSink::new("/tmp/image.bin".to_owned());
        let step = sink.feed(b"C0644 10 ima", no_directory);
        assert!(step.reply.is_empty());
        let step = sink.feed(b"ge.bin\n0123", no_directory);
        assert_eq!(step.reply, [0]);
        assert_eq!(step.started.as_deref(), Some("/tmp/image.bin"));
        assert!(sink.is_incomplete());
        assert_eq!(sink.current_upload().unwrap().received(), 4);
        let step = sink.feed(b"456789\0", no_directory);
        assert_eq!(step.reply, [0]);
        let (path, stored, text) = step.finished.unwrap().finish(true);
        assert_eq!(path, "/tmp/image.bin");
        assert_eq!(stored.file.size, 10);
        assert_eq!(
            stored.file.sha256,
            "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882"
        );
        assert_eq!(text.as_deref(), Some("0123456789"));
        assert!(!sink.is_incomplete());
    }

    #[test]
    fn a_directory_target_receives_the_file_under_its_name() {
        let mut sink = ScpSink::new("/tmp/".to_owned());
        let step = sink.feed(b"T1 0 1 0\nC0600 0 x.bin\n", |path| path == "/tmp/");
        assert_eq!(step.reply, [0, 0]);
        assert_eq!(step.finished.unwrap().path, "/tmp/x.bin");
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let mut sink = ScpSink::new("/tmp/x".to_owned());
        let step = sink.feed(b"hello\n", no_directory);
        assert!(step.failed);
        assert_eq!(step.reply[0], 1);
        let mut sink = ScpSink::new("/tmp/x".to_owned());
        assert!(sink.feed(b"C0644 ten x\n", no_directory).failed);
        let mut sink = ScpSink::new("/tmp/x".to_owned());
        assert!(sink.feed(b"C0644 1 ../x\n", no_directory).failed);
    }
}
