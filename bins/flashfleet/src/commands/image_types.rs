//! `flashfleet image-types`: the image map (built-in OpenWrt table and custom images).

use std::io::Write;

use flashfleet_boards::{ImageEntry, ImageMap};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::config::Config;

/// The options of `image-types`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON, `{image_type: {"label": ..., "boards": [...]}}` in map order, instead of a
    /// table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the image map of `config`.
pub fn run(config: &Config, args: &Args, output: &mut impl Write) -> anyhow::Result<()> {
    let image_map = config.image_map()?;
    if args.json {
        serde_json::to_writer_pretty(&mut *output, &MapJson(&image_map))?;
        writeln!(output)?;
        return Ok(());
    }
    let type_width = column_width(&image_map, "IMAGE TYPE", ImageEntry::image_type);
    let label_width = column_width(&image_map, "LABEL", ImageEntry::label);
    writeln!(
        output,
        "{:type_width$}  {:label_width$}  BOARDS",
        "IMAGE TYPE", "LABEL"
    )?;
    for entry in image_map.entries() {
        writeln!(
            output,
            "{:type_width$}  {:label_width$}  {}",
            entry.image_type(),
            entry.label(),
            entry.boards().join(", ")
        )?;
    }
    Ok(())
}

fn column_width(image_map: &ImageMap, title: &str, column: fn(&ImageEntry) -> &str) -> usize {
    image_map
        .entries()
        .map(|entry| column(entry).chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or_default()
}

/// The map as a JSON object whose keys keep the map's order.
struct MapJson<'a>(&'a ImageMap);

#[derive(serde::Serialize)]
struct EntryJson<'a> {
    label: &'a str,
    boards: &'a [String],
}

impl Serialize for MapJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for entry in self.0.entries() {
            map.serialize_entry(
                entry.image_type(),
                &EntryJson {
                    label: entry.label(),
                    boards: entry.boards(),
                },
            )?;
        }
        map.end()
    }
}
