//! pks: placeholder.
#![no_std]
#![no_main]

vmunit::main!(main);

fn main(_args: &[&str]) {}
