//! The client: its calls and requests (`client`), the job lifecycle end to
//! end against the emulator (`lifecycle`), and real networks — stalls,
//! outages, proxies (`net`).

#[path = "../common/mod.rs"]
mod common;

mod client;
mod lifecycle;
mod net;
