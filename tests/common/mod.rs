#![allow(dead_code)]
pub mod recorder;
