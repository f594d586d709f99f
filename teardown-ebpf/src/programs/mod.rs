//! The hooks, one file per probe family. Each is a thin attribute fn that hands its
//! arguments to the work it does.

mod accept;
mod reset;
mod retransmit;
mod state;
mod time_wait;
