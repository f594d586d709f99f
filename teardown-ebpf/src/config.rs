//! What user space decides before loading: this kernel's layout, the filters, the wakeup
//! threshold.

use teardown_common::Config;

/// Filled by user space before loading (see `teardown-user/src/capture/loader.rs`). Zero
/// here; read only through `config!`.
#[no_mangle]
pub static CONFIG: Config = unsafe { core::mem::zeroed() };

/// The bench's floor: every program returns at once, its first thing, so that what is left
/// is the cost of the hooks themselves. The verifier drops the rest as dead code.
#[inline(always)]
pub fn floor() -> bool {
    config!(floor) != 0
}
