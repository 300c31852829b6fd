//! Uploads over SCP (libssh2's `scp_send`) and `cat >`, and the upload faults.

use std::io::Write as _;
use std::time::{Duration, Instant};

use flashfleet_boards::test_image::TestImage;
use flashfleet_devsim::Faults;
use sha2::{Digest, Sha256};

use crate::support::{
    Login, blocking, connect, device, exec, fleet, image_for_board, run, scp_upload, upload,
};

fn sha256_hex(image: &TestImage) -> String {
    hex::encode(Sha256::digest(image.to_bytes()))
}

#[tokio::test]
async fn an_scp_upload_is_recorded_with_its_size_digest_and_metadata() {
    let fleet = fleet(vec![device()]).await;
    let image = image_for_board("24.10.0")
        .payload_len(3 * 1024 * 1024 + 17)
        .build();
    let digest = sha256_hex(&image);
    upload(&fleet, 0, "/tmp/openwrt-sysupgrade.bin", image.clone()).await;

    let uploaded = fleet
        .device(0)
        .uploaded("/tmp/openwrt-sysupgrade.bin")
        .expect("the file is there");
    assert_eq!(uploaded.size, image.len());
    assert_eq!(uploaded.sha256, digest);
    assert!(uploaded.metadata_present);
    assert!(uploaded.complete);
    // libssh2 quotes the path.
    assert_eq!(
        fleet.device(0).commands(),
        ["scp -t '/tmp/openwrt-sysupgrade.bin'"]
    );

    let answer = run(&fleet, 0, "sha256sum /tmp/openwrt-sysupgrade.bin").await;
    assert_eq!(
        answer.stdout,
        format!("{digest}  /tmp/openwrt-sysupgrade.bin\n")
    );
    let answer = run(&fleet, 0, "test -f /tmp/openwrt-sysupgrade.bin").await;
    assert_eq!(answer.exit_status, 0);
    // A file in /tmp takes memory.
    assert_eq!(
        fleet.device(0).mem_available_kib(),
        65536 - image.len() / 1024
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn paths_with_quotes_and_spaces_survive_libssh2_quoting() {
    let fleet = fleet(vec![device()]).await;
    let image = TestImage::builder()
        .payload_len(1000)
        .without_metadata()
        .build();
    upload(&fleet, 0, "/tmp/it's an image.bin", image.clone()).await;
    let uploaded = fleet
        .device(0)
        .uploaded("/tmp/it's an image.bin")
        .expect("the file is there");
    assert_eq!(uploaded.size, 1000);
    assert!(!uploaded.metadata_present);
    fleet.shutdown().await;
}

#[tokio::test]
async fn cat_uploads_store_the_stream_and_small_text() {
    let fleet = fleet(vec![device()]).await;
    let address = fleet.device(0).address();
    let credentials = fleet.credentials().clone();
    let image = image_for_board("24.10.0").build();
    let bytes = image.to_bytes();
    let status = blocking(move || {
        let session = connect(address, &credentials, Login::Key).expect("login works");
        let mut statuses = Vec::new();
        for (path, content) in [
            ("/tmp/image.bin", bytes),
            ("/etc/note", b"hello\n".to_vec()),
        ] {
            let mut channel = session.channel_session().expect("a channel");
            channel.exec(&format!("cat > {path}")).expect("exec");
            channel.write_all(&content).expect("write");
            channel.send_eof().expect("eof");
            channel.wait_eof().expect("eof back");
            channel.wait_close().expect("close");
            statuses.push(channel.exit_status().expect("status"));
        }
        statuses
    })
    .await;
    assert_eq!(status, [0, 0]);
    let uploaded = fleet.device(0).uploaded("/tmp/image.bin").expect("stored");
    assert_eq!(uploaded.sha256, sha256_hex(&image));
    assert!(uploaded.metadata_present);
    assert_eq!(
        fleet.device(0).file("/etc/note").as_deref(),
        Some("hello\n")
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_dropped_upload_cuts_the_connection_once_and_leaves_a_truncated_file() {
    let mut flaky = device();
    flaky.faults.drop_during_upload_after_bytes = Some(100_000);
    let fleet = fleet(vec![flaky]).await;
    let address = fleet.device(0).address();
    let credentials = fleet.credentials().clone();
    let image = image_for_board("24.10.0").payload_len(1024 * 1024).build();
    let first = image.clone();
    let failed = blocking(move || {
        let session = connect(address, &credentials, Login::Password).expect("login works");
        scp_upload(&session, "/tmp/image.bin", &first).err()
    })
    .await;
    assert!(failed.is_some(), "the first upload must fail");
    let partial = fleet
        .device(0)
        .uploaded("/tmp/image.bin")
        .expect("truncated file");
    assert_eq!(partial.size, 100_000);
    assert!(!partial.complete);
    assert!(!partial.metadata_present);
    assert_eq!(
        fleet.device(0).faults().drop_during_upload_after_bytes,
        None
    );

    upload(&fleet, 0, "/tmp/image.bin", image.clone()).await;
    let uploaded = fleet.device(0).uploaded("/tmp/image.bin").expect("stored");
    assert!(uploaded.complete);
    assert_eq!(uploaded.size, image.len());
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_slow_link_throttles_uploads_to_its_rate() {
    let mut slow = device();
    slow.faults.link_bytes_per_sec = Some(1024 * 1024);
    let fleet = fleet(vec![slow]).await;
    let image = TestImage::builder().payload_len(512 * 1024).build();
    let started = Instant::now();
    upload(&fleet, 0, "/tmp/image.bin", image).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    fleet.device(0).set_faults(Faults::default());
    let started = Instant::now();
    upload(
        &fleet,
        0,
        "/tmp/image.bin",
        TestImage::builder().payload_len(512 * 1024).build(),
    )
    .await;
    assert!(started.elapsed() < elapsed, "the throttle is gone");
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_interrupted_scp_stream_is_reported_as_an_error() {
    let fleet = fleet(vec![device()]).await;
    let address = fleet.device(0).address();
    let credentials = fleet.credentials().clone();
    let answer = blocking(move || {
        let session = connect(address, &credentials, Login::Password).expect("login works");
        let mut remote = session
            .scp_send(std::path::Path::new("/tmp/short.bin"), 0o644, 1000, None)
            .expect("scp starts");
        remote.write_all(&[7; 10]).expect("write");
        remote.send_eof().expect("eof");
        remote.wait_eof().expect("eof back");
        remote.wait_close().expect("close");
        let status = remote.exit_status().expect("status");
        (status, exec(&session, "test -f /tmp/short.bin").exit_status)
    })
    .await;
    assert_eq!(answer, (1, 0));
    let partial = fleet
        .device(0)
        .uploaded("/tmp/short.bin")
        .expect("truncated");
    assert_eq!((partial.size, partial.complete), (10, false));
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_trickling_link_keeps_moving_so_a_per_call_timeout_never_fires() {
    let delay = Duration::from_millis(150);
    let mut trickle = device();
    trickle.faults.upload_chunk_delay = Some(delay);
    let fleet = fleet(vec![trickle]).await;
    let address = fleet.device(0).address();
    let credentials = fleet.credentials().clone();
    // About eight 32 KiB chunks of body, then the SCP control messages.
    let image = image_for_board("24.10.0").payload_len(256 * 1024).build();
    let digest = sha256_hex(&image);
    let text = b"hello\n".repeat(10 * 1024);
    let (scp, cat, scp_took) = blocking(move || {
        let session = connect(address, &credentials, Login::Key).expect("login works");
        // Four chunk delays per blocking call: far less than the whole upload takes.
        session.set_timeout(600);
        let started = Instant::now();
        let scp = scp_upload(&session, "/tmp/image.bin", &image);
        let scp_took = started.elapsed();
        let cat = (|| {
            let mut channel = session.channel_session().map_err(|e| e.to_string())?;
            channel.exec("cat > /tmp/text").map_err(|e| e.to_string())?;
            channel.write_all(&text).map_err(|e| e.to_string())?;
            channel.send_eof().map_err(|e| e.to_string())?;
            channel.wait_eof().map_err(|e| e.to_string())?;
            channel.wait_close().map_err(|e| e.to_string())?;
            channel.exit_status().map_err(|e| e.to_string())
        })();
        (scp, cat, scp_took)
    })
    .await;
    assert_eq!(scp, Ok(()));
    assert_eq!(cat, Ok(0));
    // At least one delay per 32 KiB chunk of the body.
    assert!(scp_took >= delay * 8, "took {scp_took:?}");
    let uploaded = fleet.device(0).uploaded("/tmp/image.bin").expect("stored");
    assert_eq!(
        (uploaded.sha256.as_str(), uploaded.complete),
        (digest.as_str(), true)
    );
    assert_eq!(
        fleet.device(0).uploaded("/tmp/text").expect("stored").size,
        60 * 1024
    );
    fleet.shutdown().await;
}
