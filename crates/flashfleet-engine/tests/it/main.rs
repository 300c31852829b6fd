//! The engine against a real database (both backends) and a scripted upgrader.

mod crash_points;
mod devsim;
mod facts;
mod hooks;
mod mass;
mod running;
mod safety;
mod support;
mod world;
