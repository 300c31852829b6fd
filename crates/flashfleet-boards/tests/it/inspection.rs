//! Inspecting images from files, readers and async streams.

use std::fs::File;
use std::io::{BufWriter, Cursor};

use flashfleet_boards::test_image::TestImage;
use flashfleet_boards::{
    BoardsError, ImageInspector, inspect_async, inspect_file, inspect_read, inspect_seekable,
};
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1024 * 1024;

#[test]
fn multi_mib_image_is_written_and_inspected_from_a_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("image.bin");
    let image = TestImage::builder()
        .payload_len(8 * MIB + 3)
        .signature(b"signature".to_vec())
        .build();
    let written = image
        .write_to(BufWriter::new(File::create(&path).unwrap()))
        .unwrap();
    assert_eq!(written, image.len());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), image.len());

    let inspection = inspect_file(&path).unwrap();
    assert_eq!(inspection.image_len, image.len());
    assert!(inspection.signature_present);
    let metadata = inspection.metadata.unwrap();
    assert_eq!(
        metadata.raw_json().as_bytes(),
        image.metadata_json().unwrap()
    );
}

#[test]
fn plain_reader_and_seekable_reader_agree() {
    let bytes = TestImage::builder().payload_len(200_000).build().to_bytes();
    let from_read = inspect_read(bytes.as_slice()).unwrap();
    let from_seek = inspect_seekable(Cursor::new(&bytes)).unwrap();
    assert_eq!(from_read, from_seek);
    assert!(from_read.metadata.is_some());
}

#[test]
fn missing_file_is_an_io_error() {
    let directory = tempfile::tempdir().unwrap();
    let error = inspect_file(directory.path().join("missing.bin")).unwrap_err();
    assert!(matches!(error, BoardsError::Io { .. }));
    assert_eq!(error.to_string(), "could not read the image");
}

#[test]
fn upload_is_inspected_while_it_is_stored() {
    let image = TestImage::builder().payload_len(2 * MIB).build();
    let mut stored = Vec::new();
    let mut inspector = ImageInspector::new();
    for part in image.to_bytes().chunks(8191) {
        stored.extend_from_slice(part);
        inspector.update(part);
    }
    let inspection = inspector.finish().unwrap();
    assert_eq!(inspection.image_len, stored.len() as u64);
    assert!(inspection.metadata.is_some());
}

#[tokio::test]
async fn async_stream_is_inspected_as_it_arrives() {
    let image = TestImage::builder()
        .payload_len(3 * MIB)
        .signature(vec![0xAA; 64])
        .build();
    let bytes = image.to_bytes();
    let (mut sender, receiver) = tokio::io::duplex(16 * 1024);
    let upload = tokio::spawn(async move {
        for part in bytes.chunks(10_000) {
            sender.write_all(part).await.unwrap();
        }
        sender.shutdown().await.unwrap();
    });
    let inspection = inspect_async(receiver).await.unwrap();
    upload.await.unwrap();
    assert_eq!(inspection.image_len, image.len());
    assert!(inspection.signature_present);
    assert_eq!(
        inspection.metadata.unwrap().raw_json().as_bytes(),
        image.metadata_json().unwrap()
    );
}
