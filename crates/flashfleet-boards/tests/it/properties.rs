//! Property tests: no input makes inspection panic, and well-formed images round-trip.

use flashfleet_boards::test_image::TestImage;
use flashfleet_boards::{ImageInspector, inspect_bytes};
use proptest::prelude::*;

fn inspect_streaming(bytes: &[u8], slice_len: usize) -> String {
    let mut inspector = ImageInspector::new();
    for slice in bytes.chunks(slice_len.max(1)) {
        inspector.update(slice);
    }
    format!("{:?}", inspector.finish())
}

fn device_name() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8},[a-z0-9_-]{1,16}"
}

fn well_formed_image() -> impl Strategy<Value = (TestImage, Vec<String>, Option<Vec<u8>>)> {
    (
        0_u64..4096,
        any::<u64>(),
        prop::collection::vec(device_name(), 1..4),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..1024)),
    )
        .prop_map(|(payload_len, seed, devices, signature)| {
            let mut builder = TestImage::builder()
                .payload_len(payload_len)
                .seed(seed)
                .supported_devices(devices.clone());
            if let Some(signature) = &signature {
                builder = builder.signature(signature.clone());
            }
            (builder.build(), devices, signature)
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), slice_len in 1_usize..600) {
        let whole = format!("{:?}", inspect_bytes(&bytes));
        prop_assert_eq!(whole, inspect_streaming(&bytes, slice_len));
    }

    #[test]
    fn random_tails_after_a_magic_never_panic(
        prefix in prop::collection::vec(any::<u8>(), 0..512),
        crc in any::<u32>(),
        chunk_type in any::<u8>(),
        size in any::<u32>(),
    ) {
        // A trailer with the right magic but arbitrary other fields.
        let mut bytes = prefix;
        bytes.extend_from_slice(b"FWx0");
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes.extend_from_slice(&[chunk_type, 0, 0, 0]);
        bytes.extend_from_slice(&size.to_be_bytes());
        let _ = inspect_bytes(&bytes);
    }

    #[test]
    fn well_formed_images_round_trip(
        (image, devices, signature) in well_formed_image(),
        slice_len in 1_usize..5000,
    ) {
        let bytes = image.to_bytes();
        let inspection = inspect_bytes(&bytes).unwrap();
        prop_assert_eq!(inspection.image_len, bytes.len() as u64);
        prop_assert_eq!(inspection.signature_present, signature.is_some());
        let metadata = inspection.metadata.clone().unwrap();
        prop_assert_eq!(metadata.supported_devices.clone().unwrap(), devices);
        prop_assert_eq!(metadata.raw_json().as_bytes(), image.metadata_json().unwrap());
        prop_assert_eq!(format!("{:?}", Ok::<_, ()>(inspection)), inspect_streaming(&bytes, slice_len));
    }

    #[test]
    fn truncated_images_never_panic((image, _devices, _signature) in well_formed_image(), cut in any::<prop::sample::Index>()) {
        let bytes = image.to_bytes();
        let truncated = &bytes[..cut.index(bytes.len() + 1)];
        let whole = format!("{:?}", inspect_bytes(truncated));
        prop_assert_eq!(whole, inspect_streaming(truncated, 333));
    }

    #[test]
    fn a_flipped_bit_before_the_last_trailer_hides_the_metadata(
        (image, _devices, _signature) in well_formed_image(),
        position in any::<prop::sample::Index>(),
        bit in 0_u8..8,
    ) {
        let mut bytes = image.to_bytes();
        let covered = bytes.len() - 16;
        let position = position.index(covered);
        bytes[position] ^= 1 << bit;
        // CRC-32 catches every single-bit error, and the last trailer's CRC covers the byte.
        let inspection = inspect_bytes(&bytes).unwrap();
        prop_assert_eq!(inspection.metadata, None);
        prop_assert!(inspection.chunks.is_empty());
    }

    #[test]
    fn a_flipped_bit_in_the_last_trailer_never_panics(
        (image, _devices, _signature) in well_formed_image(),
        position in 0_usize..16,
        bit in 0_u8..8,
    ) {
        let mut bytes = image.to_bytes();
        let at = bytes.len() - 16 + position;
        bytes[at] ^= 1 << bit;
        let whole = format!("{:?}", inspect_bytes(&bytes));
        prop_assert_eq!(whole, inspect_streaming(&bytes, 4096));
    }
}
