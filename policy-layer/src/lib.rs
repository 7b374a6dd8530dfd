//! placeholder

pub mod auth;
