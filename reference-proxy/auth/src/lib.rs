//! Sans-IO Postgres authentication (being written).
