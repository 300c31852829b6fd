//! Integration tests of flashfleet-boards: one test binary, one module per subject.

mod built_in_table;
mod fixture;
mod inspection;
mod properties;
