//! The engine against a real database (both backends) and a scripted upgrader.

mod hooks;
mod mass;
mod running;
mod support;
