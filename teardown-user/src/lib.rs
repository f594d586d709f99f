pub mod capture;
pub mod error;
pub mod event;
pub mod filter;
pub mod reconstruct;
