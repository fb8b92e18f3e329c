//! Unit tests of the codec. They live inside the crate so the example lists can match the
//! message enums exhaustively: adding a message variant without a round-trip example fails to
//! compile here.

mod bad_input;
mod examples;
mod properties;
mod roundtrip;
mod strategies;
