//! The WebSocket tunnel (being written).
