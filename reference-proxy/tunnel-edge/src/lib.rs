//! Tunnel edge (being written).
